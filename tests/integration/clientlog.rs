//! What each WebSocket client of a fault test saw, in order, and whether
//! every event it missed was followed by a notice telling it to resync.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::common::Ws;

/// A stream id as (ms, seq), the order of a persona's events.
pub type Offset = (u64, u64);

/// What a client saw, in order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Seen {
    Event(Offset),
    Down,
    Up {
        resync: bool,
    },
    /// `{"type":"status","resync":true}` alone (the hub lagged).
    Resync,
    /// A fresh `initial_data` current to this offset, sent in place of
    /// events that cannot be replayed (a Redis restarted without its data:
    /// the gap repair finds the stream went back, `recovered: false`).
    Snapshot(Offset),
}

pub type Log = Arc<Mutex<Vec<(Instant, Seen)>>>;

pub struct ClientLog {
    pub persona: usize,
    pub log: Log,
    /// `up` notices received, to wait for the end of each outage.
    pub ups: Arc<AtomicUsize>,
}

pub fn offset(v: &serde_json::Value) -> Option<Offset> {
    let (ms, seq) = v.as_str()?.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

pub fn classify(v: &serde_json::Value) -> Option<Seen> {
    match v["type"].as_str()? {
        "status" => match v["redis"].as_str() {
            Some("down") => Some(Seen::Down),
            Some("up") => Some(Seen::Up {
                resync: v["resync"] == true,
            }),
            _ if v["resync"] == true => Some(Seen::Resync),
            _ => None,
        },
        "initial_data" if v["recovered"] == false => offset(&v["offset"]).map(Seen::Snapshot),
        "message" => offset(&v["data"]["offset"]).map(Seen::Event),
        "variant_update" => offset(&v["offset"]).map(Seen::Event),
        _ => None,
    }
}

pub fn spawn_client(persona: usize, mut ws: Ws, stop: CancellationToken) -> ClientLog {
    let log: Log = Arc::default();
    let ups = Arc::new(AtomicUsize::new(0));
    let (log2, ups2) = (log.clone(), ups.clone());
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                m = ws.next() => m,
            };
            let Some(Ok(Message::Text(text))) = msg else {
                assert!(
                    matches!(msg, Some(Ok(_))),
                    "client connection ended: {msg:?}"
                );
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&text).expect("json");
            if let Some(seen) = classify(&v) {
                log2.lock().unwrap().push((Instant::now(), seen));
                if matches!(seen, Seen::Up { .. }) {
                    ups2.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    });
    ClientLog { persona, log, ups }
}

/// Acknowledged events the client missed with no status notice between its
/// neighbours and no `up`/`resync`, or fresh snapshot covering them, after
/// that notice.
pub fn untold_losses(log: &[(Instant, Seen)], acked: &BTreeSet<Offset>) -> Vec<Offset> {
    let events: Vec<(usize, Offset)> = log
        .iter()
        .enumerate()
        .filter_map(|(i, (_, s))| match s {
            Seen::Event(o) => Some((i, *o)),
            _ => None,
        })
        .collect();
    let got: HashSet<Offset> = events.iter().map(|(_, o)| *o).collect();
    let mut untold = Vec::new();
    for &m in acked.iter().filter(|m| !got.contains(m)) {
        let from = events
            .iter()
            .filter(|(_, o)| *o < m)
            .map(|(i, _)| i + 1)
            .max();
        let to = events.iter().filter(|(_, o)| *o > m).map(|(i, _)| *i).min();
        let (from, to) = (from.unwrap_or(0), to.unwrap_or(log.len()));
        let notice = log[from..to]
            .iter()
            .position(|(_, s)| !matches!(s, Seen::Event(_)));
        let told = notice.is_some_and(|p| {
            log[from + p..].iter().any(|(_, s)| match s {
                Seen::Up { resync: true } | Seen::Resync => true,
                Seen::Snapshot(o) => *o >= m,
                _ => false,
            })
        });
        if !told {
            untold.push(m);
        }
    }
    untold
}
