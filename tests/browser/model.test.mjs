// Unit tests of the page's state and formatting (no browser needed):
// offsets, intervals, duplicates, the refresh race, summary cards, sparklines.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { restartDelay } from '../../clients/js/pulsegate.js';
import { ago, count, pct, signedPct, sparkPath } from '../../ui/format.js';
import { Model, cmpOffset, wilson } from '../../ui/model.js';

const MINUTE = 60000;

function snapshot(offset, variants, extra = {}) {
  return {
    type: 'initial_data',
    offset,
    data: {
      summary: { total_variants: variants.length, active_variants: variants.length, avg_engagement_rate: 0, kills_today: 0, avg_time_to_kill_minutes: null, kill_rate: null, ...extra.summary },
      active_variants: variants,
      optimization_opportunities: [],
      pattern_fatigue_warnings: [],
      generated_at: Date.now(),
      ...extra.data,
    },
  };
}

function variant(id, fields = {}) {
  return { variant_id: id, content: id, predicted_er: 0.05, pattern_used: null, posted_at: Date.now() - MINUTE, status: 'active', view_count: 0, interaction_count: 0, current_er: 0, performance_vs_prediction: -1, er_series: [], er_series_start: null, ...fields };
}

function update(offset, id, views, interactions, extra = {}) {
  return {
    type: 'variant_update',
    offset,
    timestamp: new Date().toISOString(),
    data: { event_type: 'performance_update', variant_id: id, status: 'active', view_count: views, interaction_count: interactions, current_er: views ? interactions / views : 0, predicted_er: 0.05, view_delta: views, interaction_delta: interactions, stale: false, ...extra },
  };
}

describe('offsets', () => {
  test('compare as (ms, seq) pairs, null first', () => {
    assert.ok(cmpOffset('10-2', '9-5') > 0);
    assert.ok(cmpOffset('10-2', '10-10') < 0);
    assert.equal(cmpOffset('1732240000000-0', '1732240000000-0'), 0);
    assert.ok(cmpOffset(null, '1-0') < 0);
    assert.equal(cmpOffset(null, null), 0);
  });
});

describe('wilson', () => {
  test('matches the gateway (src/dashboard/wilson.rs)', () => {
    const [lo, hi] = wilson(150, 2500);
    assert.ok(Math.abs(lo - 0.05131) < 1e-4 && Math.abs(hi - 0.07006) < 1e-4);
    assert.equal(wilson(0, 0), null);
    assert.equal(wilson(0, 10)[0], 0);
  });
});

describe('model', () => {
  test('skips duplicates and applies updates in place', () => {
    const m = new Model();
    m.applySnapshot(snapshot('100-0', [variant('v1')]));
    assert.ok(m.applyEvent(update('101-0', 'v1', 200, 10)));
    assert.equal(m.applyEvent(update('101-0', 'v1', 200, 10)), null, 'same offset again');
    assert.equal(m.applyEvent(update('99-0', 'v1', 1, 1)), null, 'older than the snapshot');
    const v = m.variants.get('v1');
    assert.equal(v.view_count, 200);
    assert.equal(v.verdict, 'as_predicted');
    assert.deepEqual(v.er_interval, wilson(10, 200));
    assert.equal(m.offset, '101-0');
    assert.equal(m.feed.length, 1);
  });

  test('a refresh overtaken by newer events applies them again', () => {
    const m = new Model();
    m.applySnapshot(snapshot('100-0', [variant('v1')]));
    m.beginRefresh();
    m.applyEvent(update('102-0', 'v1', 300, 30));
    // The snapshot was read at 101-0: it does not have 102-0.
    m.applySnapshot(snapshot('101-0', [variant('v1', { view_count: 250, interaction_count: 20 })]));
    assert.equal(m.variants.get('v1').view_count, 300);
    assert.equal(m.offset, '102-0');
    // Without a pending refresh, the next snapshot simply replaces.
    m.applySnapshot(snapshot('103-0', [variant('v1', { view_count: 400 })]));
    assert.equal(m.variants.get('v1').view_count, 400);
    assert.equal(m.offset, '103-0');
  });

  test('keeps its state when the gateway sends the empty stand-in (Redis down)', () => {
    const m = new Model();
    m.applySnapshot(snapshot('100-0', [variant('v1')]));
    const ok = m.applySnapshot({ type: 'initial_data', offset: null, data: { summary: {}, active_variants: [], optimization_opportunities: [] } });
    assert.equal(ok, false);
    assert.equal(m.variants.size, 1);
    assert.equal(m.offset, '100-0');
  });

  test('cards: counted from the table, kills added live', () => {
    const m = new Model();
    m.applySnapshot(snapshot('100-0', [variant('v1', { current_er: 0.04 }), variant('v2', { current_er: 0.02 })],
      { summary: { total_variants: 3, kills_today: 1, avg_time_to_kill_minutes: 30 } }));
    let c = m.cards();
    assert.equal(c.active, 2);
    assert.ok(Math.abs(c.avg - 0.03) < 1e-12);
    m.applyEvent({ type: 'variant_update', offset: '101-0', timestamp: new Date().toISOString(), data: { event_type: 'early_kill', variant_id: 'v2', status: 'killed', kill_reason: 'low', final_er: 0.02, time_to_kill_minutes: 10, killed_at: Date.now(), current_er: 0.02 } });
    m.applyEvent({ type: 'variant_update', offset: '102-0', timestamp: new Date().toISOString(), data: { event_type: 'variant_posted', variant_id: 'v3', content: 'x', predicted_er: 0.05, posted_at: Date.now(), status: 'active', view_count: 0, interaction_count: 0, current_er: 0 } });
    c = m.cards();
    assert.equal(c.active, 2);
    assert.equal(c.total, 4);
    assert.ok(Math.abs(c.avg - 0.02) < 1e-12);
    assert.equal(c.killsToday, 2);
    assert.equal(c.avgKillMinutes, 20);
    assert.equal(m.variants.get('v2').status, 'killed');
  });

  test('sparkline: snapshot minutes, then live minutes', () => {
    const m = new Model();
    const now = Math.floor(Date.now() / MINUTE);
    const series = new Array(60).fill(null);
    series[58] = 0.05;
    m.applySnapshot(snapshot('100-0', [variant('v1', { er_series: series, er_series_start: (now - 59) * MINUTE })]));
    m.applyEvent({ ...update('101-0', 'v1', 100, 10), timestamp: new Date(now * MINUTE + 1000).toISOString() });
    const s = m.series(m.variants.get('v1'), now);
    assert.equal(s.length, 60);
    assert.equal(s[58], 0.05);
    // This minute: the snapshot had no views in it, the live event adds some.
    assert.equal(s[59], 0.1);
    assert.equal(s[0], null);
  });

  test('backfilled feed entries go behind live ones', () => {
    const m = new Model();
    m.applySnapshot(snapshot('100-0', [variant('v1')]));
    m.applyEvent(update('101-0', 'v1', 10, 1));
    m.backfillFeed([update('100-0', 'v1', 5, 0), update('101-0', 'v1', 10, 1), update('99-0', 'v1', 1, 0)]);
    assert.deepEqual(m.feed.map((e) => e.offset), ['101-0', '100-0', '99-0']);
  });
});

describe('format', () => {
  test('numbers for people', () => {
    assert.equal(pct(0.075, 2), '7.50%');
    assert.equal(pct(null), '\u2014');
    assert.equal(signedPct(0.5), '+50.0%');
    assert.equal(signedPct(-0.2), '\u221220.0%');
    assert.equal(signedPct(0), '0.0%');
    assert.equal(count(12345), '12,345');
    assert.equal(count(2500000), '2.5M');
    assert.equal(ago(5000), '5s');
    assert.equal(ago(7500000), '2h 05m');
    assert.equal(ago(90000000), '1d 1h');
  });

  test('sparkline paths break at gaps', () => {
    const { line, area } = sparkPath([0.1, 0.2, null, 0.1], 30, 10, 0.2);
    assert.equal((line.match(/M/g) || []).length, 2);
    assert.equal((area.match(/Z/g) || []).length, 2);
  });
});

describe('reconnect hint', () => {
  test('a drain close is waited out, with a jitter of our own on top', () => {
    const hint = '{"reconnect_ms":10000}';
    assert.equal(restartDelay(1012, hint, () => 0), 10000);
    assert.equal(restartDelay(1012, hint, () => 0.5), 10500);
    assert.equal(restartDelay(1012, '{"reconnect_ms":0}', () => 1), 250);
    assert.equal(restartDelay(1012, '{"reconnect_ms":3600000}', () => 0), 300000);
  });

  test('anything else falls back to the backoff', () => {
    assert.equal(restartDelay(1001, '{"reconnect_ms":10000}'), null);
    assert.equal(restartDelay(1012, 'server shutting down'), null);
    assert.equal(restartDelay(1012, '{"reconnect_ms":"soon"}'), null);
    assert.equal(restartDelay(1012, '{"reconnect_ms":-5}'), null);
    assert.equal(restartDelay(1012, ''), null);
  });
});
