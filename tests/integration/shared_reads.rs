//! One Redis read per persona, however many clients join: 1,000 dashboards
//! joining one persona at once share a handful of snapshot reads, clients
//! resuming from one offset share replays (both counted by Redis itself,
//! `INFO commandstats`), and every client still sees each event after its
//! own snapshot or offset exactly once while events are ingested.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use futures_util::future::join_all;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::common::*;

const T: Duration = Duration::from_secs(60);

/// Offsets are `<ms>-<seq>`; compare numerically.
fn key(o: &str) -> (u64, u64) {
    let (a, b) = o.split_once('-').expect("offset");
    (a.parse().expect("ms"), b.parse().expect("seq"))
}

/// Ingests `variant_posted` events every few milliseconds until `stop`,
/// then a few more and a last one named `end`. Returns how many.
fn produce(publisher: Client, persona: &'static str, stop: Arc<AtomicBool>) -> JoinHandle<usize> {
    tokio::spawn(async move {
        let mut n = 0;
        while !stop.load(Ordering::Acquire) && n < 3000 {
            ingest(&publisher, persona, posted(&format!("v{n}"), 0.05, "hook"))
                .await
                .expect("ingest");
            n += 1;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        for _ in 0..20 {
            ingest(&publisher, persona, posted(&format!("v{n}"), 0.05, "hook"))
                .await
                .expect("ingest");
            n += 1;
        }
        ingest(&publisher, persona, posted("end", 0.05, "last"))
            .await
            .expect("ingest");
        n + 1
    })
}

/// `n` TCP connections to the gateway, all open before any asks for the
/// upgrade: the joins then come at once, not at the pace of connecting.
async fn open(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let streams = (0..n).map(|_| TcpStream::connect(addr));
    join_all(streams)
        .await
        .into_iter()
        .map(|s| s.expect("connect"))
        .collect()
}

/// A client that joins `path` on `stream`, and returns what it was first
/// sent (the snapshot's offset, or `None` for a replay) and the offsets of
/// every `variant_update` up to the `end` event. `joined` counts the
/// clients that have their first message.
fn join(stream: TcpStream, path: String, joined: Arc<AtomicUsize>) -> JoinHandle<Joined> {
    tokio::spawn(async move {
        let url = format!("ws://{}{path}", stream.peer_addr().expect("peer"));
        let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
            .await
            .expect("ws handshake");
        let first = next_json(&mut ws, T).await;
        joined.fetch_add(1, Ordering::AcqRel);
        // A replay starts with the first missed event itself.
        let (snapshot, mut replayed) = match first["type"].as_str() {
            Some("initial_data") => (Some(first["offset"].as_str().map(str::to_owned)), None),
            _ => (None, Some(first)),
        };
        let mut offsets = Vec::new();
        loop {
            let v = match replayed.take() {
                Some(v) => v,
                None => next_json(&mut ws, T).await,
            };
            if v["type"] == "status" {
                // A notice (a probe timed out on this busy machine): not an event.
                continue;
            }
            assert_eq!(v["type"], "variant_update", "{v}");
            offsets.push(v["offset"].as_str().expect("offset").to_owned());
            if v["data"]["variant_id"] == "end" {
                return Joined { snapshot, offsets };
            }
        }
    })
}

struct Joined {
    /// `Some(offset)`: started with `initial_data` current to `offset`.
    snapshot: Option<Option<String>>,
    offsets: Vec<String>,
}

/// Asserts that `seen` is exactly the stream's ids after `after`, up to the
/// last one seen: no gap, no duplicate, in order.
fn assert_exactly_once(all: &[String], after: Option<&str>, seen: &[String]) {
    let end = seen.last().expect("the end event");
    let expected: Vec<&String> = all
        .iter()
        .filter(|id| after.is_none_or(|s| key(id) > key(s)) && key(id) <= key(end))
        .collect();
    let first_diff = seen.iter().zip(&expected).position(|(a, b)| a != *b);
    assert_eq!(
        (seen.len(), first_diff),
        (expected.len(), None),
        "every event after {after:?} exactly once"
    );
}

async fn wait_joined(joined: &AtomicUsize, clients: usize) -> Duration {
    let start = Instant::now();
    wait_until("every client's first message", T, || async {
        joined.load(Ordering::Acquire) == clients
    })
    .await;
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_joiners_share_a_handful_of_snapshot_reads() {
    let _turn = heavy().await;
    const CLIENTS: usize = 1000;
    let redis = RedisServer::spawn().await;
    let mut config = test_config(&redis);
    // The snapshot lists at most 20 variants: 1,000 copies of it stay small.
    config.ingest.max_variants = 20;
    let gw = start_gateway(config).await;
    let publisher = redis.client().await;
    ingest(&publisher, "p1", posted("seed", 0.05, "hook"))
        .await
        .expect("ingest");

    let stop = Arc::new(AtomicBool::new(false));
    let producer = produce(publisher.clone(), "p1", stop.clone());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let streams = open(gw.local_addr, CLIENTS).await;
    let before = command_calls(&publisher, "fcall_ro").await;
    let joined = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = streams
        .into_iter()
        .map(|s| join(s, "/dashboard/ws/p1".into(), joined.clone()))
        .collect();
    let took = wait_joined(&joined, CLIENTS).await;
    let reads = command_calls(&publisher, "fcall_ro").await - before;
    stop.store(true, Ordering::Release);
    let events = producer.await.expect("producer");
    println!("{CLIENTS} joiners in {took:?}: {reads} snapshot reads (FCALL_RO), {events} events ingested in all");

    let all = stream_ids(&publisher, "pulse:{p1}:stream").await;
    let mut offsets = std::collections::BTreeSet::new();
    for c in clients {
        let Joined {
            snapshot,
            offsets: seen,
        } = c.await.expect("client");
        let start = snapshot.expect("initial_data first");
        offsets.insert(start.clone());
        assert_exactly_once(&all, start.as_deref(), &seen);
    }
    let metrics = gw.app.metrics.encode();
    let (counted, shared) = (
        counter(&metrics, "pulsegate_snapshot_reads_total"),
        counter(&metrics, "pulsegate_snapshot_shared_total"),
    );
    println!(
        "distinct snapshot offsets: {}; gateway counted {counted} reads, {shared} shared",
        offsets.len()
    );
    assert!(reads <= 10, "a handful of snapshot reads, not {reads}");
    assert_eq!(counted, reads, "every read is counted: {metrics}");
    assert_eq!(counted + shared, CLIENTS as u64, "{metrics}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_resuming_from_one_offset_share_replays() {
    let _turn = heavy().await;
    const CLIENTS: usize = 500;
    const MISSED: usize = 300;
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(test_config(&redis)).await;
    let publisher = redis.client().await;
    let since = ingest(&publisher, "p1", posted("seed", 0.05, "hook"))
        .await
        .expect("ingest");
    for i in 0..MISSED {
        ingest(&publisher, "p1", posted(&format!("m{i}"), 0.05, "hook"))
            .await
            .expect("ingest");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let producer = produce(publisher.clone(), "p1", stop.clone());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let streams = open(gw.local_addr, CLIENTS).await;
    let before = command_calls(&publisher, "xrange").await;
    let joined = Arc::new(AtomicUsize::new(0));
    let path = format!("/dashboard/ws/p1?since={since}");
    let clients: Vec<_> = streams
        .into_iter()
        .map(|s| join(s, path.clone(), joined.clone()))
        .collect();
    let took = wait_joined(&joined, CLIENTS).await;
    let reads = command_calls(&publisher, "xrange").await - before;
    stop.store(true, Ordering::Release);
    let events = producer.await.expect("producer");
    println!("{CLIENTS} resumes from one offset in {took:?}: {reads} replays (XRANGE), {events} events ingested in all");

    let all = stream_ids(&publisher, "pulse:{p1}:stream").await;
    for c in clients {
        let Joined { snapshot, offsets } = c.await.expect("client");
        assert!(snapshot.is_none(), "a replay, no initial_data");
        assert!(offsets.len() >= MISSED);
        assert_exactly_once(&all, Some(&since), &offsets);
    }
    let metrics = gw.app.metrics.encode();
    let (counted, shared) = (
        counter(&metrics, "pulsegate_replay_reads_total"),
        counter(&metrics, "pulsegate_replay_shared_total"),
    );
    println!("gateway counted {counted} replays, {shared} shared");
    assert!(reads <= 10, "a handful of replays, not {reads}");
    assert_eq!(counted, reads, "every replay is counted: {metrics}");
    assert_eq!(counted + shared, CLIENTS as u64, "{metrics}");
    assert!(
        metrics.contains(&format!(
            r#"pulsegate_resumes_total{{reason="complete"}} {CLIENTS}"#
        )),
        "{metrics}"
    );
    gw.shutdown().await;
}
