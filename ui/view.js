// Draws the model. Changes are only marked when they happen; the DOM is
// touched once per animation frame, and only where a value changed, so the
// page keeps up with thousands of events per second and 1,000 rows.

import { ago, clock, count, excerpt, minutes, pct, signedPct, sparkPath, windowLabel } from './format.js';

const SVG = 'http://www.w3.org/2000/svg';
const SPARK_W = 96;
const SPARK_H = 26;
/** A live sort column re-sorts at most this often (rows do not jump around). */
const RESORT_MS = 1000;
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

function h(tag, cls, text) {
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

export class View {
  constructor(model) {
    this.m = model;
    const $ = (id) => document.getElementById(id);
    this.el = {
      conn: $('conn'),
      connText: $('conn-text'),
      banner: $('banner'),
      tbody: document.querySelector('#variants tbody'),
      heads: [...document.querySelectorAll('#variants thead th[data-key]')],
      empty: $('variants-empty'),
      count: $('variants-count'),
      suggestions: $('suggestions'),
      warnings: $('warnings'),
      feed: $('feed'),
      cards: {
        active: $('card-active'),
        avg: $('card-avg'),
        kills: $('card-kills'),
        ttk: $('card-ttk'),
      },
    };
    this.rows = new Map();
    this.dirty = new Set();
    this.full = false;
    this.cardsDirty = false;
    this.sideDirty = false;
    this.orderDirty = false;
    this.sort = { key: 'posted_at', dir: 'descending' };
    this.lastSort = 0;
    this.sortTimer = 0;
    this.frame = 0;
    this.feedSeen = 0;
    this.minute = 0;
    this.order = [];
    for (const th of this.el.heads) {
      th.querySelector('button')?.addEventListener('click', () => this.sortBy(th.dataset.key));
    }
    this.paintSortHeaders();
    setInterval(() => this.tick(), 1000);
  }

  // ----- marking ---------------------------------------------------------

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  everything() {
    this.full = true;
    this.cardsDirty = true;
    this.sideDirty = true;
    this.orderDirty = true;
    this.schedule();
  }

  variant(id, structural) {
    if (id) this.dirty.add(id);
    this.cardsDirty = true;
    if (structural || this.sort.key === 'status') this.orderDirty = true;
    else if (LIVE_KEYS.has(this.sort.key)) this.resortSoon();
    this.schedule();
  }

  side() {
    this.sideDirty = true;
    this.schedule();
  }

  feed() {
    this.schedule();
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

  // ----- drawing ---------------------------------------------------------

  flush() {
    this.frame = 0;
    const now = this.m.now();
    const minute = Math.floor(now / 60000);
    if (this.full) {
      this.full = false;
      this.dirty.clear();
      this.syncRows(now, minute);
    } else if (this.dirty.size) {
      for (const id of this.dirty) {
        const v = this.m.variants.get(id);
        let row = this.rows.get(id);
        if (!v) continue;
        if (!row) {
          row = this.makeRow(v);
          this.rows.set(id, row);
          this.orderDirty = true;
        }
        this.fillRow(row, v, now, minute);
      }
      this.dirty.clear();
    }
    if (this.orderDirty) this.reorder();
    if (this.cardsDirty) this.drawCards();
    if (this.sideDirty) this.drawSide();
    if (this.m.feedSeq !== this.feedSeen) this.drawFeed();
  }

  /** After a snapshot: add, update and remove rows to match the model. */
  syncRows(now, minute) {
    for (const [id, row] of this.rows) {
      if (!this.m.variants.has(id)) {
        row.tr.remove();
        this.rows.delete(id);
      }
    }
    for (const [id, v] of this.m.variants) {
      let row = this.rows.get(id);
      if (!row) {
        row = this.makeRow(v);
        this.rows.set(id, row);
      }
      this.fillRow(row, v, now, minute);
    }
    this.orderDirty = true;
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
    const p = v.performance_vs_prediction;
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

  /** Puts the rows in sort order, moving only those that are out of place. */
  reorder() {
    this.orderDirty = false;
    this.lastSort = performance.now();
    const list = [...this.m.variants.values()].sort(this.compare());
    const tbody = this.el.tbody;
    const kids = tbody.children;
    for (let i = 0; i < list.length; i++) {
      const tr = this.rows.get(list[i].variant_id)?.tr;
      if (tr && kids[i] !== tr) tbody.insertBefore(tr, kids[i] || null);
    }
    const n = list.length;
    this.el.empty.hidden = n > 0;
    const active = list.filter((v) => v.status !== 'killed').length;
    const more = this.m.truncated ? ' (newest shown)' : '';
    this.el.count.textContent = n ? `${count(active)} active${n > active ? `, ${n - active} recently killed` : ''}${more}` : '';
  }

  drawCards() {
    this.cardsDirty = false;
    const c = this.m.cards();
    const set = (card, value, sub) => {
      const v = card.querySelector('[data-value]');
      const s = card.querySelector('[data-sub]');
      if (v.textContent !== value) v.textContent = value;
      if (s.textContent !== sub) s.textContent = sub;
    };
    set(this.el.cards.active, count(c.active), `${count(c.total)} posted in total`);
    set(this.el.cards.avg, pct(c.avg, 2), 'mean current ER of active variants');
    const rate = c.killRate != null ? `kill rate ${pct(c.killRate, 0)} (${windowLabel(c.killRateWindowMs)})` : 'since midnight UTC';
    set(this.el.cards.kills, count(c.killsToday), rate);
    set(this.el.cards.ttk, minutes(c.avgKillMinutes), 'from post to early kill, today');
  }

  drawSide() {
    this.sideDirty = false;
    const ul = this.el.suggestions;
    ul.replaceChildren();
    for (const s of this.m.suggestions) {
      const li = h('li', `suggestion prio-${s.priority}`);
      const top = h('div', 'suggestion-head');
      const badge = h('span', `prio prio-${s.priority}`, s.priority);
      badge.setAttribute('aria-label', `${s.priority} priority`);
      top.append(badge, h('strong', 'suggestion-title', s.title));
      li.append(top, h('p', 'suggestion-desc', s.description), h('p', 'suggestion-action', s.action));
      li.dataset.type = s.type;
      ul.append(li);
    }
    if (!this.m.suggestions.length) ul.append(h('li', 'none', 'Nothing to suggest right now.'));

    const wl = this.el.warnings;
    wl.replaceChildren();
    const warnings = [...this.m.warnings.values()].sort((a, b) => b.usage_count - a.usage_count);
    for (const w of warnings) {
      const li = h('li', 'warning');
      li.dataset.pattern = w.pattern;
      const over = w.threshold != null ? ` (threshold ${w.threshold})` : '';
      li.append(
        h('span', 'warning-icon', '!'),
        h('span', 'warning-pattern', w.pattern),
        h('span', 'warning-text', `used ${w.usage_count}\u00d7 in ${windowLabel(w.window_ms) || 'the window'}${over}`),
      );
      wl.append(li);
    }
    if (!warnings.length) wl.append(h('li', 'none', 'No pattern is overused.'));
  }

  drawFeed() {
    const ol = this.el.feed;
    const fresh = [];
    const older = [];
    for (const e of this.m.feed) {
      if (e.seq > this.feedSeen) fresh.push(e);
      else if (e.seq === 0 && !e.drawn) older.push(e);
    }
    this.feedSeen = this.m.feedSeq;
    if (fresh.length) {
      const frag = document.createDocumentFragment();
      for (const e of fresh) frag.append(this.feedItem(e));
      ol.prepend(frag);
    }
    for (const e of older) {
      e.drawn = true;
      ol.append(this.feedItem(e));
    }
    while (ol.children.length > this.m.feed.length) ol.lastElementChild.remove();
    ol.parentElement.querySelector('.none')?.remove();
  }

  feedItem(e) {
    const li = h('li', `event ev-${e.kind}`);
    const d = e.data;
    const time = h('time', 'ev-time', clock(e.ts));
    time.dateTime = new Date(e.ts).toISOString();
    let label;
    let text;
    switch (e.kind) {
      case 'variant_posted':
        label = 'Posted';
        text = `${d.variant_id} \u201c${excerpt(d.content, 60)}\u201d, predicted ${pct(d.predicted_er)}`;
        break;
      case 'performance_update':
        label = d.stale ? 'Stale' : 'Update';
        text = `${d.variant_id}: ${count(d.view_count)} views, ER ${pct(d.current_er, 2)}` +
          (d.view_delta ? ` (+${count(d.view_delta)} views, +${count(d.interaction_delta)})` : '');
        break;
      case 'early_kill':
        label = 'Killed';
        text = `${d.variant_id}: ${d.kill_reason || 'early kill'}, final ER ${pct(d.final_er, 2)} after ${minutes(d.time_to_kill_minutes)}`;
        break;
      case 'pattern_fatigue':
        label = 'Fatigue';
        text = `'${d.pattern}' used ${d.usage_count}\u00d7 in ${d.window || windowLabel(d.window_ms)} (threshold ${d.threshold})`;
        break;
      case 'notice':
        label = 'Gateway';
        text = d.text;
        li.classList.add(`notice-${d.level}`);
        break;
      default:
        label = e.kind;
        text = '';
    }
    if (e.offset) li.dataset.offset = e.offset;
    li.append(time, h('span', 'ev-kind', label), h('span', 'ev-text', text));
    return li;
  }

  /** Every second: ages; every minute: the sparklines roll. */
  tick() {
    if (document.visibilityState === 'hidden') return;
    const now = this.m.now();
    const minute = Math.floor(now / 60000);
    const rolled = minute !== this.minute;
    this.minute = minute;
    for (const [id, row] of this.rows) {
      const v = this.m.variants.get(id);
      if (!v) continue;
      this.fillAge(row, v, now);
      if (rolled) this.fillSpark(row, v, minute);
    }
    if (rolled) this.cardsDirty = true;
    this.schedule();
  }

  // ----- connection state ------------------------------------------------

  /** state: connecting | live | reconnecting | redis-down | auth */
  connection(state, text, banner) {
    this.el.conn.dataset.state = state;
    if (this.el.connText.textContent !== text) this.el.connText.textContent = text;
    const b = this.el.banner;
    b.hidden = !banner;
    if (banner && b.textContent !== banner) b.textContent = banner;
    document.body.classList.toggle('is-stale', state !== 'live');
  }
}
