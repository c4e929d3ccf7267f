//! A new channel's `SUBSCRIBE` may take long: a whole round of
//! `redis.subscribe_batch_interval` (up to 5 s), a busy Redis, or Redis
//! down. A client following one persona (`/dashboard/ws/{persona}`,
//! `/sse/{persona}`) gets its first frames only once the subscription is
//! confirmed (`src/ws/session/handoff.rs`, `spawn_whole`): a snapshot or
//! replay read before it would lose, without notice, whatever was
//! published between the read and the `SUBSCRIBE`.

use std::time::Duration;

use crate::common::*;
use crate::sse_client::open;

const T: Duration = Duration::from_secs(15);

/// `<ms>-<seq>` as a pair that orders like the stream does.
fn offset(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("an offset");
    (ms.parse().expect("ms"), seq.parse().expect("seq"))
}

/// A new channel's `SUBSCRIBE` can wait out a whole round (a busy Redis, or
/// `redis.subscribe_batch_interval` at its 5 s bound). A dashboard client's
/// snapshot or replay read before the subscription is confirmed would lose,
/// without notice, every event published between that read and the
/// `SUBSCRIBE`: its first frames wait for the confirmation instead, and
/// every event follows them once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscribe_delays_the_first_frames_and_loses_nothing() {
    let redis = RedisServer::spawn().await;
    let mut config = test_config(&redis);
    config.redis.subscribe_batch_interval = Duration::from_secs(5);
    let gw = start_gateway(config).await;
    let publisher = redis.client().await;
    let since = ingest(&publisher, "slow", posted("s0", 0.05, "seed"))
        .await
        .expect("ingest");
    // This client's round starts the interval the next channel waits out.
    let mut other = connect(gw.local_addr, "/dashboard/ws/other").await;
    assert_eq!(next_event(&mut other, T).await["type"], "initial_data");
    let mut fresh = connect(gw.local_addr, "/dashboard/ws/slow").await;
    let resume = format!("/dashboard/ws/slow?since={since}");
    let mut resumed = connect(gw.local_addr, &resume).await;
    // Events all through the wait: before, across and after the SUBSCRIBE.
    for k in 0..30 {
        ingest(
            &publisher,
            "slow",
            posted(&format!("e{k}"), 0.05, &format!("p{k}")),
        )
        .await
        .expect("ingest");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stream = stream_ids(&publisher, "pulse:{slow}:stream").await;

    let snapshot = next_event(&mut fresh, T).await;
    assert_eq!(snapshot["type"], "initial_data", "{snapshot}");
    let covered = offset(snapshot["offset"].as_str().expect("the snapshot's offset"));
    let owed: Vec<&String> = stream.iter().filter(|id| offset(id) > covered).collect();
    assert!(!owed.is_empty(), "the snapshot was read after every event");
    for want in owed {
        let v = next_event(&mut fresh, T).await;
        assert_eq!(v["offset"], want.as_str(), "after the snapshot: {v}");
    }
    for want in stream.iter().filter(|id| **id != since) {
        let v = next_event(&mut resumed, T).await;
        assert_eq!(v["offset"], want.as_str(), "resumed after {since}: {v}");
    }
    gw.shutdown().await;
}

/// The same on `/sse/{persona}`: a stream's snapshot is
/// read only once its channel's `SUBSCRIBE` is confirmed, however long the
/// round waits, so nothing published meanwhile is lost; the stream stays
/// open (keep-alive comments) while it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscribe_delays_the_snapshot_and_loses_nothing() {
    let redis = RedisServer::spawn().await;
    let mut config = test_config(&redis);
    config.sse.keepalive_interval = Duration::from_millis(300);
    config.redis.subscribe_batch_interval = Duration::from_secs(5);
    let gw = start_gateway(config).await;
    let publisher = redis.client().await;
    // This client's round starts the interval the stream's channel waits out.
    let mut other = connect(gw.local_addr, "/dashboard/ws/other").await;
    assert_eq!(next_json(&mut other, T).await["type"], "initial_data");
    let mut sse = open(gw.local_addr, "/sse/slow", &[]).await.expect("stream");
    for k in 0..30 {
        let event = posted(&format!("e{k}"), 0.05, &format!("p{k}"));
        ingest(&publisher, "slow", event).await.expect("ingest");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stream = stream_ids(&publisher, "pulse:{slow}:stream").await;
    let first = sse.next_event(T).await;
    assert_eq!(first.event.as_deref(), Some("initial_data"));
    assert!(
        sse.keepalives > 0,
        "no keep-alive while the snapshot waited"
    );
    let covered = first.id.expect("the snapshot's offset");
    let at = stream
        .iter()
        .position(|id| *id == covered)
        .expect("a stream id");
    assert!(
        at + 1 < stream.len(),
        "the snapshot was read after every event"
    );
    for id in &stream[at + 1..] {
        let e = sse.next_event(T).await;
        assert_eq!(e.id.as_deref(), Some(id.as_str()), "after the snapshot");
    }
    gw.shutdown().await;
}

/// Redis down is the longest wait of all: a client arriving then hears
/// `status: down` at once, gets no snapshot while Redis cannot be read
/// (before, an empty one came after 3 s), and is started once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_arriving_while_redis_is_down_is_told_and_started_once_it_is_back() {
    let mut redis = RedisServer::spawn().await;
    let port = redis.port;
    let gw = start_gateway(test_config(&redis)).await;
    wait_http_ok(gw.local_addr, "/readyz", T).await;
    redis.kill();
    wait_until("the gateway sees Redis down", T, || async {
        http_get(gw.local_addr, "/readyz").await.0 == 503
    })
    .await;
    let mut ws = connect(gw.local_addr, "/dashboard/ws/late").await;
    let status = next_json(&mut ws, T).await;
    assert_eq!(status["type"], "status", "{status}");
    assert_eq!(status["redis"], "down", "{status}");
    // Longer than the 3 s after which an empty snapshot used to come.
    let quiet = tokio::time::timeout(Duration::from_secs(4), next_json(&mut ws, T)).await;
    assert!(quiet.is_err(), "a frame while Redis was down: {quiet:?}");

    let redis = RedisServer::spawn_on(port).await;
    wait_http_ok(gw.local_addr, "/readyz", T).await;
    let publisher = redis.client().await;
    let id = ingest(&publisher, "late", posted("v1", 0.05, "back"))
        .await
        .expect("ingest");
    // The snapshot, read once the subscription is back, then the event
    // (unless the snapshot already has it).
    let snapshot = next_event(&mut ws, T).await;
    assert_eq!(snapshot["type"], "initial_data", "{snapshot}");
    if snapshot["offset"] != id.as_str() {
        let v = next_event(&mut ws, T).await;
        assert_eq!(v["offset"], id.as_str(), "{v}");
    }
    gw.shutdown().await;
}
