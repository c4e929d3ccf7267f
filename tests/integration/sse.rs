//! Server-Sent Events (`/sse/{persona}`, `/sse?channel=`), read as raw
//! HTTP/1.1 from a TCP socket (`sse_client.rs`).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use pulsegate::config::AuthMode;
use serde_json::{json, Value};
use tokio::net::TcpSocket;

use crate::common::*;

use crate::sse_client::{open, open_on};

const T: Duration = Duration::from_secs(10);

fn sse_config(redis: &RedisServer) -> pulsegate::config::Config {
    let mut c = test_config(redis);
    c.sse.keepalive_interval = Duration::from_millis(300);
    c
}

/// Live events carry the WebSocket's JSON, the offset as `id:` and the type
/// as `event:`; a client back with `Last-Event-ID` gets exactly what it
/// missed, then live ones; a quiet stream gets keep-alive comments; the
/// drain ends the stream with `event: reconnect` and a `retry:` hint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_then_an_exact_resume_with_last_event_id() {
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(sse_config(&redis)).await;
    let publisher = redis.client().await;
    let addr = gw.local_addr;
    // Every post its own pattern: no derived fatigue events in between.
    let post = |i: usize| posted(&format!("v{i}"), 0.05, &format!("pattern{i}"));
    ingest(&publisher, "p1", post(0)).await.unwrap();

    let mut sse = open(addr, "/sse/p1", &[]).await.expect("stream");
    let mut ws = connect(addr, "/dashboard/ws/p1").await;
    let first = sse.next_event(T).await;
    assert_eq!(first.event.as_deref(), Some("initial_data"));
    let snapshot = first.json();
    assert_eq!(first.id.as_deref(), snapshot["offset"].as_str());
    assert_eq!(snapshot["data"]["summary"]["total_variants"], 1);
    assert_eq!(next_json(&mut ws, T).await["type"], "initial_data");

    for i in 1..=3 {
        ingest(&publisher, "p1", post(i)).await.unwrap();
    }
    let mut last = String::new();
    for _ in 1..=3 {
        let e = sse.next_event(T).await;
        let from_ws = next_json(&mut ws, T).await;
        assert_eq!(e.event.as_deref(), Some("variant_update"));
        assert_eq!(e.json(), from_ws, "the same message as the WebSocket's");
        assert_eq!(e.id.as_deref(), from_ws["offset"].as_str());
        last = e.id.expect("id");
    }
    // Quiet now: keep-alive comments.
    let quiet = Instant::now();
    while sse.keepalives == 0 {
        assert!(quiet.elapsed() < T, "no keep-alive comment");
        let b = sse.next_block(T).await.expect("open");
        if b.comments.iter().any(|c| c == "keep-alive") {
            sse.keepalives += 1;
        }
    }
    drop(sse);

    let mut missed = Vec::new();
    for i in 10..15 {
        missed.push(ingest(&publisher, "p1", post(i)).await.unwrap());
    }
    let mut sse = open(addr, "/sse/p1?since=1-0", &[("Last-Event-ID", &last)])
        .await
        .expect("resumed stream");
    for id in &missed {
        let e = sse.next_event(T).await;
        assert_eq!(
            e.event.as_deref(),
            Some("variant_update"),
            "no initial_data: {e:?}"
        );
        assert_eq!(e.id.as_ref(), Some(id), "exactly the missed ones, in order");
    }
    let live = ingest(&publisher, "p1", post(20)).await.unwrap();
    assert_eq!(sse.next_event(T).await.id, Some(live), "then live ones");
    // The first stream is noticed gone at its next keep-alive.
    wait_until("the first stream to be gone", T, || async {
        let m = gw.app.metrics.encode();
        m.contains(r#"pulsegate_transport_connections_active{transport="sse"} 1"#)
            && m.contains(r#"pulsegate_transport_connections_total{transport="sse"} 2"#)
            && m.contains(r#"pulsegate_transport_connections_active{transport="websocket"} 1"#)
    })
    .await;

    let shutdown = tokio::spawn(gw.shutdown());
    let bye = sse.next_event(T).await;
    assert_eq!(bye.event.as_deref(), Some("reconnect"), "{bye:?}");
    let hint = bye.json()["reconnect_ms"].as_u64().expect("reconnect_ms");
    assert_eq!(bye.retry, Some(hint));
    assert!(
        sse.next_block(T).await.is_none(),
        "the stream ends after it"
    );
    shutdown.await.unwrap();
}

/// An offset trimmed away (or never given out) gets a fresh `initial_data`
/// with `recovered: false`; a malformed one is a 400 with a JSON body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_offsets_get_a_fresh_snapshot() {
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(sse_config(&redis)).await;
    let publisher = redis.client().await;
    let small = json!({"stream_maxlen": 100});
    let first = ingest_with(&publisher, "p1", posted("v0", 0.05, "hook"), small.clone())
        .await
        .unwrap();
    for i in 0..300 {
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
    for since in [first.as_str(), "99999999999999-0"] {
        let mut sse = open(gw.local_addr, "/sse/p1", &[("Last-Event-ID", since)])
            .await
            .expect("stream");
        let e = sse.next_event(T).await;
        let v = e.json();
        assert_eq!(
            (e.event.as_deref(), v["recovered"].as_bool()),
            (Some("initial_data"), Some(false)),
            "{since}"
        );
        assert_eq!(e.id.as_deref(), v["offset"].as_str());
    }
    let refused = open(gw.local_addr, "/sse/p1?since=yesterday", &[])
        .await
        .err()
        .expect("400");
    assert_eq!(refused.status, 400);
    assert_eq!(refused.body["error"]["code"], "invalid_since");
    let metrics = gw.app.metrics.encode();
    assert!(
        metrics.contains(r#"pulsegate_sse_errors_total{reason="invalid_since"} 1"#),
        "{metrics}"
    );
    gw.shutdown().await;
}

/// `/sse?channel=` streams the `/ws` messages of several channels, with
/// `<channel>@<offset>` ids, and resumes each from its own `since`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiplexed_channels_start_and_resume_each() {
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(sse_config(&redis)).await;
    let publisher = redis.client().await;
    let addr = gw.local_addr;
    for p in ["a", "b"] {
        ingest(&publisher, p, posted("v0", 0.05, "hook"))
            .await
            .unwrap();
    }
    let path = "/sse?channel=persona:a&channel=persona:b&channel=persona:a";
    let mut sse = open(addr, path, &[]).await.expect("stream");
    let mut started = HashSet::new();
    while started.len() < 2 {
        let ack = sse.next_event(T).await;
        assert_eq!(ack.event.as_deref(), Some("subscribed"), "{ack:?}");
        let v = ack.json();
        let channel = v["channel"].as_str().unwrap().to_owned();
        assert_eq!(v["recovered"], false);
        let snap = sse.next_event(T).await;
        assert_eq!(snap.event.as_deref(), Some("initial_data"));
        assert_eq!(snap.json()["channel"], channel.as_str());
        assert_eq!(
            snap.id,
            Some(format!("{channel}@{}", v["offset"].as_str().unwrap()))
        );
        started.insert(channel);
    }
    let mut last = std::collections::HashMap::new();
    for p in ["a", "b"] {
        let id = ingest(&publisher, p, perf("v0", 10, 1)).await.unwrap();
        let e = sse.next_event(T).await;
        assert_eq!(e.event.as_deref(), Some("message"));
        let v = e.json();
        assert_eq!(
            (v["channel"].as_str(), v["offset"].as_str()),
            (Some(&*format!("persona:{p}")), Some(id.as_str()))
        );
        assert_eq!(v["data"]["type"], "variant_update");
        assert_eq!(e.id, Some(format!("persona:{p}@{id}")));
        last.insert(p, id);
    }
    drop(sse);
    let missed_a = ingest(&publisher, "a", perf("v0", 20, 2)).await.unwrap();
    let missed_b = ingest(&publisher, "b", perf("v0", 20, 2)).await.unwrap();
    // `since` for b in the URL, a's position from Last-Event-ID.
    let path = format!(
        "/sse?channel=persona:a&channel=persona:b&since=persona:b@{}",
        last["b"]
    );
    let header = format!("persona:a@{}", last["a"]);
    let mut sse = open(addr, &path, &[("Last-Event-ID", &header)])
        .await
        .expect("resumed");
    let mut got = HashSet::new();
    for _ in 0..4 {
        let e = sse.next_event(T).await;
        let v = e.json();
        match e.event.as_deref() {
            Some("subscribed") => assert_eq!(v["recovered"], true, "{v}"),
            Some("message") => {
                got.insert(v["offset"].as_str().unwrap().to_owned());
            }
            other => panic!("unexpected {other:?}: {v}"),
        }
    }
    assert_eq!(got, HashSet::from([missed_a, missed_b]));

    for (path, code) in [
        ("/sse", "invalid_channel"),
        ("/sse?channel=room:1", "invalid_channel"),
        (
            "/sse?channel=persona:a&since=persona:z@1-0",
            "invalid_since",
        ),
    ] {
        let refused = open(addr, path, &[]).await.err().expect("refused");
        assert_eq!(
            (refused.status, refused.body["error"]["code"].as_str()),
            (400, Some(code)),
            "{path}"
        );
    }
    let many: String = (0..101).map(|i| format!("channel=persona:c{i}&")).collect();
    let refused = open(addr, &format!("/sse?{many}"), &[])
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.body["error"]["code"], "too_many_subscriptions");
    gw.shutdown().await;
}

const SECRET: &str = "an-hs256-test-secret-of-at-least-32-bytes";

fn token(personas: Value, exp: u64) -> String {
    let claims = json!({"sub":"alice","personas":personas,"role":"viewer","exp":exp});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Tokens (from `?token=`, as `EventSource` cannot set headers), Origin and
/// the connection limit apply as on the WebSocket endpoints; a token that
/// expires closes the stream with `event: close` (4001).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_origins_and_the_connection_limit_apply() {
    let redis = RedisServer::spawn().await;
    let mut c = sse_config(&redis);
    c.auth.mode = AuthMode::Jwt;
    c.auth.secret = Some(SECRET.into());
    c.auth.leeway = Duration::ZERO;
    c.auth.allowed_origins = vec!["https://dash.example.com".into()];
    c.ws.max_connections = 1;
    c.validate().expect("valid config");
    let gw = start_gateway(c).await;
    let addr = gw.local_addr;
    let now = jsonwebtoken::get_current_timestamp();
    let pa = token(json!(["pa"]), now + 300);

    let refused = open(addr, "/sse/pa", &[]).await.err().expect("401");
    assert_eq!(
        (refused.status, refused.body["error"]["code"].as_str()),
        (401, Some("missing_token"))
    );
    let refused = open(addr, &format!("/sse/pb?token={pa}"), &[])
        .await
        .err()
        .expect("403");
    assert_eq!(
        (refused.status, refused.body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let refused = open(
        addr,
        &format!("/sse?channel=persona:pa&channel=persona:pb&token={pa}"),
        &[],
    )
    .await
    .err()
    .expect("403");
    assert_eq!(refused.status, 403);
    let evil = [("Origin", "https://evil.example.com")];
    let refused = open(addr, &format!("/sse/pa?token={pa}"), &evil)
        .await
        .err()
        .expect("403");
    assert_eq!(
        (refused.status, refused.body["error"]["code"].as_str()),
        (403, Some("origin_not_allowed"))
    );

    let good = [("Origin", "https://dash.example.com")];
    let short = token(json!(["pa"]), now + 2);
    let mut sse = open(addr, &format!("/sse/pa?token={short}"), &good)
        .await
        .expect("stream");
    assert_eq!(
        sse.next_event(T).await.event.as_deref(),
        Some("initial_data")
    );
    let refused = open(addr, &format!("/sse/pa?token={pa}"), &good)
        .await
        .err()
        .expect("503");
    assert_eq!(
        (refused.status, refused.body["error"]["code"].as_str()),
        (503, Some("too_many_connections"))
    );
    let bye = sse.next_event(T).await;
    assert_eq!(bye.event.as_deref(), Some("close"), "{bye:?}");
    assert_eq!(bye.json()["code"], 4001);
    assert!(sse.next_block(T).await.is_none());
    let metrics = gw.app.metrics.encode();
    for line in [
        r#"pulsegate_connections_rejected_total{reason="origin"} 1"#,
        r#"pulsegate_connections_rejected_total{reason="max_connections"} 1"#,
        r#"pulsegate_sse_errors_total{reason="token_expired"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
    gw.shutdown().await;
}

/// A client that stops reading overflows its queue like a WebSocket client
/// and is disconnected (its connection dropped after the close grace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_disconnected() {
    let redis = RedisServer::spawn().await;
    let mut c = sse_config(&redis);
    c.ws.queue_max_messages = 50;
    c.ws.max_replay = 10;
    // The default `task` namespace's `recent` would not fit that replay bound.
    c.channels = Vec::new();
    c.ws.slow_close_grace = Duration::from_millis(300);
    c.validate().expect("valid config");
    let gw = start_gateway(c).await;
    let publisher = redis.client().await;
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let stream = socket.connect(gw.local_addr).await.expect("connect");
    let mut sse = open_on(stream, "/sse/p1", &[]).await.expect("stream");
    assert_eq!(
        sse.next_event(T).await.event.as_deref(),
        Some("initial_data")
    );
    let big = "x".repeat(4000);
    let start = Instant::now();
    let mut n = 0;
    while !gw
        .app
        .metrics
        .encode()
        .contains("pulsegate_slow_disconnects_total 1")
    {
        assert!(start.elapsed() < 3 * T, "never disconnected");
        for _ in 0..20 {
            // New variants each time: a repeated post is stale, not published.
            n += 1;
            let mut e = posted(&format!("v{n}"), 0.05, &format!("pattern{n}"));
            e["content"] = json!(big);
            ingest(&publisher, "p1", e).await.unwrap();
        }
    }
    // Reading again finds the end of the stream within the grace (what
    // was in flight, then EOF), not a stream that goes on.
    let end = Instant::now();
    while sse.next_block(T).await.is_some() {
        assert!(end.elapsed() < T, "the stream went on");
    }
    wait_until("the SSE slot to be freed", T, || async {
        let m = gw.app.metrics.encode();
        m.contains(r#"pulsegate_transport_connections_active{transport="sse"} 0"#)
            && m.contains(r#"pulsegate_sse_errors_total{reason="slow_consumer"} 1"#)
    })
    .await;
    gw.shutdown().await;
}
