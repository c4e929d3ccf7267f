//! Redis faults (restart, freeze) and slow HTTP clients.

use std::time::{Duration, Instant};

use fred::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

const CHANNEL: &str = "pulse:{p1}:events";

/// Reads JSON messages until one satisfies `pred`.
async fn until_message<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    within: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "expected message did not arrive");
        let v = next_json(ws, left).await;
        if pred(&v) {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_survive_a_redis_restart() {
    let mut redis = RedisServer::spawn().await;
    let port = redis.port;
    let gw = start_gateway(test_config(&redis)).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut ws = connect(gw.local_addr, "/dashboard/ws/p1").await;
        next_json(&mut ws, Duration::from_secs(5)).await;
        clients.push(ws);
    }
    redis.kill();
    for ws in &mut clients {
        let v = until_message(ws, Duration::from_secs(10), |v| v["type"] == "status").await;
        assert_eq!(v["redis"], "down");
    }
    assert_eq!(http_get(gw.local_addr, "/readyz").await.0, 503);

    let redis = RedisServer::spawn_on(port).await;
    for ws in &mut clients {
        let v = until_message(ws, Duration::from_secs(15), |v| v["type"] == "status").await;
        assert_eq!(v["redis"], "up");
    }
    let publisher = redis.client().await;
    wait_until("resubscription", Duration::from_secs(10), || async {
        numsub(&publisher, CHANNEL).await == 1
    })
    .await;
    let _: i64 = publisher
        .publish(CHANNEL, r#"{"after":"restart"}"#)
        .await
        .unwrap();
    for ws in &mut clients {
        let v = until_message(ws, Duration::from_secs(5), |v| v.get("after").is_some()).await;
        assert_eq!(v["after"], "restart", "same connection, new messages");
    }
    assert_eq!(http_get(gw.local_addr, "/readyz").await.0, 200);
    let metrics = gw.app.metrics.encode();
    assert!(
        !metrics.contains("pulsegate_redis_reconnects_total 0\n"),
        "{metrics}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_is_detected_and_recovered() {
    let redis = RedisServer::spawn().await;
    let mut config = test_config(&redis);
    // Production defaults (1 s probe, 3 s timeout), to show the 10 s bound.
    config.redis.probe_interval = Duration::from_secs(1);
    config.redis.command_timeout = Duration::from_secs(3);
    config.redis.unresponsive_timeout = Duration::from_secs(5);
    let gw = start_gateway(config).await;
    let mut ws = connect(gw.local_addr, "/dashboard/ws/p1").await;
    next_json(&mut ws, Duration::from_secs(5)).await;

    redis.signal("-STOP");
    let stopped = Instant::now();
    let v = until_message(&mut ws, Duration::from_secs(10), |v| v["type"] == "status").await;
    assert_eq!(v["redis"], "down");
    let detected = stopped.elapsed();
    assert!(
        detected < Duration::from_secs(10),
        "detected after {detected:?}"
    );
    let (status, body) = http_get(gw.local_addr, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains(r#""redis":"down""#), "{body}");
    // Stay frozen for 15 s in all.
    tokio::time::sleep(Duration::from_secs(15).saturating_sub(stopped.elapsed())).await;
    redis.signal("-CONT");

    let v = until_message(&mut ws, Duration::from_secs(20), |v| v["type"] == "status").await;
    assert_eq!(v["redis"], "up");
    wait_http_ok(gw.local_addr, "/readyz", Duration::from_secs(10)).await;
    let publisher = redis.client().await;
    wait_until("resubscription", Duration::from_secs(10), || async {
        numsub(&publisher, CHANNEL).await == 1
    })
    .await;
    let _: i64 = publisher
        .publish(CHANNEL, r#"{"after":"freeze"}"#)
        .await
        .unwrap();
    let v = until_message(&mut ws, Duration::from_secs(5), |v| {
        v.get("after").is_some()
    })
    .await;
    assert_eq!(v["after"], "freeze");
    gw.shutdown().await;
}

#[tokio::test]
async fn half_sent_request_heads_are_closed_within_the_handshake_timeout() {
    let redis = RedisServer::spawn().await;
    let mut config = test_config(&redis);
    config.http.handshake_timeout = Duration::from_secs(1);
    let gw = start_gateway(config).await;
    let mut s = TcpStream::connect(gw.local_addr).await.unwrap();
    s.write_all(b"GET /dashboard/ws/p1 HTTP/1.1\r\nHost: x\r\nUpgr")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the server closes a stalled request head")
        .unwrap_or(0);
    let _ = n; // hyper may answer 408 before closing; either way the socket ends
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed after {:?}",
        started.elapsed()
    );
    gw.shutdown().await;
}
