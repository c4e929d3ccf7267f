//! Resumes served from memory: while a gateway follows a persona for other
//! clients, a client resuming with `since` within the publications it saw
//! gets the missed events without any Redis read (counted by Redis itself,
//! `INFO commandstats`); once the subscription broke, the same resume goes
//! to Redis again. Either way every event arrives once, in order.

use std::time::Duration;

use fred::prelude::*;
use serde_json::{json, Value};

use crate::common::*;

const T: Duration = Duration::from_secs(15);

/// Posts `n` variants `<tag><i>`; returns their offsets.
async fn post(publisher: &Client, tag: &str, n: usize) -> Vec<String> {
    let mut offsets = Vec::with_capacity(n);
    for i in 0..n {
        let event = posted(&format!("{tag}{i}"), 0.05, &format!("{tag}-{i}"));
        offsets.push(ingest(publisher, "p1", event).await.expect("ingest"));
    }
    offsets
}

/// Reads `/dashboard/ws` updates until the one at `last`; returns their offsets.
async fn updates_until(ws: &mut Ws, last: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let v = next_json(ws, T).await;
        if v["type"] == "status" {
            continue;
        }
        assert_eq!(v["type"], "variant_update", "{v}");
        let offset = v["offset"].as_str().expect("offset").to_owned();
        let done = offset == last;
        seen.push(offset);
        if done {
            return seen;
        }
    }
}

/// Reads `/ws` messages until the one at `last`; returns their offsets.
async fn messages_until(ws: &mut Ws, last: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let v: Value = next_json(ws, T).await;
        if v["type"] == "status" {
            continue;
        }
        assert_eq!(v["type"], "message", "{v}");
        assert_eq!(v["channel"], "persona:p1", "{v}");
        let offset = v["offset"].as_str().expect("offset").to_owned();
        let done = offset == last;
        seen.push(offset);
        if done {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_within_what_the_gateway_saw_need_no_redis_read() {
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(test_config(&redis)).await;
    let publisher = redis.client().await;
    ingest(&publisher, "p1", posted("seed", 0.05, "seed"))
        .await
        .expect("ingest");

    // A watcher keeps the persona followed, as other clients do in a deploy.
    let mut watcher = connect(gw.local_addr, "/dashboard/ws/p1").await;
    assert_eq!(next_json(&mut watcher, T).await["type"], "initial_data");
    let first = post(&publisher, "a", 10).await;
    updates_until(&mut watcher, &first[9]).await;

    let xrange = command_calls(&publisher, "xrange").await;
    // On the dashboard endpoint: the events after the 4th, then live ones.
    let mut dash = connect(
        gw.local_addr,
        &format!("/dashboard/ws/p1?since={}", first[3]),
    )
    .await;
    assert_eq!(updates_until(&mut dash, &first[9]).await, first[4..]);
    // On /ws, from the 6th.
    let mut ws = connect(gw.local_addr, "/ws").await;
    send_json(
        &mut ws,
        json!({"type":"subscribe","channel":"persona:p1","since":first[5]}),
    )
    .await;
    let ack = next_json(&mut ws, T).await;
    assert_eq!(ack["type"], "subscribed", "{ack}");
    assert_eq!(ack["recovered"], true, "{ack}");
    assert_eq!(ack["offset"], first[5].as_str(), "{ack}");
    assert_eq!(messages_until(&mut ws, &first[9]).await, first[6..]);
    let live = post(&publisher, "b", 2).await;
    assert_eq!(updates_until(&mut dash, &live[1]).await, live);
    assert_eq!(messages_until(&mut ws, &live[1]).await, live);
    updates_until(&mut watcher, &live[1]).await;

    assert_eq!(
        command_calls(&publisher, "xrange").await,
        xrange,
        "no replay read"
    );
    let metrics = gw.app.metrics.encode();
    assert_eq!(
        counter(&metrics, "pulsegate_replay_recent_total"),
        2,
        "{metrics}"
    );
    assert_eq!(
        counter(&metrics, "pulsegate_replay_reads_total"),
        0,
        "{metrics}"
    );

    // The gateway's subscription breaks: what it holds may have holes now,
    // so a resume from before the break reads Redis, and is still exact.
    let killed: i64 = publisher
        .custom(
            fred::cmd!("CLIENT"),
            vec!["KILL".to_owned(), "TYPE".to_owned(), "pubsub".to_owned()],
        )
        .await
        .expect("CLIENT KILL");
    assert!(killed >= 1, "the gateway's subscriber was killed");
    wait_until("the subscription is back", T, || async {
        numsub(&publisher, "pulse:{p1}:events").await == 1
    })
    .await;
    wait_http_ok(gw.local_addr, "/readyz", T).await;
    let after = post(&publisher, "c", 3).await;
    updates_until(&mut watcher, &after[2]).await;
    let mut late = connect(
        gw.local_addr,
        &format!("/dashboard/ws/p1?since={}", live[0]),
    )
    .await;
    let mut expected = vec![live[1].clone()];
    expected.extend(after.iter().cloned());
    assert_eq!(updates_until(&mut late, &after[2]).await, expected);
    let metrics = gw.app.metrics.encode();
    assert_eq!(
        counter(&metrics, "pulsegate_replay_reads_total"),
        1,
        "{metrics}"
    );
    assert_eq!(
        counter(&metrics, "pulsegate_replay_recent_total"),
        2,
        "{metrics}"
    );
    gw.shutdown().await;
}

/// Clients moved by a restart land on an instance that did not follow
/// their persona yet: its channel starts with one read of the stream's
/// newest entries, and every resume from within them is served from it:
/// one `XREVRANGE` for all of them, no replay, each client getting exactly
/// what it missed and then live events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_channel_starts_its_window_with_one_read_for_every_resume() {
    const CLIENTS: usize = 12;
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(test_config(&redis)).await;
    let publisher = redis.client().await;
    // 40 entries before anyone here follows p1; the window keeps 32.
    let history = post(&publisher, "h", 40).await;
    let xrevrange = command_calls(&publisher, "xrevrange").await;
    let xrange = command_calls(&publisher, "xrange").await;
    let multi = command_calls(&publisher, "multi").await;

    // All at once, half on each endpoint, each from its own offset among
    // the newest 32.
    let joins = (0..CLIENTS).map(|i| {
        let since = history[8 + 2 * i].clone();
        let addr = gw.local_addr;
        async move {
            if i % 2 == 0 {
                (
                    connect(addr, &format!("/dashboard/ws/p1?since={since}")).await,
                    i,
                )
            } else {
                let mut ws = connect(addr, "/ws").await;
                send_json(
                    &mut ws,
                    json!({"type":"subscribe","channel":"persona:p1","since":since}),
                )
                .await;
                let ack = next_json(&mut ws, T).await;
                assert_eq!(ack["type"], "subscribed", "{ack}");
                assert_eq!(ack["recovered"], true, "{ack}");
                assert_eq!(ack["offset"], since.as_str(), "{ack}");
                (ws, i)
            }
        }
    });
    let mut clients = futures_util::future::join_all(joins).await;
    for (ws, i) in clients.iter_mut() {
        let missed = &history[8 + 2 * *i + 1..];
        let seen = if *i % 2 == 0 {
            updates_until(ws, &history[39]).await
        } else {
            messages_until(ws, &history[39]).await
        };
        assert_eq!(seen, missed, "client {i}");
    }
    let live = post(&publisher, "l", 3).await;
    for (ws, i) in clients.iter_mut() {
        let seen = if *i % 2 == 0 {
            updates_until(ws, &live[2]).await
        } else {
            messages_until(ws, &live[2]).await
        };
        assert_eq!(seen, live, "client {i}");
    }

    assert_eq!(
        command_calls(&publisher, "xrevrange").await - xrevrange,
        1,
        "one read started the window"
    );
    assert_eq!(
        command_calls(&publisher, "xrange").await,
        xrange,
        "no replay"
    );
    assert_eq!(command_calls(&publisher, "multi").await, multi, "no replay");
    let metrics = gw.app.metrics.encode();
    for (name, value) in [
        ("pulsegate_recent_prefills_total", 1),
        ("pulsegate_recent_prefilled_entries_total", 32),
        ("pulsegate_replay_recent_total", CLIENTS as u64),
        ("pulsegate_replay_reads_total", 0),
    ] {
        assert_eq!(counter(&metrics, name), value, "{name}: {metrics}");
    }
    gw.shutdown().await;
}
