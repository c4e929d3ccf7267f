//! A pool of subscribers in this process: assigns each one its persona,
//! group and source address, opens them at the ramp rate, counts progress in
//! atomics, and folds their outcomes into one serialisable result.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::histo::{self, Hist};
use crate::scenario::{HttpBody, Mode, Plan, Publish, PER_SOURCE_PORTS};
use crate::subscriber::{self, Group, Outcome, Role};
use crate::target::Url;
use crate::ws_client::WsTarget;

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Live counters, read by the progress bar (and sent up by workers).
#[derive(Debug, Default)]
pub struct Progress {
    pub upgraded: Counter,
    pub ready: Counter,
    pub failed: Counter,
    pub delivered: Counter,
    pub closed: Counter,
    pub reconnected: Counter,
}

#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub struct ProgressSnapshot {
    pub upgraded: u64,
    pub ready: u64,
    pub failed: u64,
    pub delivered: u64,
    pub closed: u64,
    pub reconnected: u64,
}

impl ProgressSnapshot {
    pub fn add(&mut self, o: &Self) {
        self.upgraded += o.upgraded;
        self.ready += o.ready;
        self.failed += o.failed;
        self.delivered += o.delivered;
        self.closed += o.closed;
        self.reconnected += o.reconnected;
    }
}

/// Where the sequence number and send time sit in a delivered frame.
pub struct Marks {
    seq: memchr::memmem::Finder<'static>,
    time: memchr::memmem::Finder<'static>,
    seq_len: usize,
    time_len: usize,
    /// Nanoseconds per unit of the time field.
    time_scale: u64,
}

impl Marks {
    pub fn for_plan(plan: &Plan) -> Self {
        let ingest_shape = plan.publish == Publish::Ingest
            || (plan.publish == Publish::Http && plan.http_body == HttpBody::PerformanceUpdate);
        // pulse_ingest re-encodes the event: `view_count` carries the seq
        // and `last_updated` the send time in milliseconds.
        let (seq, time, scale): (&'static [u8], &'static [u8], u64) = if ingest_shape {
            (b"\"view_count\":", b"\"last_updated\":", 1_000_000)
        } else {
            (b"\"seq\":", b"\"sent_ns\":", 1)
        };
        Self {
            seq: memchr::memmem::Finder::new(seq),
            time: memchr::memmem::Finder::new(time),
            seq_len: seq.len(),
            time_len: time.len(),
            time_scale: scale,
        }
    }

    pub fn seq(&self, text: &[u8]) -> Option<u64> {
        let at = self.seq.find(text)?;
        digits(&text[at + self.seq_len..])
    }

    pub fn sent_ns(&self, text: &[u8]) -> Option<u64> {
        let at = self.time.find(text)?;
        digits(&text[at + self.time_len..]).map(|t| t * self.time_scale)
    }
}

/// The unsigned integer at the start of `b` (after optional spaces).
pub(crate) fn digits(b: &[u8]) -> Option<u64> {
    let mut i = 0;
    while i < b.len() && b[i] == b' ' {
        i += 1;
    }
    let start = i;
    let mut v: u64 = 0;
    while i < b.len() && b[i].is_ascii_digit() && i - start < 20 {
        v = v.checked_mul(10)?.checked_add((b[i] - b'0') as u64)?;
        i += 1;
    }
    (i > start).then_some(v)
}

/// State every subscriber task of this process shares.
pub struct Shared {
    pub plan: Plan,
    pub ws: WsTarget,
    /// Request path with `{persona}`.
    path_template: String,
    pub marks: Marks,
    pub progress: Progress,
    /// Ends every subscriber.
    pub stop: CancellationToken,
    /// When publishing began (`None` before).
    start: watch::Sender<Option<Instant>>,
    pub connect_hist: Mutex<Hist>,
    pub ready_hist: Mutex<Hist>,
    pub reconnect_hist: Mutex<Hist>,
}

impl Shared {
    pub fn new(plan: Plan) -> anyhow::Result<Self> {
        if plan.target.contains(',') {
            anyhow::bail!("a list of targets is for the rolling-restart scenario only");
        }
        let url = Url::parse(&plan.target)?;
        let ws = WsTarget::resolve(&url, plan.allow_remote)?;
        let base = url.path.trim_end_matches('/');
        let path_template = match plan.mode {
            Mode::Pulsegate => format!("{base}/dashboard/ws/{{persona}}"),
            Mode::PulsegateMux => format!("{base}/ws"),
            Mode::Generic => url.path.clone(),
        };
        Ok(Self {
            marks: Marks::for_plan(&plan),
            plan,
            ws,
            path_template,
            progress: Progress::default(),
            stop: CancellationToken::new(),
            start: watch::channel(None).0,
            connect_hist: Mutex::new(histo::new_hist()),
            ready_hist: Mutex::new(histo::new_hist()),
            reconnect_hist: Mutex::new(histo::new_hist()),
        })
    }

    pub fn path(&self, persona: &str) -> String {
        crate::target::fill(&self.path_template, persona)
    }

    pub fn is_started(&self) -> bool {
        self.start.borrow().is_some()
    }

    /// Waits for the publish phase; returns when it began.
    pub async fn started(&self) -> Instant {
        let mut rx = self.start.subscribe();
        let got = rx.wait_for(Option::is_some).await;
        match got {
            Ok(v) => v.unwrap_or_else(Instant::now),
            Err(_) => Instant::now(),
        }
    }

    pub fn record_timing(&self, h: &Mutex<Hist>, d: Duration) {
        h.lock()
            .expect("timing histogram")
            .saturating_record(d.as_micros() as u64);
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        let p = &self.progress;
        ProgressSnapshot {
            upgraded: p.upgraded.get(),
            ready: p.ready.get(),
            failed: p.failed.get(),
            delivered: p.delivered.get(),
            closed: p.closed.get(),
            reconnected: p.reconnected.get(),
        }
    }
}

/// The role of global subscriber `i`.
pub fn role(plan: &Plan, i: u32) -> Role {
    let n = plan.subscribers as u64;
    let spread = |count: u64, phase: u64| -> bool {
        let i = i as u64;
        ((i + 1) * count + phase) / n > (i * count + phase) / n
    };
    let slow_count = plan
        .slow
        .as_ref()
        .map_or(0, |s| (s.fraction * n as f64).round() as u64);
    let group = if spread(slow_count, 0) {
        Group::Slow
    } else if plan
        .reconnect
        .as_ref()
        .is_some_and(|r| spread(r.count as u64, n / 2))
    {
        Group::Reconnect
    } else {
        Group::Normal
    };
    let reconnect_after = plan.reconnect.as_ref().map(|r| {
        // A fixed pseudo-random spot within the spread window.
        let frac = ((i as u64).wrapping_mul(2_654_435_761) % 1_000) as f64 / 1_000.0;
        Duration::from_secs_f64(r.at_s + frac * r.spread_ms as f64 / 1_000.0)
    });
    let source = (!plan.sources.is_empty()).then(|| {
        // Fill each address before the next, so every one stays under its port budget.
        let per = PER_SOURCE_PORTS.min(plan.subscribers.div_ceil(plan.sources.len() as u32));
        plan.sources[(i / per.max(1)) as usize % plan.sources.len()]
    });
    Role {
        persona: i % plan.personas,
        group,
        source,
        reconnect_after,
    }
}

pub struct Pool {
    pub shared: Arc<Shared>,
    ramp: JoinHandle<Vec<JoinHandle<(Role, Outcome)>>>,
}

impl Pool {
    /// Starts opening subscribers `range` (global indices) at the ramp rate.
    pub fn start(plan: Plan, range: Range<u32>) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared::new(plan)?);
        let s = shared.clone();
        let ramp = tokio::spawn(async move {
            let gate = Arc::new(Semaphore::new(s.plan.connect_concurrency as usize));
            let total = range.len() as f64;
            // This process's share of the ramp rate.
            let rate = s.plan.ramp_rate * total / s.plan.subscribers as f64;
            let t0 = tokio::time::Instant::now();
            let mut handles = Vec::with_capacity(range.len());
            for (k, i) in range.enumerate() {
                if rate > 0.0 {
                    tokio::time::sleep_until(t0 + Duration::from_secs_f64(k as f64 / rate)).await;
                }
                let permit = tokio::select! {
                    p = gate.clone().acquire_owned() => p.expect("semaphore open"),
                    _ = s.stop.cancelled() => break,
                };
                let role = role(&s.plan, i);
                let s2 = s.clone();
                handles.push(tokio::spawn(async move {
                    let outcome = subscriber::run(s2, role, permit).await;
                    (role, outcome)
                }));
            }
            handles
        });
        Ok(Self { shared, ramp })
    }

    /// Marks the start of the publish phase.
    pub fn begin_publishing(&self) {
        self.shared.start.send_replace(Some(Instant::now()));
    }

    /// Stops every subscriber and folds the outcomes, given how many messages
    /// each persona got in total.
    pub async fn finish(self, published: &[u64]) -> PoolResult {
        self.shared.stop.cancel();
        let handles = self.ramp.await.unwrap_or_default();
        let mut result = PoolResult::default();
        for h in handles {
            let Ok((role, outcome)) = h.await else {
                continue;
            };
            let published = published.get(role.persona as usize).copied().unwrap_or(0);
            result.group_mut(role.group).add(&outcome, published);
            if let Some(e) = &outcome.error {
                if result.error_samples.len() < 5 {
                    result.error_samples.push(e.clone());
                }
            }
        }
        result.latency = histo::encode(&histo::merged_latency());
        let s = &self.shared;
        result.connect = histo::encode(&s.connect_hist.lock().expect("hist"));
        result.ready = histo::encode(&s.ready_hist.lock().expect("hist"));
        result.reconnect_time = histo::encode(&s.reconnect_hist.lock().expect("hist"));
        result.client = crate::procstat::sample(std::process::id()).unwrap_or_default();
        result
    }
}

/// Delivery accounting of one group of subscribers.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct GroupStats {
    pub subscribers: u64,
    pub ready: u64,
    /// Subscribed only after publishing began.
    pub late: u64,
    pub failed: u64,
    pub expected: u64,
    pub unique: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub lost: u64,
    /// Published while reconnecting or before subscribing: not expected.
    pub skipped: u64,
    pub subscribers_with_loss: u64,
    pub max_lost_one_subscriber: u64,
    pub reconnects: u64,
    /// Close codes the server sent, with counts.
    pub close_codes: BTreeMap<u16, u64>,
    /// Connections the server ended without a close frame.
    pub eof: u64,
    pub errors: u64,
}

impl GroupStats {
    fn add(&mut self, o: &Outcome, published: u64) {
        self.subscribers += 1;
        if let Some(code) = o.close_code {
            *self.close_codes.entry(code).or_default() += 1;
        }
        self.eof += o.eof as u64;
        self.errors += o.error.is_some() as u64;
        self.reconnects += o.reconnects as u64;
        if !o.ready {
            self.failed += 1;
            return;
        }
        let t = &o.tracker;
        let lost = t.lost(published);
        self.ready += 1;
        self.late += o.late as u64;
        self.expected += published.saturating_sub(t.skipped);
        self.unique += t.unique;
        self.duplicates += t.duplicates;
        self.out_of_order += t.out_of_order;
        self.skipped += t.skipped;
        self.lost += lost;
        self.subscribers_with_loss += (lost > 0) as u64;
        self.max_lost_one_subscriber = self.max_lost_one_subscriber.max(lost);
    }

    pub fn merge(&mut self, o: &GroupStats) {
        self.subscribers += o.subscribers;
        self.ready += o.ready;
        self.late += o.late;
        self.failed += o.failed;
        self.expected += o.expected;
        self.unique += o.unique;
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
        self.lost += o.lost;
        self.skipped += o.skipped;
        self.subscribers_with_loss += o.subscribers_with_loss;
        self.max_lost_one_subscriber = self.max_lost_one_subscriber.max(o.max_lost_one_subscriber);
        self.reconnects += o.reconnects;
        for (k, v) in &o.close_codes {
            *self.close_codes.entry(*k).or_default() += v;
        }
        self.eof += o.eof;
        self.errors += o.errors;
    }

    /// Deliveries: distinct plus duplicate messages received.
    pub fn delivered(&self) -> u64 {
        self.unique + self.duplicates
    }
}

/// Everything one process's subscribers measured.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct PoolResult {
    pub normal: GroupStats,
    pub slow: GroupStats,
    pub reconnect: GroupStats,
    /// Base64 V2 histograms, microseconds.
    pub latency: String,
    pub connect: String,
    pub ready: String,
    pub reconnect_time: String,
    pub error_samples: Vec<String>,
    pub client: crate::procstat::ProcSample,
}

impl PoolResult {
    fn group_mut(&mut self, g: Group) -> &mut GroupStats {
        match g {
            Group::Normal => &mut self.normal,
            Group::Slow => &mut self.slow,
            Group::Reconnect => &mut self.reconnect,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_marks() {
        assert_eq!(digits(b"123,"), Some(123));
        assert_eq!(digits(b" 7}"), Some(7));
        assert_eq!(digits(b"x"), None);
    }
}
