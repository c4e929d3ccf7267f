//! The rolling-restart clients of one process: their shared state (target,
//! counters, latency histograms), the ramp that starts them, and the result
//! they fold into once each is judged against its channel's stream.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::client::{self, Outcome};
use super::ledger::{self, Verdict};
use crate::histo::{self, Hist};
use crate::pool::{Counter, Marks};
use crate::scenario::{Mode, Plan};
use crate::ws_client::WsTarget;

/// Latency histograms are sharded by client, so a batch locks one of these
/// and not one lock every client shares.
const SHARDS: usize = 16;
/// Clients with an anomaly kept by name in the result, per process.
const MAX_ANOMALIES: usize = 100;

/// A count that goes both ways (connections open now).
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed).max(0) as u64
    }
}

/// Live counters, read by the progress bar (and sent up by workers).
#[derive(Debug, Default)]
pub struct Progress {
    pub upgraded: Counter,
    /// Clients that got their first snapshot.
    pub started: Counter,
    pub connected: Gauge,
    pub delivered: Counter,
    pub closes: Counter,
    pub reconnects: Counter,
    pub connect_failures: Counter,
    pub eof: Counter,
}

#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub struct ProgressSnapshot {
    pub upgraded: u64,
    pub started: u64,
    pub connected: u64,
    pub delivered: u64,
    pub closes: u64,
    pub reconnects: u64,
    pub connect_failures: u64,
    pub eof: u64,
}

impl ProgressSnapshot {
    pub fn add(&mut self, o: &Self) {
        self.upgraded += o.upgraded;
        self.started += o.started;
        self.connected += o.connected;
        self.delivered += o.delivered;
        self.closes += o.closes;
        self.reconnects += o.reconnects;
        self.connect_failures += o.connect_failures;
        self.eof += o.eof;
    }
}

/// Delivery latency by whom it reached, microseconds.
pub struct LatencyHists {
    /// Live events (published while the connection was up), no restart running.
    pub steady: Hist,
    /// Live events while the rolling restart runs: the clients not being
    /// moved at that moment.
    pub restarting: Hist,
    /// Events published before the connection that got them was up: the
    /// replay after a resume.
    pub replayed: Hist,
}

/// The rare timings, microseconds.
pub struct Timings {
    pub first_connect: Mutex<Hist>,
    /// Connection lost (close received) → upgraded again, the wait included.
    pub reconnect: Mutex<Hist>,
    /// The wait chosen before reconnecting (hint + jitter, or backoff).
    pub wait: Mutex<Hist>,
    /// End of that wait → upgraded again (failed connects included).
    pub after_wait: Mutex<Hist>,
}

/// State every client task of this process shares.
pub struct Shared {
    pub plan: Plan,
    /// The instances (one: the balancer); see [`crate::target::pick`].
    targets: Vec<WsTarget>,
    /// `/ws` (subscribe by message) rather than `/dashboard/ws/{persona}`.
    pub mux: bool,
    /// The target URL's path, without a trailing slash.
    base: String,
    pub marks: Marks,
    pub progress: Progress,
    pub stop: CancellationToken,
    restarting: AtomicBool,
    latency: Vec<Mutex<LatencyHists>>,
    pub timings: Timings,
    close_codes: Mutex<BTreeMap<u16, u64>>,
    errors: Mutex<Vec<String>>,
}

impl Shared {
    pub fn new(plan: Plan) -> anyhow::Result<Self> {
        let urls = crate::target::parse_list(&plan.target)?;
        let targets = urls
            .iter()
            .map(|u| WsTarget::resolve(u, plan.allow_remote))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let url = &urls[0];
        let hists = || LatencyHists {
            steady: histo::new_hist(),
            restarting: histo::new_hist(),
            replayed: histo::new_hist(),
        };
        Ok(Self {
            marks: Marks::for_plan(&plan),
            mux: plan.mode == Mode::PulsegateMux,
            base: url.path.trim_end_matches('/').to_string(),
            plan,
            targets,
            progress: Progress::default(),
            stop: CancellationToken::new(),
            restarting: AtomicBool::new(false),
            latency: (0..SHARDS).map(|_| Mutex::new(hists())).collect(),
            timings: Timings {
                first_connect: Mutex::new(histo::new_hist()),
                reconnect: Mutex::new(histo::new_hist()),
                wait: Mutex::new(histo::new_hist()),
                after_wait: Mutex::new(histo::new_hist()),
            },
            close_codes: Mutex::default(),
            errors: Mutex::default(),
        })
    }

    /// The request path: `/ws`, or `/dashboard/ws/<persona>[?since=<offset>]`.
    pub fn path(&self, persona: &str, since: Option<u64>) -> String {
        match (self.mux, since) {
            (true, _) => format!("{}/ws", self.base),
            (false, None) => format!("{}/dashboard/ws/{persona}", self.base),
            (false, Some(o)) => format!(
                "{}/dashboard/ws/{persona}?since={}",
                self.base,
                ledger::format(o)
            ),
        }
    }

    /// Where client `index` connects after `failures` failed connects in a row.
    pub fn target(&self, index: u32, failures: u32) -> &WsTarget {
        &self.targets[crate::target::pick(index, failures, self.targets.len())]
    }

    pub fn is_restarting(&self) -> bool {
        self.restarting.load(Ordering::Relaxed)
    }

    pub fn plan_jitter(&self) -> f64 {
        self.plan.rolling.as_ref().map_or(0.1, |r| r.jitter)
    }

    pub fn latency_shard(&self, index: u32) -> MutexGuard<'_, LatencyHists> {
        self.latency[index as usize % SHARDS]
            .lock()
            .expect("latency histograms")
    }

    pub fn record(&self, h: &Mutex<Hist>, d: Duration) {
        h.lock()
            .expect("timing histogram")
            .saturating_record(d.as_micros() as u64);
    }

    pub fn closed(&self, code: u16) {
        self.progress.closes.inc();
        *self
            .close_codes
            .lock()
            .expect("close codes")
            .entry(code)
            .or_default() += 1;
    }

    pub fn sample_error(&self, e: String) {
        let mut errors = self.errors.lock().expect("error samples");
        if errors.len() < 5 {
            errors.push(e);
        }
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        let p = &self.progress;
        ProgressSnapshot {
            upgraded: p.upgraded.get(),
            started: p.started.get(),
            connected: p.connected.get(),
            delivered: p.delivered.get(),
            closes: p.closes.get(),
            reconnects: p.reconnects.get(),
            connect_failures: p.connect_failures.get(),
            eof: p.eof.get(),
        }
    }
}

/// One client's verdict, kept by name when it is not clean.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientVerdict {
    pub client: u32,
    pub persona: String,
    pub reconnects: u32,
    pub refused_resumes: u32,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// Everything one process's clients measured.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct PoolResult {
    pub clients: u64,
    /// Clients that got a first snapshot (the others are not judged).
    pub started: u64,
    pub connected_at_end: u64,
    /// Sum over the clients judged.
    pub total: Verdict,
    pub clients_missed: u64,
    pub clients_late: u64,
    pub clients_unrecovered: u64,
    pub clients_duplicates: u64,
    pub clients_out_of_order: u64,
    pub worst_missed: u64,
    /// Clients that reconnected at least once.
    pub clients_moved: u64,
    pub reconnects: u64,
    pub hinted: u64,
    pub refused_resumes: u64,
    pub eof: u64,
    pub connect_failures: u64,
    pub errors: u64,
    pub close_codes: BTreeMap<u16, u64>,
    /// The first clients that were not clean.
    pub anomalies: Vec<ClientVerdict>,
    /// Base64 V2 histograms, microseconds.
    pub latency_steady: String,
    pub latency_restarting: String,
    pub latency_replayed: String,
    pub first_connect: String,
    pub reconnect: String,
    pub wait: String,
    pub after_wait: String,
    pub error_samples: Vec<String>,
    pub client: crate::procstat::ProcSample,
}

impl PoolResult {
    fn add(&mut self, index: u32, persona: String, o: &Outcome, stream: &[u64], floor: u64) {
        self.clients += 1;
        self.connected_at_end += o.connected_at_end as u64;
        self.clients_moved += (o.reconnects > 0) as u64;
        self.reconnects += o.reconnects as u64;
        self.hinted += o.hinted as u64;
        self.refused_resumes += o.refused_resumes as u64;
        self.eof += o.eof as u64;
        self.connect_failures += o.connect_failures as u64;
        self.errors += o.errors as u64;
        if !o.started {
            return;
        }
        self.started += 1;
        let v = o.ledger.verify(stream, floor);
        let t = &mut self.total;
        t.owed += v.owed;
        t.received += v.received;
        t.missed += v.missed;
        t.late += v.late;
        t.unrecovered += v.unrecovered;
        t.duplicates += v.duplicates;
        t.out_of_order += v.out_of_order;
        t.foreign += v.foreign;
        self.clients_missed += (v.missed > 0) as u64;
        self.clients_late += (v.late > 0) as u64;
        self.clients_unrecovered += (v.unrecovered > 0) as u64;
        self.clients_duplicates += (v.duplicates > 0) as u64;
        self.clients_out_of_order += (v.out_of_order > 0) as u64;
        self.worst_missed = self.worst_missed.max(v.missed);
        if !v.clean() && self.anomalies.len() < MAX_ANOMALIES {
            self.anomalies.push(ClientVerdict {
                client: index,
                persona,
                reconnects: o.reconnects,
                refused_resumes: o.refused_resumes,
                verdict: v,
            });
        }
    }

    /// Folds another process's result into this one (histograms decoded,
    /// merged and encoded again).
    pub fn merge(&mut self, o: &PoolResult) -> anyhow::Result<()> {
        self.clients += o.clients;
        self.started += o.started;
        self.connected_at_end += o.connected_at_end;
        let (t, u) = (&mut self.total, &o.total);
        t.owed += u.owed;
        t.received += u.received;
        t.missed += u.missed;
        t.late += u.late;
        t.unrecovered += u.unrecovered;
        t.duplicates += u.duplicates;
        t.out_of_order += u.out_of_order;
        t.foreign += u.foreign;
        self.clients_missed += o.clients_missed;
        self.clients_late += o.clients_late;
        self.clients_unrecovered += o.clients_unrecovered;
        self.clients_duplicates += o.clients_duplicates;
        self.clients_out_of_order += o.clients_out_of_order;
        self.worst_missed = self.worst_missed.max(o.worst_missed);
        self.clients_moved += o.clients_moved;
        self.reconnects += o.reconnects;
        self.hinted += o.hinted;
        self.refused_resumes += o.refused_resumes;
        self.eof += o.eof;
        self.connect_failures += o.connect_failures;
        self.errors += o.errors;
        for (k, v) in &o.close_codes {
            *self.close_codes.entry(*k).or_default() += v;
        }
        let room = MAX_ANOMALIES.saturating_sub(self.anomalies.len());
        self.anomalies
            .extend(o.anomalies.iter().take(room).cloned());
        for (mine, theirs) in [
            (&mut self.latency_steady, &o.latency_steady),
            (&mut self.latency_restarting, &o.latency_restarting),
            (&mut self.latency_replayed, &o.latency_replayed),
            (&mut self.first_connect, &o.first_connect),
            (&mut self.reconnect, &o.reconnect),
            (&mut self.wait, &o.wait),
            (&mut self.after_wait, &o.after_wait),
        ] {
            let mut h = if mine.is_empty() {
                histo::new_hist()
            } else {
                histo::decode(mine)?
            };
            histo::merge(&mut h, &histo::decode(theirs)?);
            *mine = histo::encode(&h);
        }
        let room = 5usize.saturating_sub(self.error_samples.len());
        self.error_samples
            .extend(o.error_samples.iter().take(room).cloned());
        Ok(())
    }
}

pub struct Pool {
    pub shared: Arc<Shared>,
    ramp: JoinHandle<Vec<JoinHandle<(u32, u32, Outcome)>>>,
}

impl Pool {
    /// Starts clients `range` (global indices) at the plan's ramp rate.
    pub fn start(plan: Plan, range: Range<u32>) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared::new(plan)?);
        let s = shared.clone();
        let ramp = tokio::spawn(async move {
            let gate = Arc::new(Semaphore::new(s.plan.connect_concurrency as usize));
            let total = range.len() as f64;
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
                let role = crate::pool::role(&s.plan, i);
                let s2 = s.clone();
                handles.push(tokio::spawn(async move {
                    let o = client::run(s2, i, role.persona, role.source, permit).await;
                    (i, role.persona, o)
                }));
            }
            handles
        });
        Ok(Self { shared, ramp })
    }

    pub fn set_restarting(&self, on: bool) {
        self.shared.restarting.store(on, Ordering::Relaxed);
    }

    /// Stops every client and judges each against its persona's stream ids
    /// (`floors`: each stream's last id before publishing began).
    pub async fn finish(self, streams: &[Vec<u64>], floors: &[u64]) -> PoolResult {
        self.shared.stop.cancel();
        let handles = self.ramp.await.unwrap_or_default();
        let mut r = PoolResult::default();
        for h in handles {
            let Ok((i, p, outcome)) = h.await else {
                continue;
            };
            let stream = streams.get(p as usize).map_or(&[][..], Vec::as_slice);
            let floor = floors.get(p as usize).copied().unwrap_or(0);
            r.add(i, self.shared.plan.persona(p), &outcome, stream, floor);
        }
        let s = &self.shared;
        let mut steady = histo::new_hist();
        let mut restarting = histo::new_hist();
        let mut replayed = histo::new_hist();
        for shard in &s.latency {
            let h = shard.lock().expect("latency histograms");
            histo::merge(&mut steady, &h.steady);
            histo::merge(&mut restarting, &h.restarting);
            histo::merge(&mut replayed, &h.replayed);
        }
        r.latency_steady = histo::encode(&steady);
        r.latency_restarting = histo::encode(&restarting);
        r.latency_replayed = histo::encode(&replayed);
        let t = &s.timings;
        r.first_connect = histo::encode(&t.first_connect.lock().expect("hist"));
        r.reconnect = histo::encode(&t.reconnect.lock().expect("hist"));
        r.wait = histo::encode(&t.wait.lock().expect("hist"));
        r.after_wait = histo::encode(&t.after_wait.lock().expect("hist"));
        r.close_codes = s.close_codes.lock().expect("close codes").clone();
        r.error_samples = s.errors.lock().expect("error samples").clone();
        r.client = crate::procstat::sample(std::process::id()).unwrap_or_default();
        r
    }
}
