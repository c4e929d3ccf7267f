//! Fan-out: every client gets every message in order, one Redis subscription
//! per channel, slow clients isolated, conflation keeps the newest value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

const CHANNEL: &str = "pulse:{p1}:events";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_clients_receive_every_message_in_order() {
    const CLIENTS: usize = 1000;
    const MESSAGES: u64 = 1000;
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(test_config(&redis)).await;
    let publisher = redis.client().await;

    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut ws = connect(gw.local_addr, "/dashboard/ws/p1").await;
        let first = next_json(&mut ws, Duration::from_secs(10)).await;
        assert_eq!(first["type"], "initial_data");
        clients.push(ws);
    }
    assert_eq!(
        numsub(&publisher, CHANNEL).await,
        1,
        "one Redis subscription for all clients"
    );

    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut expected = 0u64;
                while expected < MESSAGES {
                    let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
                        .await
                        .expect("message in time")
                        .expect("open")
                        .expect("ok");
                    let Message::Text(t) = msg else { continue };
                    let v: serde_json::Value = serde_json::from_str(&t).expect("json");
                    assert_eq!(v["seq"].as_u64(), Some(expected), "in order, none missing");
                    expected += 1;
                }
                ws
            })
        })
        .collect();

    for seq in 0..MESSAGES {
        let payload =
            json!({"type": "variant_update", "seq": seq, "data": {"event_type": "variant_posted"}});
        let _: i64 = publisher
            .publish(CHANNEL, payload.to_string())
            .await
            .expect("publish");
    }
    let mut done = Vec::new();
    for r in readers {
        done.push(r.await.expect("reader"));
    }
    let received = gw.app.metrics.encode();
    assert!(
        received.contains("pulsegate_redis_messages_received_total 1000"),
        "{received}"
    );
    drop(done);
    wait_until(
        "the channel to be released",
        Duration::from_secs(10),
        || async { numsub(&publisher, CHANNEL).await == 0 },
    )
    .await;
    gw.shutdown().await;
}

fn padded(seq: u64, extra: &str) -> String {
    json!({"type": "variant_update", "seq": seq, "pad": "x".repeat(4000), "data": {"event_type": extra}}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_client_does_not_delay_others_and_is_disconnected() {
    let redis = RedisServer::spawn().await;
    let mut config = test_config(&redis);
    config.ws.queue_max_messages = 100;
    config.ws.slow_close_grace = Duration::from_secs(30);
    let gw = start_gateway(config).await;
    let publisher = redis.client().await;

    let mut stalled = connect_small_buffer(gw.local_addr, "/dashboard/ws/p1").await;
    assert_eq!(
        next_json(&mut stalled, Duration::from_secs(5)).await["type"],
        "initial_data"
    );
    let mut others = Vec::new();
    for _ in 0..5 {
        let mut ws = connect(gw.local_addr, "/dashboard/ws/p1").await;
        next_json(&mut ws, Duration::from_secs(5)).await;
        others.push(ws);
    }
    const MESSAGES: u64 = 3000; // ~12 MB: far beyond the stalled socket's buffers
                                // The publisher keeps at most AHEAD messages in front of the slowest
                                // reader, so a reader briefly starved of CPU (shared CI machines) is
                                // never taken for a slow consumer; the stalled client reads nothing and
                                // must overflow all the same.
    const AHEAD: u64 = 50;
    let received: Arc<Vec<AtomicU64>> = Arc::new((0..5).map(|_| AtomicU64::new(0)).collect());
    let readers: Vec<_> = others
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            let received = received.clone();
            tokio::spawn(async move {
                for expected in 0..MESSAGES {
                    let v = next_json(&mut ws, Duration::from_secs(30)).await;
                    assert_eq!(v["seq"].as_u64(), Some(expected));
                    received[i].fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let slowest = || received.iter().map(|r| r.load(Ordering::Relaxed)).min();
    for seq in 0..MESSAGES {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while slowest().unwrap_or(0) + AHEAD < seq {
            assert!(
                tokio::time::Instant::now() < deadline,
                "fast readers stopped progressing at {seq}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let _: i64 = publisher
            .publish(CHANNEL, padded(seq, "variant_posted"))
            .await
            .expect("publish");
    }
    // The others finish while the stalled client has not read a byte.
    for r in readers {
        r.await
            .expect("fast readers complete while one client is stalled");
    }
    let metrics = gw.app.metrics.encode();
    assert!(
        metrics.contains("pulsegate_slow_disconnects_total 1"),
        "{metrics}"
    );
    // Once it reads again it finds the 4008 close after what was in flight.
    let (code, reason) = expect_close(&mut stalled, Duration::from_secs(30)).await;
    assert_eq!(code, 4008, "{reason}");
    assert!(reason.contains("slow"), "{reason}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflation_keeps_the_newest_value_per_variant() {
    let redis = RedisServer::spawn().await;
    let mut config = test_config(&redis);
    config.ws.queue_max_messages = 10_000;
    let gw = start_gateway(config).await;
    let publisher = redis.client().await;

    let mut stalled = connect_small_buffer(gw.local_addr, "/dashboard/ws/p1").await;
    next_json(&mut stalled, Duration::from_secs(5)).await;
    const UPDATES: u64 = 3000;
    for seq in 0..UPDATES {
        let variant = format!("v{}", seq % 3);
        let msg = json!({
            "type": "variant_update", "seq": seq, "pad": "x".repeat(4000),
            "data": {"event_type": "performance_update", "variant_id": variant, "view_count": seq}
        });
        let _: i64 = publisher
            .publish(CHANNEL, msg.to_string())
            .await
            .expect("publish");
        if seq % 500 == 0 {
            let _: i64 = publisher
                .publish(CHANNEL, padded(seq, "early_kill"))
                .await
                .expect("publish");
        }
    }
    let done =
        json!({"type": "variant_update", "seq": "end", "data": {"event_type": "variant_posted"}});
    let _: i64 = publisher
        .publish(CHANNEL, done.to_string())
        .await
        .expect("publish");

    let mut last = std::collections::HashMap::new();
    let mut kills = Vec::new();
    let mut updates = 0;
    loop {
        let v = next_json(&mut stalled, Duration::from_secs(30)).await;
        if v["seq"] == "end" {
            break;
        }
        match v["data"]["event_type"].as_str() {
            Some("performance_update") => {
                updates += 1;
                let variant = v["data"]["variant_id"].as_str().unwrap().to_owned();
                let views = v["data"]["view_count"].as_u64().unwrap();
                let prev = last.insert(variant, views);
                assert!(
                    prev.is_none_or(|p| p < views),
                    "never a stale value after a newer one"
                );
            }
            Some("early_kill") => kills.push(v["seq"].as_u64().unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        kills,
        vec![0, 500, 1000, 1500, 2000, 2500],
        "lossless messages all arrive, in order"
    );
    assert_eq!(last["v0"], 2997);
    assert_eq!(last["v1"], 2998);
    assert_eq!(last["v2"], 2999, "the newest value of each variant arrives");
    assert!(
        updates < UPDATES,
        "a lagging client got conflated updates ({updates})"
    );
    let metrics = gw.app.metrics.encode();
    assert!(
        !metrics.contains("pulsegate_messages_conflated_total 0\n"),
        "{metrics}"
    );
    gw.shutdown().await;
}

/// `ws.socket_send_buffer` (default 64 KiB) sets each client socket's
/// kernel send buffer (Linux reports twice the value asked for, for its
/// bookkeeping), read back with `ss` from the gateway's side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_send_buffer_is_the_configured_one() {
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(test_config(&redis)).await;
    let mut ws = connect(gw.local_addr, "/dashboard/ws/p1").await;
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(5)).await["type"],
        "initial_data"
    );
    let port = gw.local_addr.port();
    let out = std::process::Command::new("ss")
        .args([
            "-tmnH",
            "state",
            "established",
            "sport",
            "=",
            &format!(":{port}"),
        ])
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("tb131072"),
        "the gateway's socket should have a 128 KiB send buffer: {text}"
    );
}
