// The dashboard's state: the last snapshot (`initial_data`) with every
// `variant_update` applied in place. No DOM here; view.js draws it.
//
// Offsets: events of one persona arrive in stream order, so an event at or
// before the highest offset applied is a duplicate and is skipped. A snapshot
// asked for with `refresh` may be overtaken by events published after it was
// read; those are kept while the refresh is pending and applied again on top
// of it (see beginRefresh / applySnapshot).

/** Must match `optimization.min_views` (default 100) for live verdicts. */
export const MIN_VIEWS = 100;
/** Killed variants stay visible this long (the snapshot lists active ones only). */
export const KEEP_KILLED_MS = 5 * 60 * 1000;
export const FEED_MAX = 100;
const Z95 = 1.959963984540054;
const MINUTE = 60000;

/** "1732240000000-3" as [ms, seq]; null for anything else. */
export function parseOffset(s) {
  if (typeof s !== 'string') return null;
  const m = /^(\d+)-(\d+)$/.exec(s);
  return m ? [Number(m[1]), Number(m[2])] : null;
}

/** Compares two offsets; null/invalid sorts before every real offset. */
export function cmpOffset(a, b) {
  const x = parseOffset(a);
  const y = parseOffset(b);
  if (!x || !y) return (x ? 1 : 0) - (y ? 1 : 0);
  return x[0] - y[0] || x[1] - y[1];
}

/** 95% Wilson interval of an engagement rate, as the gateway computes it. */
export function wilson(successes, trials) {
  if (!trials) return null;
  const n = trials;
  const p = Math.min(successes, trials) / n;
  const z2 = Z95 * Z95;
  const denom = 1 + z2 / n;
  const centre = (p + z2 / (2 * n)) / denom;
  const half = (Z95 * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n))) / denom;
  return [round6(Math.max(0, centre - half)), round6(Math.min(1, centre + half))];
}

export function verdict(v) {
  if (v.view_count < MIN_VIEWS || !v.er_interval) return 'insufficient_data';
  if (v.er_interval[0] > v.predicted_er) return 'over_performing';
  if (v.er_interval[1] < v.predicted_er) return 'under_performing';
  return 'as_predicted';
}

function round6(x) {
  return Math.round(x * 1e6) / 1e6;
}

function utcDay(ms) {
  return new Date(ms).toISOString().slice(0, 10);
}

function fromSnapshot(raw) {
  const start = raw.er_series_start != null ? Math.floor(raw.er_series_start / MINUTE) : 0;
  return {
    ...raw,
    status: raw.status || 'active',
    series: Array.isArray(raw.er_series) ? raw.er_series : [],
    seriesStart: start,
    live: new Map(),
    kill: null,
    killedLocal: 0,
  };
}

export class Model {
  constructor() {
    /** variant_id -> row, see fromSnapshot. */
    this.variants = new Map();
    this.summary = {};
    this.truncated = false;
    this.suggestions = [];
    /** pattern -> {pattern, usage_count, threshold, window_ms} */
    this.warnings = new Map();
    /** Newest first, at most FEED_MAX; each entry has a growing `seq`. */
    this.feed = [];
    this.feedSeq = 0;
    /** Highest stream offset applied (the `?since=` of a reconnect). */
    this.offset = null;
    /** Server clock minus ours, from the snapshot's `generated_at`. */
    this.skew = 0;
    this.kills = { day: '', count: 0, minutesSum: 0 };
    /** Posts and kills since the snapshot (used when it was truncated). */
    this.adj = { active: 0, total: 0 };
    this.replay = null;
    this.hasData = false;
    this.snapshots = 0;
  }

  now() {
    return Date.now() + this.skew;
  }

  /** Called when a `refresh` is sent: keep events until its answer. */
  beginRefresh() {
    if (!this.replay) this.replay = [];
  }

  /** A new connection: a refresh asked on the old one will not be answered. */
  connectionOpened() {
    this.replay = null;
  }

  /**
   * Replaces the state with an `initial_data` message. Returns false when
   * it is the empty stand-in the gateway sends while Redis cannot answer
   * (then the last known state is kept).
   */
  applySnapshot(msg) {
    const d = msg.data || {};
    const summary = d.summary || {};
    if (msg.offset == null && Object.keys(summary).length === 0 && this.hasData) {
      this.replay = null;
      return false;
    }
    if (Number.isFinite(d.generated_at)) this.skew = d.generated_at - Date.now();
    const keep = [];
    for (const v of this.variants.values()) {
      if (v.status === 'killed' && Date.now() - v.killedLocal < KEEP_KILLED_MS) keep.push(v);
    }
    this.variants = new Map();
    for (const raw of d.active_variants || []) {
      this.variants.set(raw.variant_id, fromSnapshot(raw));
    }
    for (const v of keep) if (!this.variants.has(v.variant_id)) this.variants.set(v.variant_id, v);
    this.summary = summary;
    this.truncated = !!d.active_variants_truncated;
    this.suggestions = Array.isArray(d.optimization_opportunities) ? d.optimization_opportunities : [];
    this.warnings = new Map();
    for (const w of d.pattern_fatigue_warnings || []) this.warnings.set(w.pattern, { ...w });
    const kills = summary.kills_today ?? 0;
    this.kills = {
      day: utcDay(this.now()),
      count: kills,
      minutesSum: (summary.avg_time_to_kill_minutes ?? 0) * kills,
    };
    this.adj = { active: 0, total: 0 };
    if (cmpOffset(msg.offset, this.offset) > 0) this.offset = msg.offset;
    const pending = this.replay;
    this.replay = null;
    for (const e of pending || []) {
      if (cmpOffset(e.offset, msg.offset) > 0) this.applyEvent(e, true);
    }
    this.hasData = true;
    this.snapshots += 1;
    return true;
  }

  /**
   * Applies one `variant_update`. Returns {id, type} of what changed, or
   * null for a duplicate. `again` = re-applied after a snapshot (no feed entry).
   */
  applyEvent(msg, again = false) {
    const d = msg.data;
    if (!d || typeof d !== 'object') return null;
    if (!again) {
      if (msg.offset != null && this.offset != null && cmpOffset(msg.offset, this.offset) <= 0) {
        return null;
      }
      if (parseOffset(msg.offset)) this.offset = msg.offset;
      if (this.replay && this.replay.length < 100000) this.replay.push(msg);
    }
    const ts = Date.parse(msg.timestamp) || this.now();
    let result = { id: d.variant_id, type: d.event_type, structural: false };
    switch (d.event_type) {
      case 'variant_posted':
        result.structural = this.posted(d, ts);
        break;
      case 'performance_update':
        this.performance(d, ts);
        break;
      case 'early_kill':
        result.structural = this.killed(d, ts);
        break;
      case 'pattern_fatigue':
        this.warnings.set(d.pattern, {
          pattern: d.pattern,
          usage_count: d.usage_count,
          threshold: d.threshold,
          window_ms: d.window_ms,
        });
        result = { id: null, type: d.event_type, structural: false };
        break;
      default:
        return null;
    }
    if (!again) this.pushFeed({ kind: d.event_type, ts, offset: msg.offset, data: d });
    return result;
  }

  posted(d, ts) {
    if (this.variants.has(d.variant_id)) return false;
    const predicted = d.predicted_er ?? 0;
    this.variants.set(d.variant_id, {
      variant_id: d.variant_id,
      content: d.content ?? '',
      predicted_er: predicted,
      pattern_used: d.pattern_used ?? null,
      posted_at: d.posted_at ?? ts,
      status: d.status || 'active',
      view_count: d.view_count ?? 0,
      interaction_count: d.interaction_count ?? 0,
      current_er: d.current_er ?? 0,
      performance_vs_prediction: predicted ? -1 : null,
      last_updated: ts,
      er_5m: null,
      er_15m: null,
      er_60m: null,
      er_interval: null,
      verdict: 'insufficient_data',
      series: [],
      seriesStart: 0,
      live: new Map(),
      kill: null,
      killedLocal: 0,
    });
    this.adj.active += 1;
    this.adj.total += 1;
    return true;
  }

  performance(d, ts) {
    const v = this.variants.get(d.variant_id);
    if (!v) return; // not in the table (a truncated snapshot): counted at the next refresh
    for (const k of ['view_count', 'interaction_count', 'current_er', 'predicted_er',
      'performance_vs_prediction', 'er_5m', 'er_15m', 'er_60m', 'status']) {
      if (k in d) v[k] = d[k];
    }
    if (Number.isFinite(d.last_updated)) v.last_updated = Math.max(v.last_updated ?? 0, d.last_updated);
    v.er_interval = wilson(v.interaction_count, v.view_count);
    v.verdict = verdict(v);
    if (!d.stale && (d.view_delta > 0 || d.interaction_delta > 0)) {
      const m = Math.floor(ts / MINUTE);
      const acc = v.live.get(m) || [0, 0];
      acc[0] += d.view_delta || 0;
      acc[1] += d.interaction_delta || 0;
      v.live.set(m, acc);
      if (v.live.size > 70) {
        const oldest = Math.floor(this.now() / MINUTE) - 61;
        for (const k of v.live.keys()) if (k < oldest) v.live.delete(k);
      }
    }
  }

  killed(d, ts) {
    const day = utcDay(this.now());
    if (this.kills.day !== day) this.kills = { day, count: 0, minutesSum: 0 };
    if (utcDay(d.killed_at ?? ts) === day) {
      this.kills.count += 1;
      this.kills.minutesSum += d.time_to_kill_minutes ?? 0;
    }
    const v = this.variants.get(d.variant_id);
    if (!v) return false;
    const wasActive = v.status !== 'killed';
    for (const k of ['view_count', 'interaction_count', 'current_er']) if (k in d) v[k] = d[k];
    v.status = 'killed';
    v.kill = {
      reason: d.kill_reason,
      final_er: d.final_er,
      sample_size: d.sample_size,
      minutes: d.time_to_kill_minutes,
      at: d.killed_at ?? ts,
    };
    v.killedLocal = Date.now();
    if (wasActive) this.adj.active -= 1;
    return true;
  }

  pushFeed(entry) {
    this.feedSeq += 1;
    this.feed.unshift({ ...entry, seq: this.feedSeq });
    if (this.feed.length > FEED_MAX) this.feed.length = FEED_MAX;
  }

  /** A gateway/connection notice in the feed. */
  notice(text, level = 'info') {
    this.pushFeed({ kind: 'notice', ts: Date.now(), offset: null, data: { text, level } });
  }

  /**
   * Adds older entries (from GET /api/metrics' `real_time_feed`, newest
   * first) behind the live ones, skipping any already shown.
   */
  backfillFeed(messages) {
    const seen = new Set(this.feed.map((e) => e.offset).filter(Boolean));
    const oldest = this.feed.filter((e) => e.offset).at(-1)?.offset ?? null;
    const older = [];
    for (const msg of messages) {
      const d = msg && msg.data;
      if (!d || seen.has(msg.offset)) continue;
      if (oldest && cmpOffset(msg.offset, oldest) > 0) continue;
      older.push({ kind: d.event_type, ts: Date.parse(msg.timestamp) || 0, offset: msg.offset, data: d });
    }
    older.sort((a, b) => cmpOffset(b.offset, a.offset));
    for (const e of older) {
      if (this.feed.length >= FEED_MAX) break;
      // Older than everything shown: `seq` 0 tells the view to append it.
      this.feed.push({ ...e, seq: 0 });
    }
    this.feedSeq += 1;
  }

  /** The summary cards: counted from the table when it holds every active variant. */
  cards() {
    const s = this.summary;
    let active;
    let avg;
    if (this.truncated) {
      active = (s.active_variants ?? 0) + this.adj.active;
      avg = s.avg_engagement_rate ?? null;
    } else {
      active = 0;
      let sum = 0;
      for (const v of this.variants.values()) {
        if (v.status === 'killed') continue;
        active += 1;
        sum += v.current_er || 0;
      }
      avg = active ? sum / active : null;
    }
    const day = utcDay(this.now());
    const kills = this.kills.day === day ? this.kills : { count: 0, minutesSum: 0 };
    return {
      active,
      total: (s.total_variants ?? 0) + this.adj.total,
      avg,
      killsToday: kills.count,
      avgKillMinutes: kills.count ? kills.minutesSum / kills.count : null,
      killRate: s.kill_rate ?? null,
      killRateWindowMs: s.kill_rate_window_ms ?? null,
    };
  }

  /** The variant's per-minute ER for the 60 minutes ending now (null = no views). */
  series(v, nowMinute) {
    const out = new Array(60);
    const start = v.seriesStart;
    const end = start + v.series.length - 1;
    for (let k = 0; k < 60; k++) {
      const m = nowMinute - 59 + k;
      let val = m >= start && m <= end ? v.series[m - start] : null;
      if (val == null) {
        const acc = v.live.get(m);
        if (acc && acc[0] > 0) val = acc[1] / acc[0];
      }
      out[k] = val ?? null;
    }
    return out;
  }
}
