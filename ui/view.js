// Draws the model. Changes are only marked when they happen; the DOM is
// touched once per animation frame, and only where a value changed.
// The variants table is table.js; this file draws the rest.

import { clock, count, excerpt, minutes, pct, windowLabel } from './format.js';
import { Table, h } from './table.js';

export class View {
  constructor(model) {
    this.m = model;
    const $ = (id) => document.getElementById(id);
    this.el = {
      conn: $('conn'),
      connText: $('conn-text'),
      banner: $('banner'),
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
    this.table = new Table(model, () => this.schedule());
    this.cardsDirty = false;
    this.sideDirty = false;
    this.frame = 0;
    this.feedSeen = 0;
    this.minute = 0;
    setInterval(() => this.tick(), 1000);
  }

  // ----- marking ---------------------------------------------------------

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  everything() {
    this.table.all();
    this.cardsDirty = true;
    this.sideDirty = true;
    this.schedule();
  }

  variant(id, structural) {
    this.table.mark(id, structural);
    this.cardsDirty = true;
    this.schedule();
  }

  side() {
    this.sideDirty = true;
    this.schedule();
  }

  feed() {
    this.schedule();
  }

  // ----- drawing ---------------------------------------------------------

  flush() {
    this.frame = 0;
    const now = this.m.now();
    this.table.draw(now, Math.floor(now / 60000));
    if (this.cardsDirty) this.drawCards();
    if (this.sideDirty) this.drawSide();
    if (this.m.feedSeq !== this.feedSeen) this.drawFeed();
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
    set(this.el.cards.avg, pct(c.avg, 2), 'mean over active variants');
    const rate = c.killRate != null ? `kill rate ${pct(c.killRate, 0)} (${windowLabel(c.killRateWindowMs)})` : 'since midnight UTC';
    set(this.el.cards.kills, count(c.killsToday), rate);
    set(this.el.cards.ttk, minutes(c.avgKillMinutes), 'post to kill, today');
  }

  drawSide() {
    this.sideDirty = false;
    const ul = this.el.suggestions;
    ul.replaceChildren();
    for (const s of this.m.suggestions) {
      const li = h('li', 'suggestion');
      li.dataset.priority = s.priority;
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
    this.table.tick(now, minute, rolled);
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
