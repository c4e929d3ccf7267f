// The live variants table: sortable, windowed (only the rows in and near
// view are in the DOM, so a frame costs the same with 20 variants or 1,000:
// a plain 1,000-row table spent ~130 ms per frame in style and layout under
// 1,000 updates/s; windowed, frames stay near 16 ms), and updated in place.

import { ago, count, excerpt, minutes, pct, signedPct, sparkPath } from './format.js';

const SVG = 'http://www.w3.org/2000/svg';
const SPARK_W = 80;
const SPARK_H = 26;
/** A live sort column re-sorts at most this often (rows do not jump around). */
const RESORT_MS = 1000;
/** Rows drawn above and below the visible ones. */
const OVERSCAN = 8;
/** Row height before one has been measured; style.css fixes it at 56px. */
const ROW_H = 56;
const COLUMNS = 9;
const VERDICTS = {
  over_performing: 'Above prediction',
  under_performing: 'Below prediction',
  as_predicted: 'As predicted',
  insufficient_data: 'Too early to tell',
};
const NUMERIC = new Set(['predicted_er', 'current_er', 'performance_vs_prediction',
  'view_count', 'interaction_count', 'posted_at', 'er_15m']);
/** Sort keys whose order changes with every performance update. */
const LIVE_KEYS = new Set(['current_er', 'performance_vs_prediction', 'view_count',
  'interaction_count', 'er_15m']);

export function h(tag, cls, text) {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (text != null) el.textContent = text;
  return el;
}

function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

/** Sets a cached text (no DOM read, no write when unchanged). */
function put(row, key, node, text) {
  if (row.last[key] === text) return;
  row.last[key] = text;
  node.textContent = text;
}

function putClass(row, key, node, cls) {
  if (row.last[key] === cls) return;
  row.last[key] = cls;
  node.className = cls;
}

export class Table {
  /** `schedule` asks the view for an animation frame. */
  constructor(model, schedule) {
    this.m = model;
    this.schedule = schedule;
    this.el = {
      table: document.getElementById('variants'),
      wrap: document.querySelector('.table-wrap'),
      tbody: document.querySelector('#variants tbody'),
      heads: [...document.querySelectorAll('#variants thead th[data-key]')],
      empty: document.getElementById('variants-empty'),
      count: document.getElementById('variants-count'),
    };
    /** variant_id -> row (DOM nodes kept while the variant exists). */
    this.rows = new Map();
    /** Rows now in the DOM. */
    this.attached = new Map();
    /** variant ids in sort order. */
    this.order = [];
    this.ordered = new Set();
    this.rowH = ROW_H;
    this.measured = false;
    this.windowDirty = false;
    this.orderDirty = false;
    this.full = false;
    this.dirty = new Set();
    this.sort = { key: 'posted_at', dir: 'descending' };
    this.lastSort = 0;
    this.sortTimer = 0;
    this.spacerTop = this.spacer();
    this.spacerBottom = this.spacer();
    this.el.tbody.append(this.spacerTop, this.spacerBottom);
    const rewindow = () => {
      this.windowDirty = true;
      this.schedule();
    };
    this.el.wrap.addEventListener('scroll', rewindow, { passive: true });
    addEventListener('resize', () => {
      this.measured = false;
      rewindow();
    });
    for (const th of this.el.heads) {
      th.querySelector('button')?.addEventListener('click', () => this.sortBy(th.dataset.key));
    }
    this.paintSortHeaders();
  }

  /** A new snapshot: every row may have changed. */
  all() {
    this.full = true;
    this.orderDirty = true;
  }

  /** One variant changed; `structural` = added or its status changed. */
  mark(id, structural) {
    if (!id) return;
    this.dirty.add(id);
    if (structural || !this.ordered.has(id) || this.sort.key === 'status') this.orderDirty = true;
    else if (LIVE_KEYS.has(this.sort.key)) this.resortSoon();
  }

  resortSoon() {
    const wait = this.lastSort + RESORT_MS - performance.now();
    if (wait <= 0) {
      this.orderDirty = true;
      return;
    }
    if (!this.sortTimer) {
      this.sortTimer = setTimeout(() => {
        this.sortTimer = 0;
        this.orderDirty = true;
        this.schedule();
      }, wait);
    }
  }

  /** Called once per frame by the view. */
  draw(now, minute) {
    if (this.full) {
      this.full = false;
      this.dirty.clear();
      for (const id of this.rows.keys()) {
        if (!this.m.variants.has(id)) this.rows.delete(id);
      }
      for (const [id, row] of this.attached) {
        const v = this.m.variants.get(id);
        if (v) this.fillRow(row, v, now, minute);
      }
    } else if (this.dirty.size) {
      for (const id of this.dirty) {
        const row = this.attached.get(id);
        const v = this.m.variants.get(id);
        if (row && v) this.fillRow(row, v, now, minute);
      }
      this.dirty.clear();
    }
    if (this.orderDirty) this.sortRows();
    if (this.windowDirty) this.drawWindow(now, minute);
  }

  /** Every second: ages; when a minute `rolled`, the sparklines move on. */
  tick(now, minute, rolled) {
    for (const [id, row] of this.attached) {
      const v = this.m.variants.get(id);
      if (!v) continue;
      this.fillAge(row, v, now);
      if (rolled) this.fillSpark(row, v, minute);
    }
  }

  spacer() {
    const tr = h('tr', 'spacer');
    tr.setAttribute('aria-hidden', 'true');
    const td = h('td');
    td.colSpan = COLUMNS;
    tr.append(td);
    return tr;
  }

  /** The rows in view (plus OVERSCAN), in sort order, between two spacers. */
  drawWindow(now, minute) {
    this.windowDirty = false;
    const n = this.order.length;
    const head = this.el.table.tHead.offsetHeight;
    const top = Math.max(0, this.el.wrap.scrollTop - head);
    // The box may still grow (it has a max-height), so plan for a full screen.
    const height = Math.max(this.el.wrap.clientHeight, innerHeight);
    const first = Math.max(0, Math.floor(top / this.rowH) - OVERSCAN);
    const last = Math.min(n, Math.ceil((top + height) / this.rowH) + OVERSCAN);
    const want = this.order.slice(first, last);
    const keep = new Set(want);
    for (const [id, row] of this.attached) {
      if (!keep.has(id)) {
        row.tr.remove();
        this.attached.delete(id);
      }
    }
    const tbody = this.el.tbody;
    let cursor = this.spacerTop.nextSibling;
    for (let i = 0; i < want.length; i++) {
      const id = want[i];
      const v = this.m.variants.get(id);
      let row = this.rows.get(id);
      if (!row) {
        row = this.makeRow(v);
        this.rows.set(id, row);
      }
      if (!this.attached.has(id)) {
        this.fillRow(row, v, now, minute);
        this.attached.set(id, row);
      }
      const index = String(first + i + 2); // the header row is 1
      if (row.last.index !== index) {
        row.last.index = index;
        row.tr.setAttribute('aria-rowindex', index);
      }
      if (row.tr === cursor) cursor = cursor.nextSibling;
      else tbody.insertBefore(row.tr, cursor);
    }
    this.spacerTop.firstChild.style.height = `${first * this.rowH}px`;
    this.spacerBottom.firstChild.style.height = `${(n - last) * this.rowH}px`;
    this.spacerTop.hidden = first === 0;
    this.spacerBottom.hidden = last >= n;
    if (!this.measured && want.length) {
      const measured = this.attached.get(want[0]).tr.getBoundingClientRect().height;
      this.measured = true;
      if (measured > 0 && Math.abs(measured - this.rowH) > 0.5) {
        this.rowH = measured;
        this.windowDirty = true;
        this.schedule();
      }
    }
  }

  makeRow(v) {
    const tr = h('tr');
    tr.dataset.variantId = v.variant_id;
    const head = h('th', 'variant');
    head.scope = 'row';
    const content = h('span', 'content');
    const meta = h('span', 'meta');
    const id = h('span', 'vid', v.variant_id);
    const pattern = h('span', 'pattern');
    meta.append(id, pattern);
    head.append(content, meta);

    const pred = h('td', 'num');
    pred.dataset.col = 'predicted';
    const actual = h('td', 'num');
    actual.dataset.col = 'actual';
    const er = h('span', 'er');
    const ci = h('span', 'ci');
    ci.title = '95% interval (Wilson)';
    actual.append(er, ci);
    const perf = h('td', 'num');
    perf.dataset.col = 'performance';
    const delta = h('span', 'delta');
    const verdict = h('span', 'verdict');
    perf.append(delta, verdict);
    const trend = h('td', 'trend');
    trend.dataset.col = 'trend';
    const spark = svg('svg', {
      viewBox: `0 0 ${SPARK_W} ${SPARK_H}`, width: SPARK_W, height: SPARK_H,
      class: 'spark', role: 'img', preserveAspectRatio: 'none',
    });
    const sTitle = svg('title', {});
    const area = svg('path', { class: 'spark-area' });
    const line = svg('path', { class: 'spark-line' });
    const goal = svg('line', { class: 'spark-goal', x1: 0, x2: SPARK_W });
    const dot = svg('circle', { class: 'spark-dot', r: 2 });
    spark.append(sTitle, area, goal, line, dot);
    trend.append(spark);
    const views = h('td', 'num');
    views.dataset.col = 'views';
    const inter = h('td', 'num');
    inter.dataset.col = 'interactions';
    const posted = h('td', 'num age');
    posted.dataset.col = 'posted';
    const statusCell = h('td');
    statusCell.dataset.col = 'status';
    const status = h('span', 'badge');
    statusCell.append(status);
    tr.append(head, pred, actual, perf, trend, views, inter, posted, statusCell);
    return {
      tr, content, pattern, pred, er, ci, delta, verdict, sTitle, area, line, goal, dot,
      views, inter, posted, status, last: {}, sparkMinute: -1, sparkKey: '',
    };
  }

  fillRow(r, v, now, minute) {
    const text = excerpt(v.content, 90);
    if (r.last.content !== text) {
      r.content.title = v.content;
    }
    put(r, 'content', r.content, text || '(no text)');
    put(r, 'pattern', r.pattern, v.pattern_used || '');
    put(r, 'pred', r.pred, pct(v.predicted_er));
    put(r, 'er', r.er, pct(v.current_er, 2));
    const iv = v.er_interval;
    put(r, 'ci', r.ci, iv ? `${pct(iv[0])}\u2013${pct(iv[1])}` : '');
    // Without views there is no rate to compare yet.
    const p = v.view_count > 0 ? v.performance_vs_prediction : null;
    const sign = p == null || Math.abs(p) < 0.0005 ? 'flat' : p > 0 ? 'up' : 'down';
    const strong = v.verdict === 'over_performing' || v.verdict === 'under_performing';
    putClass(r, 'deltaClass', r.delta, `delta ${sign}${strong ? ' strong' : ''}`);
    put(r, 'delta', r.delta, signedPct(p));
    put(r, 'verdict', r.verdict, VERDICTS[v.verdict] || '');
    put(r, 'views', r.views, count(v.view_count));
    put(r, 'inter', r.inter, count(v.interaction_count));
    this.fillAge(r, v, now);
    const killed = v.status === 'killed';
    putClass(r, 'rowClass', r.tr, killed ? 'killed' : '');
    putClass(r, 'statusClass', r.status, `badge ${killed ? 'badge-killed' : 'badge-active'}`);
    put(r, 'status', r.status, killed ? 'Killed' : 'Active');
    if (killed && v.kill) {
      const why = `Killed${v.kill.reason ? ` (${v.kill.reason})` : ''}` +
        `${v.kill.minutes != null ? ` after ${minutes(v.kill.minutes)}` : ''}`;
      if (r.status.title !== why) r.status.title = why;
    }
    this.fillSpark(r, v, minute);
  }

  fillAge(r, v, now) {
    put(r, 'age', r.posted, v.posted_at ? ago(now - v.posted_at) : '\u2014');
  }

  fillSpark(r, v, minute) {
    const values = this.m.series(v, minute);
    const key = `${minute}|${v.predicted_er}|${values.join(',')}`;
    if (key === r.sparkKey) return;
    r.sparkKey = key;
    let top = v.predicted_er || 0;
    let last = -1;
    for (let i = 0; i < values.length; i++) {
      if (values[i] != null) {
        if (values[i] > top) top = values[i];
        last = i;
      }
    }
    top = top > 0 ? top * 1.15 : 0.01;
    const { line, area, y } = sparkPath(values, SPARK_W, SPARK_H, top);
    r.line.setAttribute('d', line || 'M0,0');
    r.area.setAttribute('d', area || 'M0,0');
    const gy = y(v.predicted_er || 0);
    r.goal.setAttribute('y1', gy);
    r.goal.setAttribute('y2', gy);
    if (last >= 0) {
      r.dot.setAttribute('cx', ((last / 59) * SPARK_W).toFixed(1));
      r.dot.setAttribute('cy', y(values[last]));
      r.dot.removeAttribute('visibility');
    } else {
      r.dot.setAttribute('visibility', 'hidden');
    }
    const points = values.filter((x) => x != null).length;
    r.sTitle.textContent = points
      ? `ER per minute, last 60 minutes (${points} with views; latest ${pct(values[last], 2)}); dashed: predicted ${pct(v.predicted_er)}`
      : 'No views in the last 60 minutes';
  }

  sortBy(key) {
    if (this.sort.key === key) {
      this.sort.dir = this.sort.dir === 'ascending' ? 'descending' : 'ascending';
    } else {
      this.sort = { key, dir: NUMERIC.has(key) ? 'descending' : 'ascending' };
    }
    this.paintSortHeaders();
    this.orderDirty = true;
    this.schedule();
  }

  paintSortHeaders() {
    for (const th of this.el.heads) {
      th.setAttribute('aria-sort', th.dataset.key === this.sort.key ? this.sort.dir : 'none');
    }
  }

  compare() {
    const { key, dir } = this.sort;
    const sign = dir === 'ascending' ? 1 : -1;
    const num = NUMERIC.has(key);
    return (a, b) => {
      let c;
      if (num) {
        const x = a[key];
        const y = b[key];
        // Missing values go last in both directions.
        if (x == null || y == null) c = (x == null) - (y == null);
        else c = sign * (x - y);
      } else {
        c = sign * String(a[key] ?? '').localeCompare(String(b[key] ?? ''));
      }
      return c || (b.posted_at ?? 0) - (a.posted_at ?? 0) || (a.variant_id < b.variant_id ? -1 : 1);
    };
  }

  /** Sorts the variants; drawWindow then puts the visible rows in that order. */
  sortRows() {
    this.orderDirty = false;
    this.windowDirty = true;
    this.lastSort = performance.now();
    const list = [...this.m.variants.values()].sort(this.compare());
    this.order = list.map((v) => v.variant_id);
    this.ordered = new Set(this.order);
    const n = list.length;
    this.el.table.setAttribute('aria-rowcount', String(n + 1));
    this.el.empty.hidden = n > 0;
    let active = 0;
    for (const v of list) if (v.status !== 'killed') active += 1;
    const more = this.m.truncated ? ' (newest shown)' : '';
    this.el.count.textContent = n ? `${count(active)} active${n > active ? `, ${n - active} recently killed` : ''}${more}` : '';
  }
}
