//! The audit consumer: reads every persona stream through a Redis consumer
//! group (so N gateways share the work), writes batches to Postgres, and
//! acknowledges only after the transaction commits.
//!
//! - New streams are found by SCAN every `discover_interval`.
//! - On start, this consumer's own pending entries are read again first.
//! - Entries another consumer left pending for `claim_idle` are claimed.
//! - While Postgres is down the current batch is retried with backoff and
//!   nothing new is read: entries wait in Redis, in order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use tokio_util::sync::CancellationToken;

use super::entry::{self, AuditRow};
use super::status::AuditStatus;
use super::writer::{self, PgPool};
use crate::config::AuditConfig;
use crate::metrics::Metrics;

pub struct Consumer {
    pub redis: Client,
    pub pool: PgPool,
    pub prefix: String,
    pub cfg: AuditConfig,
    pub consumer: String,
    pub metrics: Arc<Metrics>,
    pub status: Arc<AuditStatus>,
    /// This worker follows the streams whose key hashes to `shard` of `shards`,
    /// so each stream has one writer (order kept) and batches of different
    /// personas are written in parallel.
    pub shard: usize,
    pub shards: usize,
}

/// Stream entries as fred returns them: (id, fields).
type Entries = Vec<(String, HashMap<String, String>)>;

/// Streams known to this consumer: key → persona id.
type Streams = BTreeMap<String, String>;

/// What a read brought: rows to write, and per stream the ids to acknowledge.
#[derive(Default)]
struct Batch {
    rows: Vec<AuditRow>,
    ids: HashMap<String, Vec<String>>,
    /// An entry can come both from our pending list and from a claim.
    seen: HashSet<(String, String)>,
}

impl Batch {
    fn len(&self) -> usize {
        self.ids.values().map(Vec::len).sum()
    }

    fn add(&mut self, key: &str, persona: &str, id: String, fields: HashMap<String, String>) {
        if !self.seen.insert((key.to_owned(), id.clone())) {
            return;
        }
        match entry::parse(persona, &id, fields) {
            Some(row) => self.rows.push(row),
            None => tracing::warn!(
                key,
                id,
                "stream entry with a malformed id; acknowledging it"
            ),
        }
        self.ids.entry(key.to_owned()).or_default().push(id);
    }
}

impl Consumer {
    pub async fn run(self, cancel: CancellationToken) {
        let mut streams = Streams::new();
        let mut last_discover: Option<Instant> = None;
        let mut last_claim = Instant::now();
        let mut own_pending_done: HashMap<String, bool> = HashMap::new();
        let mut idle = Duration::from_millis(10);
        loop {
            if cancel.is_cancelled() {
                return;
            }
            if last_discover.is_none_or(|t| t.elapsed() >= self.cfg.discover_interval) {
                self.discover(&mut streams).await;
                last_discover = Some(Instant::now());
            }
            let mut batch = Batch::default();
            // Our own entries left pending by a previous run come first.
            for (key, persona) in &streams {
                if !own_pending_done.get(key).copied().unwrap_or(false) {
                    match self.read(key, persona, "0", &mut batch).await {
                        Ok(0) => {
                            own_pending_done.insert(key.clone(), true);
                        }
                        Ok(_) => {}
                        Err(e) => self.redis_error("read pending", &e),
                    }
                }
            }
            if last_claim.elapsed() >= self.cfg.claim_idle / 2 {
                for (key, persona) in &streams {
                    if let Err(e) = self.claim(key, persona, &mut batch).await {
                        self.redis_error("claim", &e);
                    }
                }
                last_claim = Instant::now();
            }
            let mut lost = Vec::new();
            for (key, persona) in &streams {
                if batch.len() >= self.cfg.batch_size {
                    break;
                }
                if let Err(e) = self.read(key, persona, ">", &mut batch).await {
                    if e.details().contains("NOGROUP") {
                        // The stream and its group are gone (Redis lost its
                        // data): rediscover it so the group is created again.
                        lost.push(key.clone());
                    } else {
                        self.redis_error("read", &e);
                    }
                }
            }
            for key in lost {
                tracing::warn!(%key, "audit group missing; recreating it at the next discovery");
                streams.remove(&key);
                own_pending_done.remove(&key);
                last_discover = None;
            }
            if batch.len() == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(idle) => {}
                    _ = cancel.cancelled() => return,
                }
                idle = (idle * 2).min(self.cfg.poll_interval);
                continue;
            }
            idle = Duration::from_millis(10);
            if !self.commit(batch, &cancel).await {
                return;
            }
        }
    }

    /// Finds persona streams and makes sure each has the group.
    async fn discover(&self, streams: &mut Streams) {
        let pattern = format!("{}:{{*}}:stream", self.prefix);
        let mut cursor = "0".to_owned();
        let mut all = Vec::new();
        for _ in 0..10_000 {
            let page: Result<(String, Vec<String>), _> = self
                .redis
                .scan_page(cursor.clone(), pattern.clone(), Some(1000), None)
                .await;
            let (next, keys) = match page {
                Ok(p) => p,
                Err(e) => {
                    self.redis_error("discover", &e);
                    return;
                }
            };
            all.extend(
                keys.iter()
                    .filter(|k| persona_of(&self.prefix, k).is_some())
                    .cloned(),
            );
            for key in keys {
                if streams.contains_key(&key) || shard_of(&key, self.shards) != self.shard {
                    continue;
                }
                let Some(persona) = persona_of(&self.prefix, &key) else {
                    continue;
                };
                let created: Result<(), _> = self
                    .redis
                    .xgroup_create(key.as_str(), self.cfg.group.as_str(), "0", true)
                    .await;
                match created {
                    Ok(()) => tracing::info!(%key, group = %self.cfg.group, "audit group created"),
                    Err(e) if e.details().contains("BUSYGROUP") => {}
                    Err(e) => {
                        self.redis_error("create group", &e);
                        continue;
                    }
                }
                streams.insert(key, persona);
            }
            if next == "0" {
                break;
            }
            cursor = next;
        }
        if self.shard == 0 {
            // Shard 0 reports every stream (it sees them all in the scan).
            self.status.set_streams(all.clone());
            self.metrics.audit_streams.set(all.len() as i64);
        }
    }

    /// XREADGROUP from `id` (">" new, "0" our pending); returns entries read.
    async fn read(
        &self,
        key: &str,
        persona: &str,
        id: &str,
        batch: &mut Batch,
    ) -> Result<usize, fred::error::Error> {
        let room = self.cfg.batch_size.saturating_sub(batch.len()).max(1) as u64;
        let resp: HashMap<String, Entries> = self
            .redis
            .xreadgroup_map(
                self.cfg.group.as_str(),
                self.consumer.as_str(),
                Some(room),
                None,
                false,
                key,
                id,
            )
            .await?;
        let mut n = 0;
        for (_, entries) in resp {
            for (id, fields) in entries {
                batch.add(key, persona, id, fields);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Takes over entries idle for `claim_idle` (a crashed consumer's).
    async fn claim(
        &self,
        key: &str,
        persona: &str,
        batch: &mut Batch,
    ) -> Result<(), fred::error::Error> {
        let min_idle = self.cfg.claim_idle.as_millis() as u64;
        let (_, entries): (String, Entries) = self
            .redis
            .xautoclaim_values(
                key,
                self.cfg.group.as_str(),
                self.consumer.as_str(),
                min_idle,
                "0-0",
                Some(self.cfg.batch_size as u64),
                false,
            )
            .await?;
        if !entries.is_empty() {
            tracing::info!(
                key,
                claimed = entries.len(),
                "claimed entries left pending by another consumer"
            );
            self.metrics.audit_claimed.inc_by(entries.len() as u64);
        }
        for (id, fields) in entries {
            batch.add(key, persona, id, fields);
        }
        Ok(())
    }

    /// Writes the batch until it commits, then acknowledges it. Returns
    /// false if cancelled before the batch could be written.
    async fn commit(&self, batch: Batch, cancel: &CancellationToken) -> bool {
        let mut delay = Duration::from_millis(100);
        let started = Instant::now();
        loop {
            match writer::write(&self.pool, &batch.rows).await {
                Ok(inserted) => {
                    self.metrics.audit_rows_written.inc_by(inserted);
                    self.metrics
                        .audit_duplicates
                        .inc_by(batch.rows.len() as u64 - inserted.min(batch.rows.len() as u64));
                    self.metrics.audit_batches.inc();
                    self.metrics
                        .audit_batch_size
                        .observe(batch.rows.len() as f64);
                    self.metrics
                        .audit_batch_seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.status.set_postgres(true, None);
                    break;
                }
                Err(e) => {
                    self.metrics
                        .audit_failures
                        .get_or_create(&crate::metrics::ReasonLabel { reason: "postgres" })
                        .inc();
                    self.status.set_postgres(false, Some(e.to_string()));
                    tracing::warn!(error = %e, rows = batch.rows.len(), retry_in = ?delay, "audit batch not written; entries stay pending");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = cancel.cancelled() => return false,
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        for (key, ids) in batch.ids {
            let acked: Result<i64, _> = self
                .redis
                .xack(key.as_str(), self.cfg.group.as_str(), ids)
                .await;
            if let Err(e) = acked {
                // The rows are committed; a redelivery is absorbed by the
                // unique event id, so nothing is duplicated.
                self.redis_error("ack", &e);
            }
        }
        true
    }

    fn redis_error(&self, stage: &'static str, e: &fred::error::Error) {
        self.metrics
            .audit_failures
            .get_or_create(&crate::metrics::ReasonLabel { reason: stage })
            .inc();
        tracing::warn!(stage, error = %e, "audit: Redis command failed");
    }
}

/// `pulse:{abc}:stream` → `abc`.
pub fn persona_of(prefix: &str, key: &str) -> Option<String> {
    let rest = key.strip_prefix(prefix)?.strip_prefix(":{")?;
    let persona = rest.strip_suffix("}:stream")?;
    (!persona.is_empty() && !persona.contains(['{', '}'])).then(|| persona.to_owned())
}

/// Which worker owns a stream (FNV-1a of the key; stable across restarts).
pub fn shard_of(key: &str, shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards.max(1) as u64) as usize
}
