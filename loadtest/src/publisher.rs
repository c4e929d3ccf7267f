//! The publisher: sends at a fixed rate for a fixed time whatever the
//! replies do (open loop), round-robin over the personas, each message
//! stamped with its per-persona sequence number and the time it was sent.
//! Transports: raw `PUBLISH` or `FCALL pulse_ingest` pipelined on one Redis
//! connection, or pipelined keep-alive HTTP `POST`s.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::histo;
use crate::http_client;
use crate::pool::Counter;
use crate::resp::{self, Reply};
use crate::scenario::{HttpBody, Plan, Publish};
use crate::target::{fill, Url};

/// Marks the readiness probe published until every generic subscriber has one.
pub const PROBE_MARK: &[u8] = b"\"lt_probe\"";
const PROBE_BODY: &[u8] = b"{\"type\":\"lt_probe\"}";
/// `performance_update`s rotate over this many variants per persona. The
/// gateway conflates queued updates of one variant for lagging clients, so
/// with one variant a client a single message behind already loses seqs;
/// with 64 it must be 64 messages behind.
const VARIANTS: u64 = 64;
/// Most messages sent in one tick; more wait for the next.
const MAX_BATCH: u64 = 20_000;
const TICK: Duration = Duration::from_millis(1);

/// Publisher-side counters.
#[derive(Debug, Default)]
pub struct PubStats {
    pub sent: Counter,
    pub replies: Counter,
    pub errors: Counter,
    /// Sum of `PUBLISH` replies: how many Redis subscribers got each message.
    pub receivers: Counter,
    pub first_error: Mutex<Option<String>>,
}

impl PubStats {
    fn error(&self, e: String) {
        self.errors.inc();
        let mut first = self.first_error.lock().expect("first error");
        if first.is_none() {
            *first = Some(e);
        }
    }
}

/// What the publish phase did.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct PubReport {
    /// Messages per persona (seqs 1..=n were sent).
    pub published: Vec<u64>,
    pub sent: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Average Redis receivers per PUBLISH (raw mode).
    pub receivers_per_publish: Option<f64>,
    pub elapsed_s: f64,
    /// How far behind its schedule the publisher was, per tick (µs).
    pub lag_p99_us: u64,
    pub lag_max_us: u64,
}

enum Transport {
    Redis(resp::Writer),
    Http(tokio::net::tcp::OwnedWriteHalf),
}

pub struct Publisher {
    plan: Plan,
    transport: Transport,
    /// Per persona: channel (raw), key (ingest) or request path (http).
    targets: Vec<String>,
    personas: Vec<String>,
    http_host: String,
    seq: Vec<u64>,
    pub stats: Arc<PubStats>,
    replies: JoinHandle<()>,
    probes: u64,
}

impl Publisher {
    /// Connects and prepares (for `ingest`: checks the function exists and
    /// posts the run's variant on every persona).
    pub async fn connect(plan: &Plan) -> anyhow::Result<Self> {
        let personas: Vec<String> = (0..plan.personas).map(|p| plan.persona(p)).collect();
        let stats = Arc::new(PubStats::default());
        let (transport, targets, http_host, replies) = match plan.publish {
            Publish::Raw | Publish::Ingest => {
                let (mut r, mut w) = resp::connect(&plan.redis, plan.allow_remote).await?;
                let targets = if plan.publish == Publish::Raw {
                    personas.iter().map(|p| fill(&plan.channel, p)).collect()
                } else {
                    prepare_ingest(plan, &personas, &mut r, &mut w).await?
                };
                let s = stats.clone();
                let replies = tokio::spawn(redis_replies(r, s));
                (Transport::Redis(w), targets, String::new(), replies)
            }
            Publish::Http => {
                let url = Url::parse(plan.http_url.as_deref().context("--http-url")?)?;
                let addr = url.resolve(plan.allow_remote)?;
                let stream = http_client::connect(&addr, None)?
                    .await
                    .context("HTTP publishing")?;
                let (r, w) = stream.into_split();
                let targets = personas.iter().map(|p| fill(&url.path, p)).collect();
                let s = stats.clone();
                let replies = tokio::spawn(http_replies(r, s));
                (Transport::Http(w), targets, url.host_header(), replies)
            }
        };
        let mut publisher = Self {
            plan: plan.clone(),
            transport,
            targets,
            personas,
            http_host,
            seq: vec![0; plan.personas as usize],
            stats,
            replies,
            probes: 0,
        };
        if plan.publish == Publish::Http && plan.http_body == HttpBody::PerformanceUpdate {
            publisher.post_variants().await?;
        }
        Ok(publisher)
    }

    /// For pulsegate's `POST /api/events/performance-update`: posts the run's
    /// variants through `variant-posted` next to it, and waits for every answer.
    async fn post_variants(&mut self) -> anyhow::Result<()> {
        let mut buf = Vec::new();
        let mut count = 0;
        for p in 0..self.personas.len() {
            for v in 0..VARIANTS {
                let body = format!(
                    r#"{{"persona_id":"{}","variant_id":"lt{v}","content":"load test","predicted_er":0.05}}"#,
                    self.personas[p]
                );
                let path = self.targets[p].replace("performance-update", "variant-posted");
                self.http_request_to(&mut buf, &path, body.as_bytes());
                count += 1;
            }
        }
        self.write(&buf).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.stats.replies.get() < count && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Some(e) = self.stats.first_error.lock().expect("first error").clone() {
            bail!("posting the run's variants failed: {e}");
        }
        if self.stats.replies.get() < count {
            bail!("posting the run's variants: no answer within 10 s");
        }
        Ok(())
    }

    /// Publishes one probe on every persona (not counted as a message).
    /// For `ingest`, probes go out as raw PUBLISH on the channel.
    pub async fn probe(&mut self) -> anyhow::Result<()> {
        let mut buf = Vec::new();
        for p in 0..self.personas.len() {
            match self.transport {
                Transport::Redis(_) => {
                    let channel = fill(&self.plan.channel, &self.personas[p]);
                    resp::encode(&mut buf, &[b"PUBLISH", channel.as_bytes(), PROBE_BODY]);
                }
                Transport::Http(_) => self.http_request(&mut buf, p, PROBE_BODY),
            }
        }
        self.probes += self.personas.len() as u64;
        self.write(&buf).await
    }

    /// Publishes at the plan's rate for its duration (plus bursts).
    pub async fn run(&mut self, on_tick: impl FnMut(f64, u64)) -> anyhow::Result<PubReport> {
        self.run_until(&CancellationToken::new(), on_tick).await
    }

    /// [`Self::run`], ending early once `stop` is cancelled: the schedule
    /// stops where it stands (the duration stays the upper bound).
    pub async fn run_until(
        &mut self,
        stop: &CancellationToken,
        mut on_tick: impl FnMut(f64, u64),
    ) -> anyhow::Result<PubReport> {
        let rate = self.plan.rate;
        let duration = Duration::from_secs_f64(self.plan.duration_s);
        let mut steady_total = (rate * self.plan.duration_s).round() as u64;
        let base_replies = self.stats.replies.get();
        let base_receivers = self.stats.receivers.get();
        let mut lag = histo::new_hist();
        let mut steady_sent = 0u64;
        let mut bursts_due = 0u64;
        let mut next_burst = self.plan.burst.as_ref().map(|b| b.every_s);
        let mut buf = Vec::with_capacity(256 * 1024);
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let t0 = Instant::now();
        loop {
            ticker.tick().await;
            let stopped = stop.is_cancelled();
            if stopped {
                steady_total = steady_sent;
                bursts_due = 0;
            }
            let el = t0.elapsed();
            let secs = el.as_secs_f64();
            let target = ((secs * rate) as u64).min(steady_total);
            if let (Some(b), Some(at)) = (&self.plan.burst, next_burst) {
                if secs >= at && at < self.plan.duration_s {
                    bursts_due += b.size as u64;
                    next_burst = Some(at + b.every_s);
                }
            }
            let due = (target - steady_sent + bursts_due).min(MAX_BATCH);
            if due > 0 {
                // Lag: now minus when the oldest message now due was scheduled.
                if rate > 0.0 && target > steady_sent {
                    let scheduled = steady_sent as f64 / rate;
                    lag.saturating_record(((secs - scheduled).max(0.0) * 1e6) as u64);
                }
                buf.clear();
                self.build(&mut buf, due);
                self.write(&buf).await?;
                let from_steady = due.min(target - steady_sent);
                steady_sent += from_steady;
                bursts_due -= due - from_steady;
                self.stats.sent.add(due);
            }
            on_tick(secs, self.stats.sent.get());
            if (el >= duration || stopped) && steady_sent >= steady_total && bursts_due == 0 {
                break;
            }
        }
        let elapsed_s = t0.elapsed().as_secs_f64();
        // Wait (bounded) for every reply, so `published` is final.
        let want = base_replies + self.stats.sent.get();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.stats.replies.get() < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let replies = self.stats.replies.get() - base_replies;
        if replies < self.stats.sent.get() {
            self.stats.error(format!(
                "only {replies} of {} publish replies arrived within 10 s",
                self.stats.sent.get()
            ));
        }
        let receivers = self.stats.receivers.get() - base_receivers;
        Ok(PubReport {
            published: self.seq.clone(),
            sent: self.stats.sent.get(),
            errors: self.stats.errors.get(),
            first_error: self.stats.first_error.lock().expect("first error").clone(),
            receivers_per_publish: (self.plan.publish == Publish::Raw && replies > 0)
                .then(|| receivers as f64 / replies as f64),
            elapsed_s,
            lag_p99_us: lag.value_at_quantile(0.99),
            lag_max_us: lag.max(),
        })
    }

    /// Appends `n` messages, continuing the round-robin.
    fn build(&mut self, buf: &mut Vec<u8>, n: u64) {
        let now_ns = crate::clock::now_ns();
        let mut body = Vec::with_capacity(self.plan.payload_bytes + 64);
        let total_before: u64 = self.seq.iter().sum();
        for k in 0..n {
            let p = ((total_before + k) % self.personas.len() as u64) as usize;
            self.seq[p] += 1;
            let seq = self.seq[p];
            body.clear();
            self.body(&mut body, p, seq, now_ns);
            match self.plan.publish {
                Publish::Raw => {
                    resp::encode(buf, &[b"PUBLISH", self.targets[p].as_bytes(), &body]);
                }
                Publish::Ingest => resp::encode(
                    buf,
                    &[
                        b"FCALL",
                        b"pulse_ingest",
                        b"1",
                        self.targets[p].as_bytes(),
                        &body,
                    ],
                ),
                Publish::Http => self.http_request(buf, p, &body),
            }
        }
    }

    fn body(&self, out: &mut Vec<u8>, p: usize, seq: u64, now_ns: u64) {
        use std::io::Write;
        let ingest_shape = self.plan.publish == Publish::Ingest
            || self.plan.http_body == HttpBody::PerformanceUpdate;
        if ingest_shape {
            let _ = write!(
                out,
                r#"{{"type":"performance_update","variant_id":"lt{}","view_count":{seq},"interaction_count":0,"ts":{}"#,
                seq % VARIANTS,
                now_ns / 1_000_000
            );
            if self.plan.publish == Publish::Http {
                let _ = write!(out, r#","persona_id":"{}""#, self.personas[p]);
            }
            out.push(b'}');
            return;
        }
        // seq and sent_ns first, so the subscriber's scan stops early.
        let _ = write!(
            out,
            r#"{{"type":"loadtest","seq":{seq},"sent_ns":{now_ns},"pad":""#
        );
        let pad = self.plan.payload_bytes.saturating_sub(out.len() + 2);
        out.resize(out.len() + pad, b'x');
        out.extend_from_slice(b"\"}");
    }

    fn http_request(&self, buf: &mut Vec<u8>, p: usize, body: &[u8]) {
        self.http_request_to(buf, &self.targets[p], body);
    }

    fn http_request_to(&self, buf: &mut Vec<u8>, path: &str, body: &[u8]) {
        let json = [("Content-Type", "application/json")];
        http_client::write_request(buf, "POST", path, &self.http_host, &json, Some(body));
    }

    async fn write(&mut self, buf: &[u8]) -> anyhow::Result<()> {
        match &mut self.transport {
            Transport::Redis(w) => w.write_all(buf).await.context("write to Redis"),
            Transport::Http(w) => w.write_all(buf).await.context("write HTTP requests"),
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.replies.abort();
    }
}

/// Checks `pulse_ingest` exists and posts the run's variant on each persona.
/// Returns the `KEYS[1]` of each persona.
async fn prepare_ingest(
    plan: &Plan,
    personas: &[String],
    r: &mut resp::Reader,
    w: &mut resp::Writer,
) -> anyhow::Result<Vec<String>> {
    let list = resp::call(r, w, &[b"FUNCTION", b"LIST"]).await?;
    if let Reply::Error(e) = &list {
        bail!("FUNCTION LIST failed: {e}");
    }
    if !list.contains_str("pulse_ingest") {
        bail!(
            "Redis has no `pulse_ingest` function: --publish ingest needs the gateway's \
             library loaded (redis-cli -x FUNCTION LOAD REPLACE < lua/pulse.lua), or use --publish raw"
        );
    }
    let mut keys = Vec::new();
    for p in personas {
        let key = format!("{}:{{{p}}}", plan.key_prefix);
        for v in 0..VARIANTS {
            let event = format!(
                r#"{{"type":"variant_posted","variant_id":"lt{v}","content":"load test","predicted_er":0.05}}"#
            );
            let args: [&[u8]; 5] = [
                b"FCALL",
                b"pulse_ingest",
                b"1",
                key.as_bytes(),
                event.as_bytes(),
            ];
            if let Reply::Error(e) = resp::call(r, w, &args).await? {
                bail!("pulse_ingest variant_posted on {key}: {e}");
            }
        }
        keys.push(key);
    }
    Ok(keys)
}

async fn redis_replies(mut r: resp::Reader, stats: Arc<PubStats>) {
    loop {
        match resp::read_reply(&mut r).await {
            Ok(Reply::Int(n)) => stats.receivers.add(n.max(0) as u64),
            Ok(Reply::Error(e)) => stats.error(e),
            Ok(_) => {}
            Err(e) => {
                stats.error(format!("Redis connection: {e:#}"));
                return;
            }
        }
        stats.replies.inc();
    }
}

/// Reads the pipelined HTTP responses, in order; any status other than 2xx
/// is an error. The publish connection is kept alive for the whole run, so
/// a server that closes it (or answers garbage) ends the replies.
async fn http_replies(mut r: tokio::net::tcp::OwnedReadHalf, stats: Arc<PubStats>) {
    let mut responses = http_client::Responses::with_capacity(64 * 1024);
    loop {
        match responses.next(&mut r).await {
            Ok(resp) => {
                if !(200..300).contains(&resp.status) {
                    stats.error(format!("HTTP publish answered {}", resp.status));
                }
                stats.replies.inc();
                if resp.close {
                    stats.error("the server closed the HTTP publish connection".into());
                    return;
                }
            }
            Err(e) => {
                stats.error(format!("HTTP publish connection: {e:#}"));
                return;
            }
        }
    }
}
