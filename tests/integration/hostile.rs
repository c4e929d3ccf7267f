//! Hostile input (issue: "no input crashes, wedges or silences the gateway"):
//! deeply nested JSON through each way in, oversized publications, message
//! floods over the rate, and request bodies that never finish.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fred::prelude::{Client, ClientLike, PubsubInterface};
use futures_util::{SinkExt, StreamExt};
use pulsegate::config::Rate;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

const LEVELS: usize = 100_000;

/// `{"persona_id":"p1","x":<LEVELS levels of open>1<close>}`
fn deep_event(open: &str, close: &str) -> String {
    format!(
        r#"{{"persona_id":"p1","x":{}1{}}}"#,
        open.repeat(LEVELS),
        close.repeat(LEVELS)
    )
}

const SHAPES: [(&str, &str); 2] = [(r#"{"a":"#, "}"), ("[", "]")];

async fn metric(addr: SocketAddr, line_prefix: &str) -> u64 {
    let (_, text) = http_get(addr, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// The next text message whose `type` is `kind`, skipping others.
async fn next_of_type(ws: &mut Ws, kind: &str) -> serde_json::Value {
    loop {
        let m = next_json(ws, Duration::from_secs(10)).await;
        if m["type"] == kind {
            return m;
        }
    }
}

#[tokio::test]
async fn deep_json_is_refused_on_every_way_in_and_the_gateway_keeps_serving() {
    let redis = RedisServer::spawn().await;
    let mut c = test_config(&redis);
    // Large enough that the depth bound, not the size bounds, is what refuses.
    c.ingest.max_body_bytes = 4 << 20;
    c.ws.max_message_bytes = 4 << 20;
    let gw = start_gateway(c).await;
    let addr = gw.local_addr;
    let client = Client::new(
        fred::prelude::Config::from_url(&redis.url()).unwrap(),
        None,
        None,
        None,
    );
    client.init().await.unwrap();
    ingest(&client, "p1", posted("v1", 0.1, "hook"))
        .await
        .unwrap();

    // Watchers on both endpoints: they must keep receiving throughout.
    let mut dash = connect(addr, "/dashboard/ws/p1").await;
    assert_eq!(
        next_of_type(&mut dash, "initial_data").await["type"],
        "initial_data"
    );
    let mut multi = connect(addr, "/ws").await;
    send_json(
        &mut multi,
        json!({"type":"subscribe","channel":"persona:p1"}),
    )
    .await;
    next_of_type(&mut multi, "subscribed").await;

    for (open, close) in SHAPES {
        let body = deep_event(open, close);

        // 1. An HTTP ingest body: 400 naming the body.
        let (status, answer) =
            http_json(addr, "POST", "/api/events/performance-update", Some(&body)).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["field"], "body", "{answer}");

        // 2. A WebSocket message: `invalid_json`, and the connection stays.
        let mut ws = connect(addr, "/ws").await;
        ws.send(Message::Text(body.clone())).await.unwrap();
        let e = next_json(&mut ws, Duration::from_secs(10)).await;
        assert_eq!(e["code"], "invalid_json", "{e}");
        send_json(&mut ws, json!({"type":"ping"})).await;
        assert_eq!(
            next_json(&mut ws, Duration::from_secs(5)).await["type"],
            "pong"
        );

        // 3. A publication on a channel the gateway subscribes to: dropped.
        let dropped = r#"pulsegate_redis_messages_dropped_total{reason="too_deep"} "#;
        let before = metric(addr, dropped).await;
        let n: i64 = client
            .publish("pulse:{p1}:events", body.as_str())
            .await
            .unwrap();
        assert_eq!(n, 1, "the gateway is subscribed");
        wait_until(
            "the deep publication to be counted",
            Duration::from_secs(10),
            || async { metric(addr, dropped).await > before },
        )
        .await;
    }

    // A publication over redis.max_message_bytes (default 1 MiB) is dropped too.
    let huge = format!(r#"{{"type":"x","pad":"{}"}}"#, "a".repeat(10 << 20));
    let _: i64 = client
        .publish("pulse:{p1}:events", huge.as_str())
        .await
        .unwrap();
    wait_until(
        "the huge publication to be counted",
        Duration::from_secs(10),
        || async {
            metric(
                addr,
                r#"pulsegate_redis_messages_dropped_total{reason="too_large"} "#,
            )
            .await
                > 0
        },
    )
    .await;

    // Still up, and still delivering to the clients that were there all along.
    ingest(&client, "p1", perf("v1", 10, 1)).await.unwrap();
    let u = next_of_type(&mut dash, "variant_update").await;
    assert_eq!(u["data"]["variant_id"], "v1", "{u}");
    let m = next_of_type(&mut multi, "message").await;
    assert_eq!(m["data"]["data"]["variant_id"], "v1", "{m}");
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    gw.shutdown().await;
}

/// Counts answers to `sent` messages: (carried out, refused), panicking on
/// anything else.
async fn tally(ws: &mut Ws, sent: usize, carried: &str) -> (usize, usize) {
    let (mut done, mut refused) = (0, 0);
    while done + refused < sent {
        let m = next_json(ws, Duration::from_secs(10)).await;
        if m["type"] == carried {
            done += 1;
        } else if m["type"] == "initial_data" && carried == "subscribed" {
            // Each subscribe's snapshot, after its ack.
        } else if m["code"] == "rate_limited" {
            refused += 1;
        } else {
            panic!("unexpected answer {m}");
        }
    }
    (done, refused)
}

#[tokio::test]
async fn messages_over_the_rate_are_answered_and_not_carried_out() {
    let _turn = heavy().await;
    const BURST: usize = 10;
    const SENT: usize = 300;
    let redis = RedisServer::spawn().await;
    let mut c = test_config(&redis);
    c.limits.ws_messages = Rate {
        per_second: 1,
        burst: BURST as u32,
    };
    c.limits.ws_message_strikes = 290;
    let gw = start_gateway(c).await;
    let addr = gw.local_addr;

    // 300 pings at once: the burst (plus a token a second) is carried out,
    // every other one answered `rate_limited` and nothing more.
    let mut ws = connect(addr, "/ws").await;
    let started = Instant::now();
    for _ in 0..SENT {
        ws.feed(Message::Text(json!({"type":"ping"}).to_string()))
            .await
            .unwrap();
    }
    ws.flush().await.unwrap();
    let (pongs, refused) = tally(&mut ws, SENT, "pong").await;
    let allowed = BURST + started.elapsed().as_secs() as usize + 1;
    assert!(
        (BURST..=allowed).contains(&pongs),
        "{pongs} pongs, {refused} refused"
    );
    assert_eq!(pongs + refused, SENT);
    // Past the strikes: 1008, after the answers already queued.
    for _ in 0..SENT {
        if ws
            .send(Message::Text(json!({"type":"ping"}).to_string()))
            .await
            .is_err()
        {
            break;
        }
    }
    let (code, _) = expect_close(&mut ws, Duration::from_secs(10)).await;
    assert_eq!(code, 1008);

    // 300 subscribes at once: only the carried-out ones subscribe.
    let mut ws = connect(addr, "/ws").await;
    let started = Instant::now();
    for i in 0..SENT {
        let channel = format!("persona:s{i}");
        ws.feed(Message::Text(
            json!({"type":"subscribe","channel":channel}).to_string(),
        ))
        .await
        .unwrap();
    }
    ws.flush().await.unwrap();
    let (acks, refused) = tally(&mut ws, SENT, "subscribed").await;
    let allowed = BURST + started.elapsed().as_secs() as usize + 1;
    assert!(
        (BURST..=allowed).contains(&acks),
        "{acks} acks, {refused} refused"
    );
    assert_eq!(acks + refused, SENT);
    let admin = Client::new(
        fred::prelude::Config::from_url(&redis.url()).unwrap(),
        None,
        None,
        None,
    );
    admin.init().await.unwrap();
    let channels: Vec<String> = admin.pubsub_channels("pulse:{s*").await.unwrap();
    assert_eq!(channels.len(), acks, "{channels:?}");

    // WebSocket ping frames count too, and are answered before the close.
    let mut c = test_config(&redis);
    c.limits.ws_messages = Rate {
        per_second: 1,
        burst: 2,
    };
    c.limits.ws_message_strikes = 3;
    let gw2 = start_gateway(c).await;
    let mut ws = connect(gw2.local_addr, "/ws").await;
    for _ in 0..20 {
        ws.feed(Message::Ping(b"p".to_vec())).await.unwrap();
    }
    ws.flush().await.unwrap();
    let (mut pongs, mut errors) = (0, 0);
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Pong(_)))) => pongs += 1,
            Ok(Some(Ok(Message::Text(t)))) => {
                assert!(t.contains("rate_limited"), "{t}");
                errors += 1;
            }
            Ok(Some(Ok(Message::Close(Some(f))))) => break u16::from(f.code),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(code, 1008);
    assert!(pongs <= 3, "{pongs} pongs");
    assert_eq!(errors, 3, "each refused ping is answered before the close");
    gw2.shutdown().await;
    gw.shutdown().await;
}

/// Sends a request head promising more body than it sends, then waits.
async fn short_body(addr: SocketAddr) -> (u16, Duration, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = "POST /api/events/early-kill HTTP/1.1\r\nHost: t\r\n\
                Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"persona_id\"";
    s.write_all(head.as_bytes()).await.unwrap();
    let sent = Instant::now();
    let mut out = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
        .await
        .is_ok();
    (
        status_of(&String::from_utf8_lossy(&out)),
        sent.elapsed(),
        ended,
    )
}

#[tokio::test]
async fn unfinished_bodies_get_408_and_bad_chunks_400() {
    let _turn = heavy().await;
    let redis = RedisServer::spawn().await;
    let mut c = test_config(&redis);
    c.http.body_timeout = Duration::from_secs(2);
    let gw = start_gateway(c).await;
    let addr = gw.local_addr;

    let all = futures_util::future::join_all((0..100).map(|_| short_body(addr))).await;
    for (status, took, ended) in all {
        assert_eq!(status, 408);
        assert!(ended, "the connection was closed");
        assert!(took < Duration::from_secs(3), "closed after {took:?}");
    }

    for chunked in [
        "zz\r\n{}\r\n0\r\n\r\n",
        "-1\r\n{}\r\n0\r\n\r\n",
        "fffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
        "2\r\n{}XX0\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "POST /api/events/early-kill HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\
             Content-Type: application/json\r\n\r\n{chunked}"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        assert_eq!(status_of(&text), 400, "{chunked:?}: {text}");
        assert!(text.contains("malformed_body"), "{text}");
    }
    gw.shutdown().await;
}
