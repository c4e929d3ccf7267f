// Formatting for people, and the sparkline geometry. Pure functions only.

const MINUS = '\u2212';
const DASH = '\u2014';

/** 0.0523 -> "5.2%" (null -> "—"). */
export function pct(x, digits = 1) {
  if (x == null || !Number.isFinite(x)) return DASH;
  return `${(x * 100).toFixed(digits)}%`;
}

/** 0.083 -> "+8.3%", -0.2 -> "−20.0%" (a relative change). */
export function signedPct(x, digits = 1) {
  if (x == null || !Number.isFinite(x)) return DASH;
  const s = (Math.abs(x) * 100).toFixed(digits);
  if (Number(s) === 0) return `${s}%`;
  return `${x > 0 ? '+' : MINUS}${s}%`;
}

const grouped = new Intl.NumberFormat('en-US');
const compact = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 });

/** 12345 -> "12,345"; 1234567 -> "1.2M". */
export function count(n) {
  if (n == null || !Number.isFinite(n)) return DASH;
  return n >= 1e6 ? compact.format(n) : grouped.format(n);
}

/** How long ago, like the REST API's `time_since_post`: "40s", "12m", "2h 05m", "1d 1h". */
export function ago(ms) {
  const s = Math.floor(Math.max(0, ms) / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

/** 32.5 (minutes) -> "32.5 min"; 95 -> "1h 35m". */
export function minutes(m) {
  if (m == null || !Number.isFinite(m)) return DASH;
  if (m < 60) return `${m < 10 ? m.toFixed(1) : Math.round(m)} min`;
  const h = Math.floor(m / 60);
  return `${h}h ${String(Math.round(m - h * 60)).padStart(2, '0')}m`;
}

/** "24h", "90m" from milliseconds. */
export function windowLabel(ms) {
  if (!ms) return '';
  if (ms % 3600000 === 0) return `${ms / 3600000} h`;
  if (ms % 60000 === 0) return `${ms / 60000} min`;
  return `${Math.round(ms / 1000)} s`;
}

/** Local wall-clock time of an event: "14:03:07". */
export function clock(ms) {
  const d = new Date(ms);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((x) => String(x).padStart(2, '0')).join(':');
}

/** First `n` characters on one line, with an ellipsis. */
export function excerpt(text, n = 80) {
  const t = String(text ?? '').replace(/\s+/g, ' ').trim();
  return t.length > n ? `${t.slice(0, n - 1)}\u2026` : t;
}

/**
 * SVG path data for a sparkline of `values` (null = gap) in a w×h box,
 * scaled 0..top. Returns { line, area, y(v) }.
 */
export function sparkPath(values, w, h, top) {
  const n = values.length;
  const pad = 2;
  const y = (v) => (h - pad - (Math.min(v, top) / top) * (h - 2 * pad)).toFixed(1);
  const x = (i) => (n <= 1 ? w : (i / (n - 1)) * w).toFixed(1);
  let line = '';
  let area = '';
  let runStart = -1;
  let prev = false;
  for (let i = 0; i < n; i++) {
    const v = values[i];
    if (v == null) {
      if (prev) area += `L${x(i - 1)},${h}L${x(runStart)},${h}Z`;
      prev = false;
      continue;
    }
    if (!prev) {
      line += `M${x(i)},${y(v)}`;
      area += `M${x(i)},${y(v)}`;
      runStart = i;
    } else {
      line += `L${x(i)},${y(v)}`;
      area += `L${x(i)},${y(v)}`;
    }
    prev = true;
  }
  if (prev) area += `L${x(n - 1)},${h}L${x(runStart)},${h}Z`;
  return { line, area, y };
}
