//! The functions library's persona state, rebuilt from audited events and
//! read as `pulse_snapshot` would have read it at a past instant. Every
//! rule mirrors `lua/pulse.lua` (`on_variant_posted`, `on_early_kill`,
//! `on_performance_update`'s minute buckets, `snapshot`, `variant_view`),
//! rounding included, so the rebuilt `RawSnapshot` is the one Redis gave.
//!
//! Time: `t` is a command's Redis time (the stream id's ms), `ts` an event's
//! own time (its `timestamp`). Key expiries run on `t`, windows on `ts`.

use std::collections::HashMap;

use super::zset::ZSet;
use crate::dashboard::{Kill, PatternUsage, RawSnapshot, Summary, Variant};

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;
const RING: i64 = 60;
const KILL_DAYS_KEPT: i64 = 8;
const RECENT_KILLS_KEPT: usize = 100;

/// The `[ingest]` settings the gateway hands the library (`functions.rs`);
/// `recent_kills` is the library's default (the gateway does not set it).
#[derive(Debug, Clone)]
pub struct Settings {
    pub pattern_window_ms: i64,
    pub fatigue_threshold: u64,
    pub kill_rate_window_ms: i64,
    pub killed_ttl_ms: i64,
    pub max_variants: usize,
    pub recent_kills: usize,
}

/// A stream id.
pub type Id = (i64, i64);

/// A variant's newest non-stale update of one incarnation: its totals.
#[derive(Debug, Clone, PartialEq)]
pub struct Totals {
    pub views: u64,
    pub interactions: u64,
    pub last_updated: i64,
}

#[derive(Debug, Clone)]
pub struct Post {
    pub id: Id,
    pub ts: i64,
    pub variant: String,
    pub content: String,
    pub predicted_er: f64,
    pub pattern: Option<String>,
    pub posted_at: i64,
    pub latest: Option<Totals>,
}

#[derive(Debug, Clone)]
pub struct KillEvent {
    pub id: Id,
    pub variant: String,
    pub reason: Option<String>,
    pub final_er: Option<f64>,
    pub sample_size: Option<u64>,
    pub killed_at: i64,
    pub posted_at: i64,
}

#[derive(Debug, Clone)]
pub enum Event {
    Post(Post),
    Kill(KillEvent),
}

/// A non-stale performance update recent enough to be in a minute bucket.
#[derive(Debug, Clone)]
pub struct Tick {
    pub id: Id,
    pub variant: String,
    pub ts: i64,
    pub view_delta: u64,
    pub interaction_delta: u64,
}

struct Incarnation {
    post: Post,
    killed: Option<KillEvent>,
    /// The hash's expiry (killed variants), Redis time.
    expires_at: Option<i64>,
}

#[derive(Default)]
struct State {
    total: u64,
    active: i64,
    variants: HashMap<String, Incarnation>,
    /// Day number → kills, time-to-kill ms.
    kill_days: HashMap<i64, (u64, i64)>,
    active_set: ZSet,
    posted: ZSet,
    killed: ZSet,
    kills: ZSet,
    patterns: ZSet,
    pattern_sets: HashMap<String, ZSet>,
}

pub fn r6(x: f64) -> f64 {
    (x * 1e6 + 0.5).floor() / 1e6
}

pub fn r2(x: f64) -> f64 {
    (x * 100.0 + 0.5).floor() / 100.0
}

impl State {
    fn variant(&mut self, vid: &str, t: i64) -> Option<&mut Incarnation> {
        if self.variants.get(vid)?.expires_at.is_some_and(|e| t > e) {
            self.variants.remove(vid);
            return None;
        }
        self.variants.get_mut(vid)
    }

    fn post(&mut self, p: Post, s: &Settings) {
        let t = p.id.0;
        let vid = p.variant.clone();
        self.total += 1;
        self.active += 1;
        self.active_set.add(&vid, p.posted_at);
        let kw = s.kill_rate_window_ms;
        let posted = self.posted.at(t);
        posted.add(&vid, p.posted_at);
        posted.rem_up_to(p.posted_at - kw);
        posted.expire(t, kw);
        self.killed.at(t).rem(&vid);
        if let Some(pattern) = &p.pattern {
            let w = s.pattern_window_ms;
            let cutoff = p.posted_at - w;
            let set = self.pattern_sets.entry(pattern.clone()).or_default().at(t);
            set.add(&vid, p.posted_at);
            set.rem_up_to(cutoff);
            set.expire(t, w);
            let idx = self.patterns.at(t);
            idx.add_gt(pattern, p.posted_at);
            for old in idx.rem_up_to(cutoff) {
                self.pattern_sets.remove(&old);
            }
            idx.expire(t, w);
        }
        self.variants.insert(
            vid,
            Incarnation {
                post: p,
                killed: None,
                expires_at: None,
            },
        );
    }

    fn kill(&mut self, k: KillEvent, s: &Settings) {
        let t = k.id.0;
        let ttl = s.killed_ttl_ms;
        let Some(v) = self.variant(&k.variant, t) else {
            return;
        };
        v.expires_at = Some(t + ttl);
        v.killed = Some(k.clone());
        self.active -= 1;
        let ttk = (k.killed_at - k.posted_at).max(0);
        let day = k.killed_at.div_euclid(DAY_MS);
        let e = self.kill_days.entry(day).or_default();
        e.0 += 1;
        e.1 += ttk;
        let cutoff = (k.killed_at - (KILL_DAYS_KEPT - 1) * DAY_MS).div_euclid(DAY_MS);
        self.kill_days.retain(|&d, _| d >= cutoff);
        self.active_set.rem(&k.variant);
        let kw = s.kill_rate_window_ms;
        let killed = self.killed.at(t);
        killed.add(&k.variant, k.posted_at);
        killed.rem_up_to(k.killed_at - kw);
        killed.expire(t, kw);
        let kills = self.kills.at(t);
        kills.add(&k.variant, k.killed_at);
        kills.keep_highest(RECENT_KILLS_KEPT);
        kills.expire(t, ttl);
    }
}

/// The per-minute buckets of one incarnation as the 60-slot ring holds them
/// after `ticks` (its non-stale updates, in stream order): slot `m % 60`
/// keeps one minute; an update more than an hour older than the newest
/// minute is not bucketed.
fn ring(ticks: &[&Tick]) -> HashMap<i64, (f64, f64)> {
    let mut slots: [Option<(i64, f64, f64)>; RING as usize] = [None; RING as usize];
    let mut wm: Option<i64> = None;
    for t in ticks {
        let m = t.ts.div_euclid(MINUTE_MS);
        let newest = wm.map_or(m, |e| e.max(m));
        if m > newest - RING {
            let slot = &mut slots[m.rem_euclid(RING) as usize];
            let (sv, si) = match *slot {
                Some((sm, sv, si)) if sm == m => (sv, si),
                _ => (0.0, 0.0),
            };
            *slot = Some((m, sv + t.view_delta as f64, si + t.interaction_delta as f64));
        }
        wm = Some(newest);
    }
    slots
        .iter()
        .flatten()
        .map(|&(m, v, i)| (m, (v, i)))
        .collect()
}

fn ratio(i: f64, v: f64) -> Option<f64> {
    (v > 0.0).then(|| r6(i / v))
}

fn view(p: &Post, ticks: &[&Tick], nm: i64) -> Variant {
    let buckets = ring(ticks);
    let (mut v5, mut i5, mut v15, mut i15, mut v60, mut i60) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (&k, &(v, i)) in &buckets {
        let age = nm - k;
        if (0..RING).contains(&age) {
            (v60, i60) = (v60 + v, i60 + i);
            if age < 15 {
                (v15, i15) = (v15 + v, i15 + i);
                if age < 5 {
                    (v5, i5) = (v5 + v, i5 + i);
                }
            }
        }
    }
    let series = (1..=RING)
        .map(|k| match buckets.get(&(nm - RING + k)) {
            Some(&(v, i)) if v > 0.0 => Some(r6(i / v)),
            _ => None,
        })
        .collect();
    let (vc, ic, lu) = match &p.latest {
        Some(t) => (t.views, t.interactions, t.last_updated),
        None => (0, 0, p.ts),
    };
    let pred = p.predicted_er;
    let cer = if vc > 0 { ic as f64 / vc as f64 } else { 0.0 };
    Variant {
        variant_id: p.variant.clone(),
        content: p.content.clone(),
        predicted_er: pred,
        pattern_used: p.pattern.clone(),
        posted_at: Some(p.posted_at),
        status: "active".into(),
        view_count: vc,
        interaction_count: ic,
        current_er: r6(cer),
        performance_vs_prediction: (pred > 0.0 && vc > 0).then(|| r6((cer - pred) / pred)),
        last_updated: Some(lu),
        er_5m: ratio(i5, v5),
        er_15m: ratio(i15, v15),
        er_60m: ratio(i60, v60),
        er_series: series,
        er_series_start: Some((nm - RING + 1) * MINUTE_MS),
        er_interval: None,
        verdict: None,
    }
}

/// The snapshot at `now` of the persona whose posts and kills (stream
/// order, ids at or before `now`) are `events`, with the recent updates
/// `ticks` (stream order). `offset`: the newest stream id at or before `now`.
pub fn rebuild(
    events: Vec<Event>,
    ticks: &[Tick],
    offset: Option<String>,
    now: i64,
    s: &Settings,
) -> RawSnapshot {
    let mut st = State::default();
    for e in events {
        match e {
            Event::Post(p) => st.post(p, s),
            Event::Kill(k) => st.kill(k, s),
        }
    }
    let nm = now.div_euclid(MINUTE_MS);
    // er_sum_u: each active variant's rounded ER, added and removed as
    // its updates and kill were.
    let mut er_sum_u = 0.0;
    let active: Vec<(String, i64)> = st.active_set.rev_range(usize::MAX);
    for (vid, _) in &active {
        if let Some(v) = st.variant(vid, now) {
            if let Some(t) = v.post.latest.as_ref().filter(|t| t.views > 0) {
                er_sum_u += (t.interactions as f64 / t.views as f64 * 1e6 + 0.5).floor();
            }
        }
    }
    let mut shown = Vec::new();
    for (vid, _) in active.iter().take(s.max_variants) {
        if let Some(v) = st.variant(vid, now) {
            let post_id = v.post.id;
            let mine: Vec<&Tick> = ticks
                .iter()
                .filter(|t| t.variant == *vid && t.id > post_id)
                .collect();
            shown.push(view(&v.post, &mine, nm));
        }
    }
    let truncated = active.len() > s.max_variants.min(active.len());

    let (kills_today, kill_ms) = st
        .kill_days
        .get(&now.div_euclid(DAY_MS))
        .copied()
        .unwrap_or((0, 0));
    let kw = s.kill_rate_window_ms;
    let posted_w = st.posted.at(now).count(now - kw, now);
    let killed_w = st.killed.at(now).count(now - kw, now);
    let active_n = st.active;
    let summary = Summary {
        total_variants: st.total,
        active_variants: active_n.max(0) as u64,
        avg_engagement_rate: (active_n > 0).then(|| r6(er_sum_u / active_n as f64 / 1e6)),
        kills_today,
        avg_time_to_kill_minutes: (kills_today > 0)
            .then(|| r2(kill_ms as f64 / kills_today as f64 / MINUTE_MS as f64)),
        kill_rate: (posted_w > 0).then(|| r6(killed_w as f64 / posted_w as f64)),
        posted_in_window: posted_w,
        killed_in_window: killed_w,
        kill_rate_window_ms: kw as u64,
    };

    let w = s.pattern_window_ms;
    let names: Vec<String> = st
        .patterns
        .at(now)
        .above(now - w)
        .map(str::to_owned)
        .collect();
    let mut patterns: Vec<PatternUsage> = names
        .into_iter()
        .filter_map(|p| {
            let c = st.pattern_sets.get_mut(&p)?.at(now).count(now - w, now);
            (c > 0).then_some(PatternUsage {
                fatigued: c > s.fatigue_threshold,
                pattern: p,
                usage_count: c,
            })
        })
        .collect();
    patterns.sort_by(|a, b| {
        b.usage_count
            .cmp(&a.usage_count)
            .then_with(|| a.pattern.cmp(&b.pattern))
    });

    let recent: Vec<(String, i64)> = st.kills.at(now).rev_range(s.recent_kills);
    let recent_kills = recent
        .into_iter()
        .map(|(vid, killed_at)| {
            let v = st.variant(&vid, now);
            let post = v.as_ref().map(|v| &v.post);
            let k = v.as_ref().and_then(|v| v.killed.as_ref());
            Kill {
                killed_at: Some(killed_at),
                kill_reason: k.and_then(|k| k.reason.clone()),
                final_er: k.and_then(|k| k.final_er),
                sample_size: k.and_then(|k| k.sample_size),
                time_to_kill_minutes: k
                    .map(|k| r2((k.killed_at - k.posted_at).max(0) as f64 / MINUTE_MS as f64)),
                posted_at: post.map(|p| p.posted_at),
                pattern_used: post.and_then(|p| p.pattern.clone()),
                variant_id: vid,
            }
        })
        .collect();

    RawSnapshot {
        offset,
        now,
        summary,
        active_variants: shown,
        active_variants_truncated: truncated,
        patterns,
        recent_kills,
    }
}

#[cfg(test)]
mod tests;
