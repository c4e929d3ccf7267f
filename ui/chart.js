// A line chart over a rolling time window, drawn by hand in SVG: no library,
// nothing fetched, nothing inline (the page's CSP forbids it). One or two
// series; the second may have its own scale (right axis), e.g. CPU % and MB.

const NS = 'http://www.w3.org/2000/svg';
const W = 600;
const H = 180;
const PAD = { top: 10, right: 44, bottom: 18, left: 44 };

/** The smallest of 1, 2, 2.5, 5 × 10ⁿ at or above `v` (a round axis top). */
export function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function el(name, attrs = {}, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text != null) e.textContent = text;
  return e;
}

function fmt(v) {
  if (v >= 1000) return `${Math.round(v / 100) / 10}k`;
  if (v >= 10 || v === 0) return String(Math.round(v));
  return String(Math.round(v * 10) / 10);
}

export class Chart {
  /**
   * @param {Element} figure  holds an <svg> and a [data-legend] element
   * @param {{key: string, label: string, unit: string, axis?: 'right'}[]} series
   */
  constructor(figure, series, windowMs) {
    this.figure = figure;
    this.svg = figure.querySelector('svg');
    this.legend = figure.querySelector('[data-legend]');
    this.series = series;
    this.windowMs = windowMs;
    this.legend.replaceChildren(...series.map((s, i) => {
      const span = document.createElement('span');
      span.className = `key s${i}`;
      span.append(s.label, document.createElement('b'));
      return span;
    }));
  }

  /** Redraws from `points` ({t: ms, d: sample data}), oldest first. */
  draw(points) {
    const end = points.length ? points[points.length - 1].t : Date.now();
    const start = end - this.windowMs;
    const shown = points.filter((p) => p.t >= start);
    const x = (t) => PAD.left + ((t - start) / this.windowMs) * (W - PAD.left - PAD.right);
    const axes = { left: 0, right: 0 };
    for (const s of this.series) {
      const side = s.axis ?? 'left';
      for (const p of shown) axes[side] = Math.max(axes[side], Number(p.d[s.key]) || 0);
    }
    const tops = { left: niceCeil(axes.left), right: niceCeil(axes.right) };
    const y = (v, side) => H - PAD.bottom - (Math.max(0, v) / tops[side]) * (H - PAD.top - PAD.bottom);
    const parts = [];
    for (const f of [0, 0.5, 1]) {
      const gy = H - PAD.bottom - f * (H - PAD.top - PAD.bottom);
      parts.push(el('line', { class: 'grid', x1: PAD.left, x2: W - PAD.right, y1: gy, y2: gy }));
      parts.push(el('text', { class: 'axis', x: PAD.left - 6, y: gy + 4, 'text-anchor': 'end' }, fmt(tops.left * f)));
      if (this.series.some((s) => s.axis === 'right')) {
        parts.push(el('text', { class: 'axis', x: W - PAD.right + 6, y: gy + 4 }, fmt(tops.right * f)));
      }
    }
    parts.push(el('text', { class: 'axis', x: PAD.left, y: H - 3 }, '−60 s'));
    parts.push(el('text', { class: 'axis', x: W - PAD.right, y: H - 3, 'text-anchor': 'end' }, 'now'));
    this.series.forEach((s, i) => {
      const side = s.axis ?? 'left';
      const d = shown.map((p, j) => `${j ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(Number(p.d[s.key]) || 0, side).toFixed(1)}`).join('');
      if (d) parts.push(el('path', { class: `line s${i}`, d, 'data-series': s.key }));
      const last = shown.length ? Number(shown[shown.length - 1].d[s.key]) : null;
      const b = this.legend.children[i]?.querySelector('b');
      if (b) b.textContent = last == null || Number.isNaN(last) ? '' : `${fmt(last)}${s.unit}`;
    });
    this.svg.replaceChildren(...parts);
    // For tests and the curious: how many samples the chart holds, and the newest.
    this.figure.dataset.points = String(shown.length);
    this.figure.dataset.last = String(end);
  }
}
