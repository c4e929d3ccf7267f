//! Gap-free snapshot + live, and resume with `?since=`.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use crate::common::*;

#[path = "resume_ws.rs"]
mod ws;

const T: Duration = Duration::from_secs(10);

/// Offsets are `<ms>-<seq>`; compare numerically.
fn key(o: &str) -> (u64, u64) {
    let (a, b) = o.split_once('-').expect("offset");
    (a.parse().unwrap(), b.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_connecting_mid_stream_see_every_event_once() {
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(test_config(&redis)).await;
    let publisher = redis.client().await;
    const EVENTS: usize = 1500;
    let producer = {
        let publisher = publisher.clone();
        tokio::spawn(async move {
            for i in 0..EVENTS {
                ingest(&publisher, "p1", posted(&format!("v{i}"), 0.05, "hook"))
                    .await
                    .expect("ingest");
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };
    // Clients join at different moments while events stream in.
    let mut clients = Vec::new();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(15)).await;
        let addr = gw.local_addr;
        clients.push(tokio::spawn(async move {
            let mut ws = connect(addr, "/dashboard/ws/p1").await;
            let first = next_json(&mut ws, T).await;
            assert_eq!(first["type"], "initial_data");
            let start = first["offset"].as_str().map(str::to_owned);
            let mut seen = Vec::new();
            loop {
                let v = next_json(&mut ws, T).await;
                assert_eq!(v["type"], "variant_update", "{v}");
                let offset = v["offset"].as_str().expect("offset").to_owned();
                let done = v["data"]["variant_id"] == format!("v{}", EVENTS - 1);
                seen.push(offset);
                if done {
                    return (start, seen);
                }
            }
        }));
    }
    producer.await.unwrap();
    let all = stream_ids(&publisher, "pulse:{p1}:stream").await;
    // One more: the pattern's fatigue event, derived by the function (docs/decisions.md D4).
    assert_eq!(all.len(), EVENTS + 1);
    for c in clients {
        let (start, seen) = c.await.unwrap();
        let expected: Vec<String> = all
            .iter()
            .filter(|id| start.as_deref().is_none_or(|s| key(id) > key(s)))
            .cloned()
            .collect();
        let first_diff = seen.iter().zip(&expected).position(|(a, b)| a != b);
        assert_eq!(
            (seen.len(), first_diff),
            (expected.len(), None),
            "no gap and no duplicate after the snapshot offset {start:?}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_replays_missed_events_then_live_ones() {
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(test_config(&redis)).await;
    let publisher = redis.client().await;
    ingest(&publisher, "p1", posted("v0", 0.05, "hook"))
        .await
        .unwrap();

    let mut ws = connect(gw.local_addr, "/dashboard/ws/p1").await;
    let first = next_json(&mut ws, T).await;
    let mut last = first["offset"].as_str().unwrap().to_owned();
    ingest(&publisher, "p1", perf("v0", 100, 5)).await.unwrap();
    let v = next_json(&mut ws, T).await;
    last = v["offset"].as_str().map(str::to_owned).unwrap_or(last);
    drop(ws);

    let mut missed = Vec::new();
    for i in 0..500 {
        let event = posted(&format!("m{i}"), 0.05, &format!("pattern{i}"));
        missed.push(ingest(&publisher, "p1", event).await.unwrap());
    }
    let mut ws = connect(gw.local_addr, &format!("/dashboard/ws/p1?since={last}")).await;
    for expected in &missed {
        let v = next_json(&mut ws, T).await;
        assert_eq!(
            v["type"], "variant_update",
            "no initial_data on a successful resume: {v}"
        );
        assert_eq!(v["offset"].as_str(), Some(expected.as_str()));
    }
    let live = ingest(&publisher, "p1", posted("live", 0.05, "other"))
        .await
        .unwrap();
    let v = next_json(&mut ws, T).await;
    assert_eq!(
        v["offset"].as_str(),
        Some(live.as_str()),
        "then live events, none twice"
    );

    // Resuming from the newest offset: nothing to replay, only live events.
    let mut ws2 = connect(gw.local_addr, &format!("/dashboard/ws/p1?since={live}")).await;
    let next = ingest(&publisher, "p1", posted("after", 0.05, "another"))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut ws2, T).await["offset"].as_str(),
        Some(next.as_str())
    );
    let metrics = gw.app.metrics.encode();
    assert!(
        metrics.contains(r#"pulsegate_resumes_total{reason="complete"} 2"#),
        "{metrics}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrecoverable_offsets_get_a_fresh_snapshot() {
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(test_config(&redis)).await;
    let publisher = redis.client().await;
    let small = json!({"stream_maxlen": 100});
    let first = ingest_with(&publisher, "p1", posted("v0", 0.05, "hook"), small.clone())
        .await
        .unwrap();
    for i in 0..1000 {
        ingest_with(
            &publisher,
            "p1",
            posted(&format!("t{i}"), 0.05, "hook"),
            small.clone(),
        )
        .await
        .unwrap();
    }
    let ids: HashSet<String> = stream_ids(&publisher, "pulse:{p1}:stream")
        .await
        .into_iter()
        .collect();
    assert!(!ids.contains(&first), "the first entry was trimmed away");

    let mut ws = connect(gw.local_addr, &format!("/dashboard/ws/p1?since={first}")).await;
    let v = next_json(&mut ws, T).await;
    assert_eq!(v["type"], "initial_data");
    assert_eq!(v["recovered"], false);
    assert_eq!(v["data"]["summary"]["total_variants"], 1001);

    let mut ws = connect(gw.local_addr, "/dashboard/ws/p1?since=99999999999999-0").await;
    let v = next_json(&mut ws, T).await;
    assert_eq!(
        (v["type"].as_str(), v["recovered"].as_bool()),
        (Some("initial_data"), Some(false))
    );
    let mut ws = connect(gw.local_addr, "/dashboard/ws/nobody?since=1-0").await;
    assert_eq!(next_json(&mut ws, T).await["recovered"], false);

    let (status, body) = http_get(gw.local_addr, "/dashboard/ws/p1?since=yesterday").await;
    assert_eq!(status, 400);
    assert!(body.contains("invalid_since"), "{body}");
    gw.shutdown().await;
}
