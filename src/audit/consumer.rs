//! An audit worker: reads its persona streams through the Redis consumer
//! group (so N gateways share the work), writes batches to Postgres, and
//! acknowledges only after the batch commits.
//!
//! Reading and writing are pipelined: while one batch commits, the next is
//! read and parsed. Batches are committed and acknowledged one after the
//! other, in the order they were read, so each stream is still written in
//! order of arrival. At most two batches are in flight per worker: one
//! committing, one read ahead.
//!
//! - On start, this consumer name's own pending entries are read first.
//! - Entries another consumer left pending for `claim_idle` are claimed.
//! - While Postgres is down the batch in hand is retried with backoff and
//!   nothing new is read: entries wait in Redis, in order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::discover::Streams;
use super::entry::{self, AuditRow};
use super::status::AuditStatus;
use super::writer::{self, PgPool};
use crate::config::AuditConfig;
use crate::metrics::{Metrics, ReadPath, Repair};
use crate::redis::text;
use crate::undecodable;

pub struct Consumer {
    pub redis: Client,
    pub pool: PgPool,
    pub cfg: AuditConfig,
    pub consumer: String,
    pub metrics: Arc<Metrics>,
    pub status: Arc<AuditStatus>,
    /// The streams this worker owns (one writer per stream keeps its order),
    /// kept up to date by discovery.
    pub streams: watch::Receiver<Streams>,
    /// Tells discovery a stream lost its group, so it is created again.
    pub lost: mpsc::UnboundedSender<String>,
}

/// Stream entries as fred returns them: (id, fields). A pending entry that
/// was trimmed from the stream comes back without fields (nil). Fields stay
/// a `Value` until each entry is decoded on its own: converted to strings
/// in one go, one entry that is not UTF-8 failed the whole read, and its
/// batch, on every retry.
type Entries = Vec<(String, Option<fred::types::Value>)>;

/// What a read brought: rows to write, and per stream the ids to acknowledge.
#[derive(Default)]
struct Batch {
    rows: Vec<AuditRow>,
    ids: HashMap<String, Vec<String>>,
    /// An entry can come both from our pending list and from a claim.
    seen: HashSet<(String, String)>,
    /// Entries trimmed before they were audited: (stream, id).
    lost: Vec<(String, String)>,
    /// Entries recorded with U+FFFD for bytes that were not UTF-8:
    /// (persona, id).
    replaced: Vec<(String, String)>,
    /// Some entry came from a pending list (ours or a claim): it may have
    /// been committed already, before a crash kept it from being acknowledged.
    redelivered: bool,
}

impl Batch {
    fn len(&self) -> usize {
        self.ids.values().map(Vec::len).sum()
    }

    /// `fields` is `None` for an entry trimmed away while it was pending.
    fn add(&mut self, key: &str, persona: &str, id: String, fields: Option<fred::types::Value>) {
        if !self.seen.insert((key.to_owned(), id.clone())) {
            return;
        }
        let row = match fields.map(text::entry_fields) {
            Some(fields) => {
                if fields.replaced {
                    self.replaced.push((persona.to_owned(), id.clone()));
                }
                entry::parse(persona, &id, fields.map, fields.replaced)
            }
            None => {
                self.lost.push((key.to_owned(), id.clone()));
                entry::lost(persona, &id)
            }
        };
        match row {
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
        // Room for one batch read ahead; `reserve` before reading keeps the
        // read-ahead as fresh (and as large) as the writer's pace allows.
        let (tx, rx) = mpsc::channel(1);
        let streams = self.streams.clone();
        tokio::join!(
            self.read_loop(streams, tx, &cancel),
            self.write_loop(rx, &cancel)
        );
    }

    async fn read_loop(
        &self,
        mut streams_rx: watch::Receiver<Streams>,
        tx: mpsc::Sender<Batch>,
        cancel: &CancellationToken,
    ) {
        let mut streams = Streams::default();
        // Per stream, where the re-read of our own pending entries stands
        // (removed once it returns nothing). A cursor rather than "0" every
        // time: entries read ahead are pending too, and must not be read twice.
        let mut own_pending: HashMap<String, String> = HashMap::new();
        let mut last_claim = Instant::now();
        let mut idle = Duration::from_millis(10);
        // Waiting on `changed()` marks the streams seen, so remember it.
        let mut refresh = true;
        loop {
            let permit = tokio::select! {
                p = tx.reserve() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = cancel.cancelled() => return,
            };
            if std::mem::take(&mut refresh) || streams_rx.has_changed().unwrap_or(false) {
                let now = streams_rx.borrow_and_update().clone();
                for key in now.keys().filter(|k| !streams.contains_key(*k)) {
                    own_pending.insert(key.clone(), "0".into());
                }
                streams = now;
            }
            let mut batch = Batch::default();
            for (key, persona) in streams.iter() {
                let Some(from) = own_pending.get(key).cloned() else {
                    continue;
                };
                match self.read(key, persona, &from, &mut batch).await {
                    Ok(Some(last)) => {
                        own_pending.insert(key.clone(), last);
                    }
                    Ok(None) => {
                        own_pending.remove(key);
                    }
                    Err(e) => self.redis_error("read pending", &e),
                }
            }
            if last_claim.elapsed() >= self.cfg.claim_idle / 2 {
                for (key, persona) in streams.iter() {
                    if let Err(e) = self.claim(key, persona, &mut batch).await {
                        self.redis_error("claim", &e);
                    }
                }
                last_claim = Instant::now();
            }
            let mut lost = Vec::new();
            for (key, persona) in streams.iter() {
                if batch.len() >= self.cfg.batch_size {
                    break;
                }
                if let Err(e) = self.read(key, persona, ">", &mut batch).await {
                    if e.details().contains("NOGROUP") {
                        lost.push(key.clone());
                    } else {
                        self.redis_error("read", &e);
                    }
                }
            }
            for key in lost {
                // Redis lost the stream and its group: discovery creates the
                // group again and hands the stream back.
                Arc::make_mut(&mut streams).remove(&key);
                own_pending.remove(&key);
                let _ = self.lost.send(key);
            }
            if batch.len() == 0 {
                drop(permit);
                tokio::select! {
                    _ = tokio::time::sleep(idle) => {}
                    Ok(()) = streams_rx.changed() => refresh = true,
                    _ = cancel.cancelled() => return,
                }
                idle = (idle * 2).min(self.cfg.poll_interval);
                continue;
            }
            idle = Duration::from_millis(10);
            self.report_lost(&batch.lost);
            for (persona, id) in &batch.replaced {
                let read = ReadPath::Audit;
                undecodable::report(&self.metrics, read, Repair::Replaced, persona, Some(id));
            }
            permit.send(batch);
        }
    }

    /// Commits batches in the order they were read. After cancellation it
    /// still writes what was already read (Postgres permitting), then stops.
    async fn write_loop(&self, mut rx: mpsc::Receiver<Batch>, cancel: &CancellationToken) {
        while let Some(batch) = rx.recv().await {
            if !self.commit(batch, cancel).await {
                return;
            }
        }
    }

    /// XREADGROUP from `id` (">" new, else our pending after `id`); returns
    /// the last id read, `None` when nothing was there.
    async fn read(
        &self,
        key: &str,
        persona: &str,
        id: &str,
        batch: &mut Batch,
    ) -> Result<Option<String>, fred::error::Error> {
        let room = self.cfg.batch_size.saturating_sub(batch.len()).max(1) as u64;
        let reply: fred::types::Value = self
            .redis
            .xreadgroup(
                self.cfg.group.as_str(),
                self.consumer.as_str(),
                Some(room),
                None,
                false,
                key,
                id,
            )
            .await?;
        // Nothing new is a nil reply, which is no map: not a failure.
        if reply.is_null() {
            return Ok(None);
        }
        let resp: HashMap<String, Entries> = reply.flatten_array_values(2).convert()?;
        let mut last = None;
        for (_, entries) in resp {
            for (id, fields) in entries {
                last = Some(id.clone());
                batch.add(key, persona, id, fields);
            }
        }
        batch.redelivered |= id != ">" && last.is_some();
        Ok(last)
    }

    /// Takes over entries idle for `claim_idle` (a crashed consumer's).
    async fn claim(
        &self,
        key: &str,
        persona: &str,
        batch: &mut Batch,
    ) -> Result<(), fred::error::Error> {
        let min_idle = self.cfg.claim_idle.as_millis() as u64;
        // [cursor, entries, deleted ids] (Redis 7): the deleted ids are
        // pending entries trimmed from the stream, which Redis has just
        // dropped from the pending list. fred's typed reply discards them.
        let reply: fred::types::Value = self
            .redis
            .xautoclaim(
                key,
                self.cfg.group.as_str(),
                self.consumer.as_str(),
                min_idle,
                "0-0",
                Some(self.cfg.batch_size as u64),
                false,
            )
            .await?;
        let mut parts = reply.into_array().into_iter().skip(1);
        let entries: Entries = match parts.next() {
            Some(entries) => entries.flatten_array_values(1).convert()?,
            None => Vec::new(),
        };
        let deleted: Vec<String> = match parts.next() {
            Some(ids) => ids.convert()?,
            None => Vec::new(),
        };
        if !entries.is_empty() {
            tracing::info!(
                key,
                claimed = entries.len(),
                "claimed entries left pending by another consumer"
            );
            self.metrics.audit_claimed.inc_by(entries.len() as u64);
        }
        batch.redelivered |= !entries.is_empty() || !deleted.is_empty();
        for (id, fields) in entries {
            batch.add(key, persona, id, fields);
        }
        for id in deleted {
            batch.add(key, persona, id, None);
        }
        Ok(())
    }

    /// Loud on purpose: a trimmed entry means a publisher or an operator
    /// bypassed the backlog guard (see docs/audit.md).
    fn report_lost(&self, lost: &[(String, String)]) {
        let Some((key, first)) = lost.first() else {
            return;
        };
        tracing::error!(
            key,
            first,
            entries = lost.len(),
            "stream entries were trimmed before they were audited; recording them as `lost` rows"
        );
        self.metrics.audit_lost.inc_by(lost.len() as u64);
        self.status.add_lost(lost.len() as u64);
    }

    /// Writes the batch until it commits, then acknowledges it. Returns
    /// false if cancelled before the batch could be written.
    async fn commit(&self, batch: Batch, cancel: &CancellationToken) -> bool {
        let mut delay = Duration::from_millis(100);
        let started = Instant::now();
        loop {
            match writer::write(&self.pool, &batch.rows, !batch.redelivered).await {
                Ok(inserted) => {
                    let rows = batch.rows.len() as u64;
                    self.metrics.audit_rows_written.inc_by(inserted);
                    self.metrics
                        .audit_duplicates
                        .inc_by(rows - inserted.min(rows));
                    self.metrics.audit_batches.inc();
                    self.status.batch_committed(rows, inserted);
                    self.metrics.audit_batch_size.observe(rows as f64);
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
                    self.status.failed();
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
        super::redis_failed(&self.metrics, &self.status, stage, e);
    }
}
