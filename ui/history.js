// Looking back, from the audit trail (Postgres): the analytics panel and the
// "as of" control. Nothing here runs until asked: the panel loads when it is
// opened, a past snapshot when one is asked for. Charts are SVG built with
// DOM calls (no library, no CDN, nothing inline: the page's CSP allows only
// the gateway's own files). docs/ui.md, "Analytics and as of".

const SVG = 'http://www.w3.org/2000/svg';

function el(tag, attrs = {}, text) {
  const e = document.createElementNS(tag.startsWith('svg:') ? SVG : 'http://www.w3.org/1999/xhtml', tag.replace('svg:', ''));
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text != null) e.textContent = text;
  return e;
}

/** A bar chart of `[{label, value, title}]` as an SVG element. */
export function barChart(bars, { height = 90, label = '' } = {}) {
  const width = 300;
  const top = 10;
  const base = height - 14;
  const max = Math.max(1, ...bars.map((b) => b.value));
  const step = width / Math.max(1, bars.length);
  const svg = el('svg:svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label, class: 'chart' });
  svg.append(el('svg:line', { x1: 0, y1: base, x2: width, y2: base, class: 'axis' }));
  bars.forEach((b, i) => {
    const h = ((base - top) * b.value) / max;
    const rect = el('svg:rect', {
      x: (i * step + step * 0.1).toFixed(2), y: (base - h).toFixed(2),
      width: Math.max(0.5, step * 0.8).toFixed(2), height: h.toFixed(2), class: 'bar', 'data-value': b.value,
    });
    rect.append(el('svg:title', {}, b.title ?? `${b.label}: ${b.value}`));
    svg.append(rect);
  });
  const first = bars[0]?.label ?? '';
  const last = bars[bars.length - 1]?.label ?? '';
  svg.append(el('svg:text', { x: 0, y: height - 2, class: 'tick' }, first));
  svg.append(el('svg:text', { x: width, y: height - 2, class: 'tick end' }, last));
  svg.append(el('svg:text', { x: width, y: top, class: 'tick end' }, `max ${max}`));
  return svg;
}

const hourLabel = (iso) => `${iso.slice(5, 10)} ${iso.slice(11, 16)}`;
const dayLabel = (iso) => iso.slice(0, 10);
const num = (x, digits = 2) => (x == null ? '—' : Number(x).toFixed(digits));
const pct = (x) => (x == null ? '—' : `${(x * 100).toFixed(1)}%`);

export class History {
  /**
   * `persona`; `query(params)`: the `?token=` query string; `onPast(msg)`:
   * show a past snapshot (`{offset, data}`); `onLive()`: back to live.
   */
  constructor({ persona, query, onPast, onLive }) {
    this.persona = persona;
    this.query = query;
    this.onPast = onPast;
    this.onLive = onLive;
    const $ = (id) => document.getElementById(id);
    this.panel = $('analytics');
    this.body = $('analytics-body');
    this.status = $('analytics-status');
    this.range = $('analytics-range');
    this.asofInput = $('asof-input');
    this.asofShow = $('asof-show');
    this.asofLive = $('asof-live');
    this.asofStatus = $('asof-status');
    this.loaded = false;
    this.panel.addEventListener('toggle', () => {
      if (this.panel.open && !this.loaded) this.load();
    });
    this.range.addEventListener('change', () => this.load());
    this.asofShow.addEventListener('click', () => this.showPast());
    this.asofLive.addEventListener('click', () => this.backToLive());
  }

  async get(path, params) {
    const res = await fetch(`${path}${this.query(params)}`, { headers: { Accept: 'application/json' } });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) {
      const e = new Error(body?.error?.message || `HTTP ${res.status}`);
      e.code = body?.error?.code;
      throw e;
    }
    return body;
  }

  async load() {
    this.loaded = true;
    const days = this.range.value === '30d';
    const bucket = days ? 'day' : 'hour';
    const until = new Date();
    const since = new Date(until.getTime() - (days ? 30 : 1) * 86400000);
    const span = { since: since.toISOString(), until: until.toISOString() };
    const p = encodeURIComponent(this.persona);
    this.status.textContent = 'Loading…';
    this.panel.dataset.state = 'loading';
    try {
      const [summary, events, posts, kills, er] = await Promise.all([
        this.get(`/api/analytics/${p}/summary`, span),
        ...['events', 'posts', 'kills'].map((metric) => this.get(`/api/analytics/${p}/histogram`, { metric, bucket, ...span })),
        this.get(`/api/analytics/${p}/histogram`, { metric: 'er', ...span }),
      ]);
      this.draw(summary, { events, posts, kills, er }, days ? dayLabel : hourLabel);
      this.status.textContent = `${span.since.slice(0, 16)}Z → ${span.until.slice(0, 16)}Z (UTC)`;
      this.panel.dataset.state = 'loaded';
    } catch (e) {
      this.body.replaceChildren();
      this.status.textContent = e.code === 'audit_unavailable'
        ? 'Analytics need the audit database, which this gateway does not have.'
        : `Analytics unavailable: ${e.message}`;
      this.panel.dataset.state = 'error';
    }
  }

  draw(s, charts, label) {
    const kr = s.kill_rate || {};
    const ttk = s.minutes_to_kill || {};
    const figures = [
      ['Events', s.events?.total ?? 0],
      ['Variants posted', s.variants_posted ?? 0],
      ['Kill rate', kr.rate == null ? '—' : `${pct(kr.rate)} (95%: ${pct(kr.interval?.[0])}–${pct(kr.interval?.[1])})`],
      ['Mean ER', s.mean_er == null ? '—' : pct(s.mean_er)],
      ['Minutes to kill', ttk.count ? `mean ${num(ttk.mean, 1)}, median ${num(ttk.median, 1)}` : '—'],
    ];
    const dl = el('dl', { class: 'figures', id: 'analytics-figures' });
    for (const [k, v] of figures) {
      const div = el('div');
      div.append(el('dt', {}, k), el('dd', {}, String(v)));
      dl.append(div);
    }
    const figure = (id, title, svg) => {
      const f = el('figure', { class: 'chart-box', id });
      f.append(el('figcaption', {}, title), svg);
      return f;
    };
    const time = (h) => h.buckets.map((b) => ({ label: label(b.start), value: b.count, title: `${b.start}: ${b.count}` }));
    const er = charts.er.buckets.map((b) => ({
      label: b.upper == null ? `≥${pct(b.lower)}` : pct(b.lower), value: b.count,
      title: `${pct(b.lower)}–${b.upper == null ? '' : pct(b.upper)}: ${b.count} variants`,
    }));
    this.body.replaceChildren(
      dl,
      figure('chart-events', 'Events', barChart(time(charts.events), { label: 'Events per bucket' })),
      figure('chart-posts', 'Variants posted', barChart(time(charts.posts), { label: 'Posts per bucket' })),
      figure('chart-kills', 'Kills', barChart(time(charts.kills), { label: 'Kills per bucket' })),
      figure('chart-er', 'Latest ER per variant', barChart(er, { label: 'Variants per ER bucket' })),
    );
  }

  async showPast() {
    const raw = this.asofInput.value; // "YYYY-MM-DDTHH:MM[:SS]", local time
    const at = raw ? new Date(raw) : null;
    if (!at || Number.isNaN(at.getTime())) {
      this.asofStatus.textContent = 'Pick a date and time first.';
      return;
    }
    this.asofStatus.textContent = 'Loading…';
    try {
      const body = await this.get(`/api/snapshot/${encodeURIComponent(this.persona)}`, { at: at.toISOString() });
      document.body.classList.add('asof');
      this.asofLive.hidden = false;
      this.asofStatus.textContent = `Showing ${at.toLocaleString()} (from the audit); live updates paused.`;
      this.onPast(body);
    } catch (e) {
      this.asofStatus.textContent = e.code === 'unknown_persona'
        ? 'The audit has no events of this persona.'
        : `Could not load that moment: ${e.message}`;
    }
  }

  backToLive() {
    document.body.classList.remove('asof');
    this.asofLive.hidden = true;
    this.asofStatus.textContent = '';
    this.onLive();
  }
}
