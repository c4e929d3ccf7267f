//! One runtime sample: the figures of `system:runtime` (DECISIONS #9) and
//! its encoding, `{"type":"runtime","timestamp":"<RFC 3339>","data":{...}}`.
//! Rates are the change of a running total between two readings, per second
//! of the time between them.

use std::sync::Arc;

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::time::Instant;

use super::procfs;
use crate::audit::status::AuditStatus;
use crate::hub::registry::Connections;
use crate::metrics::Metrics;
use crate::redis::health::RedisStatus;

/// Where a sample's figures come from: handles the gateway already keeps.
pub struct Sources {
    pub metrics: Arc<Metrics>,
    pub connections: Arc<Connections>,
    pub redis_status: Arc<RedisStatus>,
    pub audit: Arc<AuditStatus>,
    /// The machine's memory, read once (`None` when `/proc` cannot say).
    pub mem_total: Option<u64>,
}

/// The running totals a rate is computed from, at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Totals {
    at: Instant,
    cpu_seconds: f64,
    messages_in: u64,
    deliveries: u64,
    refusals: u64,
    errors: u64,
}

/// The `data` of a sample; field names settled in DECISIONS #9.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sample {
    /// Of one core, as `top` shows it: a busy gateway on 4 cores may show 400.
    pub cpu_percent: f64,
    pub memory_mb: f64,
    pub memory_percent: f64,
    pub thread_count: u64,
    pub connections: usize,
    pub subscriptions: i64,
    pub messages_in_per_s: f64,
    pub deliveries_per_s: f64,
    pub outbox_depth_max: usize,
    pub outbox_depth_mean: f64,
    /// Since the gateway started (a total: each is a client closed with 4008).
    pub slow_disconnects: u64,
    pub rate_limited_per_s: f64,
    pub errors_per_s: f64,
    /// `up` or `down`.
    pub redis: &'static str,
    /// `up`, `down`, `unknown` (no batch tried yet) or `off` (no audit here).
    pub postgres: &'static str,
    /// `null` when this instance runs no audit.
    pub audit_lag_seconds: Option<f64>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: String,
    data: &'a Sample,
}

impl Sources {
    /// The running totals now.
    pub fn totals(&self) -> Totals {
        self.read().0
    }

    /// The running totals and the process's figures, from one `/proc` read.
    fn read(&self) -> (Totals, procfs::Process) {
        let m = &self.metrics;
        let process = procfs::process().unwrap_or_default();
        let totals = Totals {
            at: Instant::now(),
            cpu_seconds: process.cpu_seconds,
            messages_in: m.redis_messages_received.get(),
            deliveries: m.frames_sent.get(),
            refusals: m.runtime.refusals.get(),
            errors: m.runtime.errors.get(),
        };
        (totals, process)
    }

    /// A sample with its rates over the time since `before`; also returns
    /// the totals it read, the next sample's `before`.
    pub fn sample(&self, before: &Totals) -> (Sample, Totals) {
        let (now, process) = self.read();
        let secs = now.at.duration_since(before.at).as_secs_f64();
        let rate = |a: u64, b: u64| {
            if secs > 0.0 {
                round2(a.saturating_sub(b) as f64 / secs)
            } else {
                0.0
            }
        };
        let cpu = if secs > 0.0 {
            ((now.cpu_seconds - before.cpu_seconds).max(0.0) / secs) * 100.0
        } else {
            0.0
        };
        let (depth_max, depth_mean) = self.connections.depths();
        let audit = self.audit.snapshot();
        let m = &self.metrics;
        let sample = Sample {
            cpu_percent: round1(cpu),
            memory_mb: round1(process.rss_bytes as f64 / (1024.0 * 1024.0)),
            memory_percent: self.mem_total.map_or(0.0, |total| {
                round2(process.rss_bytes as f64 * 100.0 / total.max(1) as f64)
            }),
            thread_count: process.threads,
            connections: self.connections.len(),
            subscriptions: m.subscriptions_active.get(),
            messages_in_per_s: rate(now.messages_in, before.messages_in),
            deliveries_per_s: rate(now.deliveries, before.deliveries),
            outbox_depth_max: depth_max,
            outbox_depth_mean: round2(depth_mean),
            slow_disconnects: m.slow_disconnects.get(),
            rate_limited_per_s: rate(now.refusals, before.refusals),
            errors_per_s: rate(now.errors, before.errors),
            redis: if self.redis_status.is_up() {
                "up"
            } else {
                "down"
            },
            postgres: match (audit.enabled, audit.postgres) {
                (false, _) => "off",
                (true, None) => "unknown",
                (true, Some(true)) => "up",
                (true, Some(false)) => "down",
            },
            audit_lag_seconds: audit.enabled.then(|| round2(audit.lag_seconds)),
        };
        m.runtime.samples.inc();
        (sample, now)
    }
}

impl Sample {
    /// The message as every watcher gets it (encoded once per sample).
    pub fn encode(&self) -> Vec<u8> {
        let now = OffsetDateTime::now_utc();
        // Milliseconds are enough, and keep the timestamp short.
        let now = now
            .replace_nanosecond(u32::from(now.millisecond()) * 1_000_000)
            .unwrap_or(now);
        let envelope = Envelope {
            kind: "runtime",
            timestamp: now.format(&Rfc3339).unwrap_or_default(),
            data: self,
        };
        // Plain numbers and strings: serializing cannot fail.
        serde_json::to_vec(&envelope).unwrap_or_default()
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_settled_shape() {
        let s = Sample {
            cpu_percent: 1.5,
            memory_mb: 12.3,
            memory_percent: 0.15,
            thread_count: 3,
            connections: 2,
            subscriptions: 4,
            messages_in_per_s: 10.0,
            deliveries_per_s: 20.0,
            outbox_depth_max: 1,
            outbox_depth_mean: 0.5,
            slow_disconnects: 0,
            rate_limited_per_s: 0.0,
            errors_per_s: 0.25,
            redis: "up",
            postgres: "off",
            audit_lag_seconds: None,
        };
        let v: serde_json::Value = serde_json::from_slice(&s.encode()).unwrap();
        assert_eq!(v["type"], "runtime");
        let ts = v["timestamp"].as_str().unwrap();
        assert!(crate::time::parse_rfc3339_ms(ts).is_some(), "{ts}");
        let keys: Vec<&str> = v["data"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = vec![
            "cpu_percent",
            "memory_mb",
            "memory_percent",
            "thread_count",
            "connections",
            "subscriptions",
            "messages_in_per_s",
            "deliveries_per_s",
            "outbox_depth_max",
            "outbox_depth_mean",
            "slow_disconnects",
            "rate_limited_per_s",
            "errors_per_s",
            "redis",
            "postgres",
            "audit_lag_seconds",
        ];
        want.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, want);
        assert!(v["data"]["audit_lag_seconds"].is_null());
    }
}
