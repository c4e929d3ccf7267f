//! Redis beyond one node: a Cluster with sharded pub/sub, and Sentinel
//! failover (docs/redis.md, "Topologies"), each on real servers.

mod audit;
mod cluster;
mod cluster_personas;
mod migrate;
mod reshard;
mod sentinel;
pub mod servers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

/// A config for a gateway on `url`, with the quick probes of `test_config`.
pub fn config_for(url: String) -> pulsegate::config::Config {
    let mut c = pulsegate::config::Config::default();
    c.redis.url = url;
    c.redis.probe_interval = Duration::from_millis(200);
    c.redis.command_timeout = Duration::from_secs(2);
    c.redis.unresponsive_timeout = Duration::from_secs(3);
    c.redis.reconnect_max_delay = Duration::from_millis(300);
    c.shutdown.lb_grace = Duration::ZERO;
    c.shutdown.drain_window = Duration::ZERO;
    c.shutdown.drain_timeout = Duration::from_secs(5);
    c.validate().expect("valid test config");
    c
}

/// A stream offset as `(ms, seq)`.
pub type Off = (u64, u64);

/// What one dashboard client saw, until the raw `{"type":"test_end"}`.
#[derive(Debug, Default)]
pub struct Seen {
    /// Offsets of every `initial_data`, with its `recovered`.
    pub initials: Vec<(Option<Off>, Option<bool>)>,
    /// Offsets of `variant_update`s, in arrival order, and how many came
    /// after the last `initial_data`.
    pub updates: Vec<(u64, u64)>,
    /// When each update arrived.
    pub arrivals: Vec<std::time::Instant>,
    pub since_last_initial: usize,
    /// Raw publications without an offset (besides `test_end`).
    pub raw: usize,
    /// Every `status` notice, as sent.
    pub statuses: Vec<Value>,
    pub closed: bool,
}

pub fn offset(v: &Value) -> Option<(u64, u64)> {
    let (a, b) = v.as_str()?.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The newest offset a client has received so far, read while it runs.
pub type Progress = std::sync::Arc<std::sync::Mutex<Option<Off>>>;

/// Connects a dashboard client of `persona` and collects what it sees.
pub async fn watch(
    addr: SocketAddr,
    persona: String,
    within: Duration,
) -> tokio::task::JoinHandle<Seen> {
    watch_live(addr, persona, within).await.0
}

/// [`watch`], also showing its progress while it runs.
pub async fn watch_live(
    addr: SocketAddr,
    persona: String,
    within: Duration,
) -> (tokio::task::JoinHandle<Seen>, Progress) {
    let mut ws = connect(addr, &format!("/dashboard/ws/{persona}")).await;
    let progress = Progress::default();
    let newest = progress.clone();
    let task = tokio::spawn(async move {
        let mut seen = Seen::default();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(_) => {
                    seen.closed = true;
                    return seen;
                }
                Err(_) => panic!("{persona}: no test_end within {within:?}: {seen:?}"),
            };
            let Message::Text(t) = msg else {
                if matches!(msg, Message::Close(_)) {
                    seen.closed = true;
                    return seen;
                }
                continue;
            };
            let v: Value = serde_json::from_str(&t).expect("json");
            match v["type"].as_str() {
                Some("initial_data") => {
                    seen.initials
                        .push((offset(&v["offset"]), v["recovered"].as_bool()));
                    seen.since_last_initial = 0;
                }
                Some("variant_update") => {
                    let o = offset(&v["offset"]).expect("offset");
                    seen.updates.push(o);
                    let mut newest = newest.lock().unwrap_or_else(|e| e.into_inner());
                    *newest = (*newest).max(Some(o));
                    drop(newest);
                    seen.arrivals.push(std::time::Instant::now());
                    seen.since_last_initial += 1;
                }
                Some("test_end") => return seen,
                Some("status") => seen.statuses.push(v),
                _ => seen.raw += 1,
            }
        }
    });
    (task, progress)
}

/// Checks one client against its persona's final stream: its updates in
/// strictly increasing order (none twice), and every stream entry after
/// its last `initial_data` received after it.
pub fn check(persona: &str, seen: &Seen, stream: &[(u64, u64)]) {
    assert!(!seen.closed, "{persona}: the client was disconnected");
    assert!(!seen.initials.is_empty(), "{persona}: no initial_data");
    for w in seen.updates.windows(2) {
        assert!(
            w[0] < w[1],
            "{persona}: {:?} then {:?} (duplicate or out of order)",
            w[0],
            w[1]
        );
    }
    let base = seen.initials.last().and_then(|(o, _)| *o).unwrap_or((0, 0));
    let after: Vec<(u64, u64)> =
        seen.updates[seen.updates.len() - seen.since_last_initial..].to_vec();
    let expected: Vec<(u64, u64)> = stream.iter().copied().filter(|id| *id > base).collect();
    let missing: Vec<_> = expected.iter().filter(|id| !after.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{persona}: {} of {} stream entries after {base:?} never arrived, first {:?}",
        missing.len(),
        expected.len(),
        missing.first()
    );
}

/// Stream ids of a persona, parsed.
pub async fn stream_offsets(client: &fred::prelude::Client, persona: &str) -> Vec<(u64, u64)> {
    stream_ids(client, &format!("pulse:{{{persona}}}:stream"))
        .await
        .iter()
        .filter_map(|s| offset(&Value::String(s.clone())))
        .collect()
}

/// The longest pause between two updates any of these clients saw: for
/// the personas of a killed primary, about the time from the kill to the
/// first event delivered again.
pub fn longest_pause<'a>(seen: impl Iterator<Item = &'a Seen>) -> Duration {
    seen.flat_map(|s| s.arrivals.windows(2).map(|w| w[1] - w[0]))
        .max()
        .unwrap_or_default()
}

/// Counts per persona for the report lines.
pub fn summary(results: &HashMap<String, Vec<Seen>>) -> String {
    let clients: usize = results.values().map(Vec::len).sum();
    let updates: usize = results.values().flatten().map(|s| s.updates.len()).sum();
    let restarts: usize = results
        .values()
        .flatten()
        .map(|s| s.initials.len() - 1)
        .sum();
    format!("{clients} clients, {updates} updates received, {restarts} fresh initial_data")
}
