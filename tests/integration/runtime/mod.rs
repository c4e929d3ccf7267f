//! The gateway's own metrics on `system:runtime` (docs/protocol.md, "The
//! gateway's own metrics"): samples at the interval with every field,
//! `request_metrics`, no sampling while nobody watches, the admin role with
//! auth on. `top.rs`: `pulsegate top` in a pseudo-terminal.

mod top;

use std::time::Duration;

use fred::prelude::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::common::*;

const WAIT: Duration = Duration::from_secs(10);
const SECRET: &str = "an-hs256-test-secret-of-at-least-32-bytes";

fn config(redis: &RedisServer, interval_ms: u64) -> pulsegate::config::Config {
    let mut c = test_config(redis);
    c.runtime.interval = Duration::from_millis(interval_ms);
    c.validate().expect("valid config");
    c
}

/// The next `{"type":"runtime"}` message, skipping anything else.
async fn next_sample(ws: &mut Ws) -> Value {
    loop {
        let m = next_json(ws, WAIT).await;
        if m["type"] == "runtime" {
            return m;
        }
    }
}

/// Every settled field is there with the right type, and the figures a test
/// can know are what they must be.
fn check_sample(m: &Value, connections: u64) {
    let ts = m["timestamp"].as_str().expect("timestamp");
    assert!(pulsegate::time::parse_rfc3339_ms(ts).is_some(), "{ts}");
    let d = &m["data"];
    let keys: Vec<&str> = d
        .as_object()
        .expect("data")
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(keys.len(), 16, "{keys:?}");
    for k in [
        "cpu_percent",
        "memory_mb",
        "memory_percent",
        "messages_in_per_s",
        "deliveries_per_s",
        "outbox_depth_mean",
        "rate_limited_per_s",
        "errors_per_s",
    ] {
        let v = d[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} is not a number: {d}"));
        assert!(v >= 0.0, "{k} = {v}");
    }
    for k in [
        "thread_count",
        "connections",
        "subscriptions",
        "outbox_depth_max",
        "slow_disconnects",
    ] {
        assert!(d[k].as_u64().is_some(), "{k} is not a count: {d}");
    }
    assert!(d["memory_mb"].as_f64().unwrap() > 1.0, "{d}");
    assert!(d["memory_percent"].as_f64().unwrap() < 100.0, "{d}");
    assert!(d["thread_count"].as_u64().unwrap() >= 1, "{d}");
    assert_eq!(d["connections"], connections, "{d}");
    assert_eq!(d["redis"], "up");
    // No database in these tests: no audit on this instance.
    assert_eq!(d["postgres"], "off");
    assert!(d["audit_lag_seconds"].is_null());
}

async fn samples_taken(addr: std::net::SocketAddr) -> u64 {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix("pulsegate_runtime_samples_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("pulsegate_runtime_samples_total in /metrics")
}

#[tokio::test]
async fn samples_arrive_at_the_interval_with_every_field() {
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(config(&redis, 200)).await;
    let addr = gw.local_addr;
    // Three other clients, one of them following a persona that publishes.
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(connect(addr, "/ws").await);
    }
    send_json(
        &mut others[0],
        json!({"type":"subscribe","channel":"persona:rt"}),
    )
    .await;
    assert_eq!(next_json(&mut others[0], WAIT).await["type"], "subscribed");

    let mut ws = connect(addr, "/ws").await;
    send_json(
        &mut ws,
        json!({"type":"subscribe","channel":"system:runtime"}),
    )
    .await;
    let ack = next_json(&mut ws, WAIT).await;
    assert_eq!(
        ack,
        json!({"type":"subscribed","channel":"system:runtime","offset":null,"recovered":false})
    );
    let publisher = redis.client().await;
    let mut stamps = Vec::new();
    let mut busy = false;
    for i in 0..8 {
        // Publications between samples: messages in and deliveries.
        for n in 0..5 {
            let _: i64 = publisher
                .publish(
                    "pulse:{rt}:events",
                    json!({"type":"x","n":i * 5 + n}).to_string(),
                )
                .await
                .expect("PUBLISH");
        }
        let m = next_sample(&mut ws).await;
        check_sample(&m, 4);
        let d = &m["data"];
        // The watcher and the persona subscriber, at least.
        assert!(d["subscriptions"].as_u64().unwrap() >= 2, "{d}");
        busy |= d["messages_in_per_s"].as_f64().unwrap() > 0.0
            && d["deliveries_per_s"].as_f64().unwrap() > 0.0;
        stamps.push(pulsegate::time::parse_rfc3339_ms(m["timestamp"].as_str().unwrap()).unwrap());
    }
    assert!(busy, "no sample saw the publications");
    // At the interval, never faster (a lower bound: a slow machine may only
    // make them later).
    for w in stamps.windows(2) {
        assert!(
            w[1] - w[0] >= 100,
            "samples {} ms apart: {stamps:?}",
            w[1] - w[0]
        );
    }
    // A client leaving shows in the next samples.
    drop(others.pop());
    wait_until_sample(&mut ws, |d| d["connections"] == 3).await;
    gw.shutdown().await;
}

async fn wait_until_sample(ws: &mut Ws, f: impl Fn(&Value) -> bool) {
    for _ in 0..50 {
        if f(&next_sample(ws).await["data"]) {
            return;
        }
    }
    panic!("no sample matched");
}

#[tokio::test]
async fn request_metrics_answers_at_once_on_both_endpoints() {
    let redis = RedisServer::spawn().await;
    // An hour between samples: only request_metrics can answer in time.
    let gw = start_gateway(config(&redis, 60_000)).await;
    let mut ws = connect(gw.local_addr, "/ws").await;
    send_json(&mut ws, json!({"type":"request_metrics"})).await;
    let m = next_json(&mut ws, WAIT).await;
    assert_eq!(m["type"], "runtime", "{m}");
    check_sample(&m, 1);
    let mut dash = connect(gw.local_addr, "/dashboard/ws/rt").await;
    assert_eq!(next_json(&mut dash, WAIT).await["type"], "initial_data");
    send_json(&mut dash, json!({"type":"request_metrics"})).await;
    check_sample(&next_sample(&mut dash).await, 2);
    // Asking is not watching: nothing follows on its own.
    send_json(&mut ws, json!({"type":"ping"})).await;
    assert_eq!(next_json(&mut ws, WAIT).await["type"], "pong");
    gw.shutdown().await;
}

#[tokio::test]
async fn nothing_is_sampled_while_nobody_watches() {
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(config(&redis, 100)).await;
    let addr = gw.local_addr;
    let mut idle = connect(addr, "/ws").await;
    send_json(
        &mut idle,
        json!({"type":"subscribe","channel":"persona:rt"}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(samples_taken(addr).await, 0, "sampled with nobody watching");

    // Watching, then unsubscribing.
    let mut ws = connect(addr, "/ws").await;
    send_json(
        &mut ws,
        json!({"type":"subscribe","channel":"system:runtime"}),
    )
    .await;
    for _ in 0..4 {
        next_sample(&mut ws).await;
    }
    assert!(samples_taken(addr).await >= 4);
    send_json(
        &mut ws,
        json!({"type":"unsubscribe","channel":"system:runtime"}),
    )
    .await;
    loop {
        let m = next_json(&mut ws, WAIT).await;
        if m["type"] == "unsubscribed" {
            assert_eq!(m["channel"], "system:runtime");
            break;
        }
    }
    assert_stays_idle(addr).await;

    // Watching, then closing the connection without a word.
    send_json(
        &mut ws,
        json!({"type":"subscribe","channel":"system:runtime"}),
    )
    .await;
    next_sample(&mut ws).await;
    next_sample(&mut ws).await;
    drop(ws);
    assert_stays_idle(addr).await;
    let (_, metrics) = http_get(addr, "/metrics").await;
    assert!(
        metrics.contains("pulsegate_runtime_watchers 0"),
        "{metrics}"
    );
    gw.shutdown().await;
}

/// Once the sampler has seen the last watcher go, no sample is taken.
async fn assert_stays_idle(addr: std::net::SocketAddr) {
    // The sampler notices the count change on its task: give it a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = samples_taken(addr).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        samples_taken(addr).await,
        before,
        "sampled after the last watcher left"
    );
}

fn token(role: &str) -> String {
    let exp = jsonwebtoken::get_current_timestamp() + 300;
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub":"ops","personas":"*","role":role,"exp":exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn the_runtime_channel_needs_the_admin_role_with_auth_on() {
    let redis = RedisServer::spawn().await;
    let mut c = config(&redis, 200);
    c.auth.mode = pulsegate::config::AuthMode::Jwt;
    c.auth.secret = Some(SECRET.into());
    c.validate().expect("valid config");
    let gw = start_gateway(c).await;
    let addr = gw.local_addr;
    for role in ["viewer", "publisher"] {
        let mut ws = connect(addr, &format!("/ws?token={}", token(role))).await;
        send_json(
            &mut ws,
            json!({"type":"subscribe","channel":"system:runtime"}),
        )
        .await;
        let e = next_json(&mut ws, WAIT).await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some("forbidden")),
            "{e}"
        );
        assert!(e["message"].as_str().unwrap().contains("admin"), "{e}");
        send_json(&mut ws, json!({"type":"request_metrics"})).await;
        assert_eq!(next_json(&mut ws, WAIT).await["code"], "forbidden");
        // The connection stays usable.
        send_json(&mut ws, json!({"type":"ping"})).await;
        assert_eq!(next_json(&mut ws, WAIT).await["type"], "pong");
    }
    assert_eq!(samples_taken_with(addr, &token("admin")).await, 0);

    let mut ws = connect(addr, &format!("/ws?token={}", token("admin"))).await;
    send_json(
        &mut ws,
        json!({"type":"subscribe","channel":"system:runtime"}),
    )
    .await;
    assert_eq!(next_json(&mut ws, WAIT).await["type"], "subscribed");
    check_sample(&next_sample(&mut ws).await, 1);
    // A renewed token without the role ends the watch.
    send_json(&mut ws, json!({"type":"auth","token":token("viewer")})).await;
    let mut ended = false;
    for _ in 0..20 {
        let m = next_json(&mut ws, WAIT).await;
        if m["type"] == "unsubscribed" {
            assert_eq!(m["channel"], "system:runtime");
            ended = true;
        }
        if m["type"] == "authenticated" {
            break;
        }
    }
    assert!(ended, "the watch outlived the admin role");
    gw.shutdown().await;
}

async fn samples_taken_with(addr: std::net::SocketAddr, admin: &str) -> u64 {
    let auth = format!("Bearer {admin}");
    let (status, body) =
        http_request(addr, "GET", "/metrics", &[("Authorization", &auth)], None).await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix("pulsegate_runtime_samples_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("pulsegate_runtime_samples_total")
}
