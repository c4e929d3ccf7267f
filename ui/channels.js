// A channel namespace's messages, from the audit trail: the "Channel
// analytics" panel. Like the persona's analytics panel (history.js), nothing
// runs until it is opened: then the namespaces this token may read
// (/api/analytics/channels), and the chosen one's summary and messages per
// bucket split by their `type`. docs/ui.md, "Channel analytics".

import { barChart } from './history.js';

/** The most per-type charts drawn (the types most frequent in the range). */
const TYPE_CHARTS = 4;

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text != null) e.textContent = text;
  return e;
}

const hourLabel = (iso) => `${iso.slice(5, 10)} ${iso.slice(11, 16)}`;
const dayLabel = (iso) => iso.slice(0, 10);

export class ChannelAnalytics {
  /** `query(params)`: the query string with the `?token=`. */
  constructor({ query }) {
    this.query = query;
    const $ = (id) => document.getElementById(id);
    this.panel = $('channel-analytics');
    this.body = $('channel-body');
    this.status = $('channel-status');
    this.ns = $('channel-ns');
    this.range = $('channel-range');
    this.listed = false;
    this.panel.addEventListener('toggle', () => {
      if (this.panel.open && !this.listed) this.open();
    });
    this.ns.addEventListener('change', () => this.load());
    this.range.addEventListener('change', () => this.load());
  }

  async get(path, params = {}) {
    const res = await fetch(`${path}${this.query(params)}`, { headers: { Accept: 'application/json' } });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) {
      const e = new Error(body?.error?.message || `HTTP ${res.status}`);
      e.code = body?.error?.code;
      throw e;
    }
    return body;
  }

  fail(e) {
    this.body.replaceChildren();
    this.status.textContent = e.code === 'audit_unavailable'
      ? 'Analytics need the audit database, which this gateway does not have.'
      : `Channel analytics unavailable: ${e.message}`;
    this.panel.dataset.state = 'error';
  }

  /** First opening: the namespaces to offer, then the first one's figures. */
  async open() {
    this.listed = true;
    this.panel.dataset.state = 'loading';
    this.status.textContent = 'Loading…';
    try {
      const { namespaces } = await this.get('/api/analytics/channels');
      this.ns.replaceChildren(...namespaces.map((n) => el('option', { value: n.name }, n.name)));
      if (!namespaces.length) {
        this.status.textContent = 'No channel namespace with history is readable here.';
        this.panel.dataset.state = 'empty';
        return;
      }
      await this.load();
    } catch (e) {
      this.fail(e);
    }
  }

  async load() {
    const ns = this.ns.value;
    if (!ns) return;
    const days = this.range.value === '30d';
    const until = new Date();
    const since = new Date(until.getTime() - (days ? 30 : 1) * 86400000);
    const span = { since: since.toISOString(), until: until.toISOString() };
    const base = `/api/analytics/channels/${encodeURIComponent(ns)}`;
    this.panel.dataset.state = 'loading';
    this.status.textContent = 'Loading…';
    try {
      const [summary, histogram] = await Promise.all([
        this.get(`${base}/summary`, span),
        this.get(`${base}/histogram`, { bucket: days ? 'day' : 'hour', ...span }),
      ]);
      this.draw(summary, histogram, days ? dayLabel : hourLabel);
      this.status.textContent = `${ns}: ${span.since.slice(0, 16)}Z → ${span.until.slice(0, 16)}Z (UTC)`;
      this.panel.dataset.state = 'loaded';
    } catch (e) {
      this.fail(e);
    }
  }

  draw(s, h, label) {
    const m = s.messages || {};
    const dl = el('dl', { class: 'figures', id: 'channel-figures' });
    for (const [k, v] of [['Messages', m.total ?? 0], ['Channels', s.channels ?? 0], ['Types', m.types ?? 0]]) {
      const div = el('div');
      div.append(el('dt', {}, k), el('dd', {}, String(v)));
      dl.append(div);
    }
    const figure = (id, title, svg) => {
      const f = el('figure', { class: 'chart-box', id });
      f.append(el('figcaption', {}, title), svg);
      return f;
    };
    const time = (value) => h.buckets.map((b) => ({ label: label(b.start), value: value(b), title: `${b.start}: ${value(b)}` }));
    const byType = Object.entries(m.by_type || {}).map(([t, n]) => ({ label: t, value: n, title: `${t}: ${n}` }));
    const perType = h.types.slice(0, TYPE_CHARTS).map((t, i) => {
      const f = figure(`chart-ns-type-${i}`, '', barChart(time((b) => b.by_type[t] ?? 0), { label: `${t} per bucket` }));
      f.dataset.type = t;
      f.querySelector('figcaption').textContent = t; // a publisher's text: never markup
      return f;
    });
    this.body.replaceChildren(
      dl,
      figure('chart-ns-messages', 'Messages', barChart(time((b) => b.count), { label: 'Messages per bucket' })),
      figure('chart-ns-types', 'By type', barChart(byType, { label: 'Messages per type' })),
      ...perType,
    );
  }
}
