//! How far the audit trail is behind: un-audited entries (undelivered lag +
//! pending) and the age of the oldest, per stream, summed for `/metrics` and
//! `/readyz`. Also whether Postgres took the last batch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::prelude::*;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, PersonaLabel};
use crate::stream::parse_offset;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub enabled: bool,
    pub postgres: Option<bool>,
    pub last_error: Option<String>,
    pub streams: usize,
    pub lag_entries: u64,
    pub lag_seconds: f64,
    /// This instance's totals since it started: new rows written,
    /// transactions committed, the size of the last one, and failures
    /// (failed batch attempts and failed Redis commands).
    pub rows_written: u64,
    pub batches: u64,
    pub last_batch_size: u64,
    pub failures: u64,
    /// Entries trimmed from their stream before they were audited, since
    /// this instance started (each recorded as a `lost` row).
    pub lost: u64,
    /// The personas furthest behind (at most [`WORST`]), oldest entry first.
    pub behind: Vec<PersonaLag>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PersonaLag {
    pub persona: String,
    pub lag_entries: u64,
    pub lag_seconds: f64,
}

/// How many personas `/readyz` and `/metrics` name: enough to see who is
/// behind, few enough to keep the metric's labels bounded.
pub const WORST: usize = 5;

#[derive(Default)]
pub struct AuditStatus {
    state: Mutex<Snapshot>,
    stream_keys: Mutex<Vec<String>>,
}

impl AuditStatus {
    pub fn enabled() -> Self {
        let s = Self::default();
        s.lock().enabled = true;
        s
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> Snapshot {
        self.lock().clone()
    }

    pub fn set_postgres(&self, up: bool, error: Option<String>) {
        let mut s = self.lock();
        s.postgres = Some(up);
        if error.is_some() || up {
            s.last_error = error;
        }
    }

    pub fn batch_committed(&self, rows: u64, inserted: u64) {
        let mut s = self.lock();
        s.rows_written += inserted;
        s.batches += 1;
        s.last_batch_size = rows;
    }

    pub fn failed(&self) {
        self.lock().failures += 1;
    }

    pub fn add_lost(&self, n: u64) {
        self.lock().lost += n;
    }

    pub fn set_streams(&self, keys: Vec<String>) {
        self.lock().streams = keys.len();
        *self.stream_keys.lock().unwrap_or_else(|e| e.into_inner()) = keys;
    }

    fn keys(&self) -> Vec<String> {
        self.stream_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Measures the lag every `interval` until cancelled.
pub async fn run(
    redis: Client,
    group: String,
    status: Arc<AuditStatus>,
    metrics: Arc<Metrics>,
    interval: Duration,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = cancel.cancelled() => return,
        }
        let mut entries = 0u64;
        let mut streams = Vec::new();
        for key in status.keys() {
            match stream_lag(&redis, &key, &group).await {
                Ok((n, oldest)) => {
                    entries += n;
                    if n > 0 {
                        streams.push((key, n, oldest));
                    }
                }
                Err(e) => tracing::debug!(%key, error = %e, "cannot measure audit lag"),
            }
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut behind: Vec<PersonaLag> = streams
            .into_iter()
            .map(|(key, n, oldest)| PersonaLag {
                persona: persona_of_key(&key),
                lag_entries: n,
                lag_seconds: oldest.map_or(0.0, |o| now_ms.saturating_sub(o) as f64 / 1000.0),
            })
            .collect();
        behind.sort_by(|a, b| {
            b.lag_seconds
                .total_cmp(&a.lag_seconds)
                .then(b.lag_entries.cmp(&a.lag_entries))
        });
        behind.truncate(WORST);
        let seconds = behind.first().map_or(0.0, |p| p.lag_seconds);
        metrics.audit_lag_entries.set(entries as i64);
        metrics.audit_lag_seconds.set(seconds);
        metrics.audit_persona_lag_seconds.clear();
        for p in &behind {
            metrics
                .audit_persona_lag_seconds
                .get_or_create(&PersonaLabel {
                    persona: p.persona.clone(),
                })
                .set(p.lag_seconds);
        }
        let mut s = status.lock();
        s.lag_entries = entries;
        s.lag_seconds = seconds;
        s.behind = behind;
    }
}

/// `pulse:{abc}:stream` → `abc` (whatever the prefix).
fn persona_of_key(key: &str) -> String {
    key.split_once(":{")
        .and_then(|(_, rest)| rest.rsplit_once("}:"))
        .map_or_else(|| key.to_owned(), |(p, _)| p.to_owned())
}

/// (un-audited entries, time of the oldest in ms) of one stream.
async fn stream_lag(
    redis: &Client,
    key: &str,
    group: &str,
) -> Result<(u64, Option<u64>), fred::error::Error> {
    let groups: Vec<HashMap<String, Value>> = redis.xinfo_groups(key).await?;
    let Some(g) = groups
        .iter()
        .find(|g| g.get("name").and_then(|v| v.as_str()).as_deref() == Some(group))
    else {
        return Ok((0, None));
    };
    let pending = g.get("pending").and_then(|v| v.as_u64()).unwrap_or(0);
    let lag = g.get("lag").and_then(|v| v.as_u64()).unwrap_or(0);
    let mut oldest = None;
    if pending > 0 {
        let summary: Value = redis.xpending(key, group, ()).await?;
        if let Value::Array(parts) = summary {
            oldest = parts
                .get(1)
                .and_then(|v| v.as_str())
                .and_then(|s| parse_offset(&s))
                .map(|o| o.0);
        }
    } else if lag > 0 {
        if let Some(last) = g.get("last-delivered-id").and_then(|v| v.as_str()) {
            // Only the id is used: the fields stay undecoded bytes.
            let next: Vec<(String, Value)> =
                redis.xrange(key, format!("({last}"), "+", Some(1)).await?;
            oldest = next
                .first()
                .and_then(|(id, _)| parse_offset(id))
                .map(|o| o.0);
        }
    }
    Ok((lag + pending, oldest))
}
