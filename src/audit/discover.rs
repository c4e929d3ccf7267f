//! Finds persona streams and hands each to the worker that owns it.
//!
//! One SCAN per process, in its own task: a walk over a large keyspace takes
//! a while (every variant has keys of its own), and the workers must not
//! stop writing for it. A stream reaches a worker only after its group
//! exists, so the worker's first read cannot meet `NOGROUP`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::status::AuditStatus;
use crate::metrics::Metrics;

/// Streams of one worker: key → persona id, in key order.
pub type Streams = Arc<BTreeMap<String, String>>;

pub struct Discovery {
    pub redis: Client,
    pub prefix: String,
    pub group: String,
    pub interval: Duration,
    /// One per worker; the worker of a stream is `shard_of(key)`.
    pub workers: Vec<watch::Sender<Streams>>,
    /// Keys a worker found without their group (Redis lost its data): they
    /// are forgotten and looked for again at once, so the group is recreated.
    pub lost: mpsc::UnboundedReceiver<String>,
    pub metrics: Arc<Metrics>,
    pub status: Arc<AuditStatus>,
}

impl Discovery {
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut known: HashSet<String> = HashSet::new();
        loop {
            // Stopping mid-walk is harmless: creating a group is idempotent.
            tokio::select! {
                _ = self.scan(&mut known) => {}
                _ = cancel.cancelled() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                Some(key) = self.lost.recv() => {
                    tracing::warn!(%key, "audit group missing; recreating it");
                    self.forget(&mut known, &key);
                    while let Ok(key) = self.lost.try_recv() {
                        self.forget(&mut known, &key);
                    }
                }
                _ = cancel.cancelled() => return,
            }
        }
    }

    fn forget(&self, known: &mut HashSet<String>, key: &str) {
        known.remove(key);
        let shard = shard_of(key, self.workers.len());
        self.workers[shard].send_modify(|s| {
            Arc::make_mut(s).remove(key);
        });
    }

    /// One SCAN over the keyspace (of every primary, in a Cluster: each
    /// holds its own slots' streams); new streams get the group and go to
    /// their worker.
    async fn scan(&self, known: &mut HashSet<String>) {
        let mut all = Vec::new();
        let nodes = match self.redis.cached_cluster_state() {
            Some(state) => state.unique_primary_nodes().into_iter().map(Some).collect(),
            None => vec![None],
        };
        for node in nodes {
            if !self.scan_node(node, known, &mut all).await {
                return;
            }
        }
        self.metrics.audit_streams.set(all.len() as i64);
        self.status.set_streams(all);
    }

    /// The SCAN of one node (`None`: the only one); false when Redis failed.
    async fn scan_node(
        &self,
        node: Option<Server>,
        known: &mut HashSet<String>,
        all: &mut Vec<String>,
    ) -> bool {
        let pattern = format!("{}:{{*}}:stream", self.prefix);
        let mut cursor = "0".to_owned();
        let mut found: Vec<BTreeMap<String, String>> = vec![BTreeMap::new(); self.workers.len()];
        for _ in 0..100_000 {
            // COUNT 1000 keeps each call short for Redis (fan-out shares
            // it); the extra round trips cost this task only.
            let page: Result<(String, Vec<String>), _> = match &node {
                Some(server) => {
                    self.redis
                        .with_cluster_node(server.clone())
                        .scan_page(cursor.clone(), pattern.clone(), Some(1000), None)
                        .await
                }
                None => {
                    self.redis
                        .scan_page(cursor.clone(), pattern.clone(), Some(1000), None)
                        .await
                }
            };
            let (next, keys) = match page {
                Ok(p) => p,
                Err(e) => {
                    self.redis_error("discover", &e);
                    return false;
                }
            };
            for key in keys {
                let Some(persona) = persona_of(&self.prefix, &key) else {
                    continue;
                };
                all.push(key.clone());
                if known.contains(&key) || !self.create_group(&key).await {
                    continue;
                }
                known.insert(key.clone());
                found[shard_of(&key, self.workers.len())].insert(key, persona);
            }
            // Handed over page by page: at start-up the workers begin while
            // the walk goes on.
            for (tx, new) in self.workers.iter().zip(found.iter_mut()) {
                if !new.is_empty() {
                    let new = std::mem::take(new);
                    tx.send_modify(|s| Arc::make_mut(s).extend(new));
                }
            }
            if next == "0" {
                break;
            }
            cursor = next;
        }
        true
    }

    async fn create_group(&self, key: &str) -> bool {
        let created: Result<(), _> = self
            .redis
            .xgroup_create(key, self.group.as_str(), "0", true)
            .await;
        match created {
            Ok(()) => tracing::info!(%key, group = %self.group, "audit group created"),
            Err(e) if e.details().contains("BUSYGROUP") => {}
            Err(e) => {
                self.redis_error("create group", &e);
                return false;
            }
        }
        true
    }

    fn redis_error(&self, stage: &'static str, e: &fred::error::Error) {
        super::redis_failed(&self.metrics, &self.status, stage, e);
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
