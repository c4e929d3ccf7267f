//! Rate limits, JWT authentication and authorization, Origin checks and
//! trusted proxies (docs/security.md).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use pulsegate::auth::{AuthError, Authenticator};
use pulsegate::config::Config;
use pulsegate::config::Rate;
use pulsegate::config::{AuthConfig, AuthMode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

const SECRET: &str = "an-hs256-test-secret-of-at-least-32-bytes";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn hs_token(claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn viewer(personas: serde_json::Value, exp: u64) -> String {
    hs_token(json!({"sub":"alice","personas":personas,"role":"viewer","exp":exp}))
}

fn jwt_config(redis: &RedisServer) -> Config {
    let mut c = test_config(redis);
    c.auth.mode = AuthMode::Jwt;
    c.auth.secret = Some(SECRET.into());
    c.auth.leeway = Duration::ZERO;
    c.validate().expect("valid config");
    c
}

/// A raw HTTP/1.1 request; returns (status, headers and body as text).
async fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("connection"))
    {
        req.push_str("Connection: close\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str("Content-Length: 2\r\n\r\n{}");
    } else {
        req.push_str("\r\n");
    }
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    // Read the head, then Content-Length bytes of body (upgrade requests
    // keep the connection open, so reading to the end would wait).
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&out).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    return;
                }
            }
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = status_of(&text);
    (status, text)
}

const UPGRADE: [(&str, &str); 4] = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

fn upgrade_with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut h = UPGRADE.to_vec();
    h.extend_from_slice(extra);
    h
}

fn retry_after(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix("retry-after: ")
                .or_else(|| l.strip_prefix("Retry-After: "))
        })
        .and_then(|v| v.trim().parse().ok())
}

/// The rate-limit tests refill at one token per second, so the requests of
/// one burst have a whole second to arrive before a token comes back, however
/// slow the machine; waiting lets `tokens` of them back in.
async fn refill(tokens: u64) {
    tokio::time::sleep(Duration::from_millis(1000 * tokens + 100)).await;
}

#[tokio::test]
async fn connection_rate_per_ip_answers_429_and_recovers() {
    let redis = RedisServer::spawn().await;
    let mut c = test_config(&redis);
    c.limits.connections_per_ip = Rate {
        per_second: 1,
        burst: 5,
    };
    let gw = start_gateway(c).await;
    refill(5).await; // after the readiness polls
    for _ in 0..5 {
        assert_eq!(raw(gw.local_addr, "GET", "/healthz", &[]).await.0, 200);
    }
    let (status, text) = raw(gw.local_addr, "GET", "/healthz", &[]).await;
    assert_eq!(status, 429, "{text}");
    assert!(retry_after(&text).unwrap() >= 1, "{text}");
    assert!(text.contains("rate_limited"));
    refill(2).await; // this request and the /metrics one
    assert_eq!(raw(gw.local_addr, "GET", "/healthz", &[]).await.0, 200);
    let (_, metrics) = http_get(gw.local_addr, "/metrics").await;
    assert!(
        metrics.contains(r#"pulsegate_rate_limited_total{limit="connections_per_ip"} 1"#),
        "{metrics}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn global_accept_rate_answers_429_and_recovers() {
    let redis = RedisServer::spawn().await;
    let mut c = test_config(&redis);
    c.limits.accept = Rate {
        per_second: 1,
        burst: 4,
    };
    let gw = start_gateway(c).await;
    refill(4).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(raw(gw.local_addr, "GET", "/healthz", &[]).await.0);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    refill(1).await;
    assert_eq!(raw(gw.local_addr, "GET", "/healthz", &[]).await.0, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn ws_message_rate_answers_errors_then_closes_1008() {
    let redis = RedisServer::spawn().await;
    let mut c = test_config(&redis);
    c.limits.ws_messages = Rate {
        per_second: 1,
        burst: 5,
    };
    c.limits.ws_message_strikes = 3;
    let gw = start_gateway(c).await;

    // Within the rate, then one over it: refused, and it recovers.
    let mut ws = connect(gw.local_addr, "/ws").await;
    for _ in 0..6 {
        send_json(&mut ws, json!({"type":"ping"})).await;
    }
    for _ in 0..5 {
        assert_eq!(
            next_json(&mut ws, Duration::from_secs(2)).await["type"],
            "pong"
        );
    }
    let e = next_json(&mut ws, Duration::from_secs(2)).await;
    assert_eq!(e["code"], "rate_limited", "{e}");
    refill(1).await;
    send_json(&mut ws, json!({"type":"ping"})).await;
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(2)).await["type"],
        "pong"
    );

    // Persisting past the strikes: close 1008.
    let mut ws = connect(gw.local_addr, "/ws").await;
    for _ in 0..20 {
        let _ = ws
            .send(Message::Text(json!({"type":"ping"}).to_string()))
            .await;
    }
    let (code, _) = expect_close(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(code, 1008);
    let (_, metrics) = http_get(gw.local_addr, "/metrics").await;
    assert!(metrics.contains(r#"pulsegate_rate_limited_total{limit="ws_messages"}"#));
    gw.shutdown().await;
}

#[tokio::test]
async fn rest_and_ingest_rates_answer_429_and_recover() {
    let redis = RedisServer::spawn().await;
    let mut c = test_config(&redis);
    c.limits.rest_per_ip = Rate {
        per_second: 1,
        burst: 3,
    };
    let gw = start_gateway(c).await;
    let a = gw.local_addr;
    for _ in 0..3 {
        assert_ne!(raw(a, "GET", "/api/metrics/p1", &[]).await.0, 429);
    }
    let (status, text) = raw(a, "GET", "/api/metrics/p1", &[]).await;
    assert_eq!(status, 429, "{text}");
    assert!(retry_after(&text).is_some(), "{text}");
    // Health checks are not REST-limited.
    assert_eq!(raw(a, "GET", "/healthz", &[]).await.0, 200);
    refill(1).await;
    assert_ne!(raw(a, "GET", "/api/metrics/p1", &[]).await.0, 429);

    gw.shutdown().await;

    // Ingest: per API key, each key its own budget.
    let mut c = test_config(&redis);
    c.limits.ingest_per_key = Rate {
        per_second: 1,
        burst: 2,
    };
    let gw = start_gateway(c).await;
    let a = gw.local_addr;
    let key_a = [("X-Api-Key", "key-a")];
    assert_ne!(
        raw(a, "POST", "/api/events/early-kill", &key_a).await.0,
        429
    );
    assert_ne!(
        raw(a, "POST", "/api/events/early-kill", &key_a).await.0,
        429
    );
    let (status, text) = raw(a, "POST", "/api/events/early-kill", &key_a).await;
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("ingest_per_key"), "{text}");
    let key_b = [("X-Api-Key", "key-b")];
    assert_ne!(
        raw(a, "POST", "/api/events/early-kill", &key_b).await.0,
        429
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn concurrent_connections_per_ip_and_subscriptions_are_bounded() {
    let redis = RedisServer::spawn().await;
    let mut c = test_config(&redis);
    c.limits.max_connections_per_ip = 2;
    c.ws.max_subscriptions = 2;
    let gw = start_gateway(c).await;
    let mut first = connect(gw.local_addr, "/ws").await;
    let _second = connect(gw.local_addr, "/ws").await;
    let (status, text) = raw(gw.local_addr, "GET", "/ws", &UPGRADE).await;
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("max_connections_per_ip"));
    for p in ["a", "b", "c"] {
        send_json(
            &mut first,
            json!({"type":"subscribe","channel":format!("persona:{p}")}),
        )
        .await;
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        let m = next_json(&mut first, Duration::from_secs(5)).await;
        got.push(
            m["code"]
                .as_str()
                .unwrap_or(m["type"].as_str().unwrap())
                .to_owned(),
        );
    }
    got.sort();
    assert_eq!(
        got,
        [
            "initial_data",
            "initial_data",
            "subscribed",
            "subscribed",
            "too_many_subscriptions"
        ]
    );
    drop(first);
    wait_until("a slot to free up", Duration::from_secs(5), || async {
        raw(gw.local_addr, "GET", "/ws", &UPGRADE).await.0 == 101
    })
    .await;
    gw.shutdown().await;
}

#[tokio::test]
async fn forwarded_for_is_honoured_only_from_trusted_peers() {
    let redis = RedisServer::spawn().await;
    // Untrusted peer: X-Forwarded-For is ignored, every request is 127.0.0.1's.
    let mut c = test_config(&redis);
    c.limits.rest_per_ip = Rate {
        per_second: 1,
        burst: 2,
    };
    let gw = start_gateway(c.clone()).await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        let xff = format!("203.0.113.{i}");
        statuses.push(
            raw(
                gw.local_addr,
                "GET",
                "/api/metrics/p1",
                &[("X-Forwarded-For", &xff)],
            )
            .await
            .0 == 429,
        );
    }
    assert_eq!(statuses, [false, false, true]);
    gw.shutdown().await;

    // Trusted peer: each forwarded client has its own budget.
    c.limits.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    let gw = start_gateway(c).await;
    for i in 0..6 {
        let xff = format!("203.0.113.{i}, 127.0.0.1");
        let (status, text) = raw(
            gw.local_addr,
            "GET",
            "/api/metrics/p1",
            &[("X-Forwarded-For", &xff)],
        )
        .await;
        assert_ne!(status, 429, "{text}");
    }
    let fwd = [("Forwarded", "for=198.51.100.7")];
    assert_ne!(
        raw(gw.local_addr, "GET", "/api/metrics/p1", &fwd).await.0,
        429
    );
    assert_ne!(
        raw(gw.local_addr, "GET", "/api/metrics/p1", &fwd).await.0,
        429
    );
    assert_eq!(
        raw(gw.local_addr, "GET", "/api/metrics/p1", &fwd).await.0,
        429
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn origin_not_allowed_is_403_before_the_upgrade() {
    let redis = RedisServer::spawn().await;
    let mut c = test_config(&redis);
    c.auth.allowed_origins = vec!["https://dash.example.com".into()];
    let gw = start_gateway(c).await;
    let (status, text) = raw(
        gw.local_addr,
        "GET",
        "/ws",
        &upgrade_with(&[("Origin", "https://evil.example")]),
    )
    .await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("origin_not_allowed"));
    let ok = upgrade_with(&[("Origin", "https://dash.example.com")]);
    assert_eq!(raw(gw.local_addr, "GET", "/ws", &ok).await.0, 101);
    // Non-browser clients send no Origin.
    assert_eq!(raw(gw.local_addr, "GET", "/ws", &UPGRADE).await.0, 101);
    // Wrong version still gets 426.
    let mut v8 = UPGRADE.to_vec();
    v8[2] = ("Sec-WebSocket-Version", "8");
    assert_eq!(raw(gw.local_addr, "GET", "/ws", &v8).await.0, 426);
    gw.shutdown().await;
}

#[tokio::test]
async fn websocket_needs_a_token_granting_the_persona() {
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(jwt_config(&redis)).await;
    let a = gw.local_addr;
    let (status, text) = raw(a, "GET", "/dashboard/ws/pa", &UPGRADE).await;
    assert_eq!(status, 401, "no token: {text}");
    assert!(text.contains("missing_token"));
    let bad = upgrade_with(&[("Authorization", "Bearer not.a.jwt")]);
    assert_eq!(raw(a, "GET", "/dashboard/ws/pa", &bad).await.0, 401);
    let expired = viewer(json!(["pa"]), now() - 60);
    let (status, text) = raw(
        a,
        "GET",
        &format!("/dashboard/ws/pa?token={expired}"),
        &UPGRADE,
    )
    .await;
    assert_eq!(status, 401);
    assert!(text.contains("token_expired"), "{text}");

    let token = viewer(json!(["pa"]), now() + 300);
    // Persona A's token on persona B.
    let (status, text) = raw(
        a,
        "GET",
        &format!("/dashboard/ws/pb?token={token}"),
        &UPGRADE,
    )
    .await;
    assert_eq!(status, 403, "{text}");
    // Header and query both work.
    let bearer = format!("Bearer {token}");
    assert_eq!(
        raw(
            a,
            "GET",
            "/dashboard/ws/pa",
            &upgrade_with(&[("Authorization", &bearer)])
        )
        .await
        .0,
        101
    );
    let mut ws = connect(a, &format!("/dashboard/ws/pa?token={token}")).await;
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(5)).await["type"],
        "initial_data"
    );

    // On /ws each subscribe is checked.
    let mut ws = connect(a, &format!("/ws?token={token}")).await;
    send_json(&mut ws, json!({"type":"subscribe","channel":"persona:pb"})).await;
    let m = next_json(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(m["code"], "forbidden", "{m}");
    send_json(&mut ws, json!({"type":"subscribe","channel":"persona:pa"})).await;
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(5)).await["type"],
        "subscribed"
    );

    // "*" grants every persona.
    let any = viewer(json!("*"), now() + 300);
    let mut ws = connect(a, &format!("/dashboard/ws/anything?token={any}")).await;
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(5)).await["type"],
        "initial_data"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn rest_routes_need_the_role_and_persona() {
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(jwt_config(&redis)).await;
    let a = gw.local_addr;
    let token = viewer(json!(["pa"]), now() + 300);
    let auth = format!("Bearer {token}");
    let h = [("Authorization", auth.as_str())];
    assert_eq!(raw(a, "GET", "/api/metrics/pa", &[]).await.0, 401);
    // 404: no data for the persona, but the token was accepted.
    assert_eq!(raw(a, "GET", "/api/metrics/pa", &h).await.0, 404);
    assert_eq!(raw(a, "GET", "/api/metrics/pb", &h).await.0, 403);
    assert_eq!(raw(a, "GET", "/api/kills/pb", &h).await.0, 403);
    // Ingest needs publisher, /metrics needs admin; health stays open.
    assert_eq!(raw(a, "POST", "/api/events/early-kill", &h).await.0, 403);
    assert_eq!(raw(a, "GET", "/metrics", &h).await.0, 403);
    assert_eq!(raw(a, "GET", "/healthz", &[]).await.0, 200);
    let publisher =
        hs_token(json!({"sub":"mon","personas":"*","role":"publisher","exp":now()+300}));
    let p = format!("Bearer {publisher}");
    let (status, _) = raw(
        a,
        "POST",
        "/api/events/early-kill",
        &[("Authorization", &p)],
    )
    .await;
    assert!(
        status != 401 && status != 403 && status != 0,
        "refused by ingest, not by auth: {status}"
    );
    // A publisher of persona pa cannot ingest for pb.
    let pa_publisher =
        hs_token(json!({"sub":"mon","personas":["pa"],"role":"publisher","exp":now()+300}));
    let event = |persona: &str| {
        json!({"persona_id": persona, "variant_id": "v1", "content": "c", "predicted_er": 0.05, "pattern_used": "x"})
            .to_string()
    };
    let (status, body) =
        post_json(a, "/api/events/variant-posted", &pa_publisher, &event("pb")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("forbidden"), "{body}");
    let (status, body) =
        post_json(a, "/api/events/variant-posted", &pa_publisher, &event("pa")).await;
    assert_eq!(status, 202, "{body}");
    let admin = hs_token(json!({"sub":"ops","personas":[],"role":"admin","exp":now()+300}));
    let (status, text) = raw(
        a,
        "GET",
        "/metrics",
        &[("Authorization", &format!("Bearer {admin}"))],
    )
    .await;
    assert_eq!(status, 200);
    assert!(text.contains("pulsegate_auth_failures_total"), "{text}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_token_expiring_mid_connection_closes_4001_unless_renewed() {
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(jwt_config(&redis)).await;
    let short = viewer(json!(["pa"]), now() + 2);
    let mut ws = connect(gw.local_addr, &format!("/ws?token={short}")).await;
    let started = Instant::now();
    let (code, _) = expect_close(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(code, 4001);
    assert!(started.elapsed() >= Duration::from_millis(900));

    let short = viewer(json!(["pa"]), now() + 2);
    let mut ws = connect(gw.local_addr, &format!("/ws?token={short}")).await;
    let fresh = viewer(json!(["pa"]), now() + 300);
    send_json(&mut ws, json!({"type":"auth","token":fresh})).await;
    let m = next_json(&mut ws, Duration::from_secs(2)).await;
    assert_eq!(m["type"], "authenticated", "{m}");
    // Past the first token's expiry the connection still works.
    tokio::time::sleep(Duration::from_secs(3)).await;
    send_json(&mut ws, json!({"type":"ping"})).await;
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(2)).await["type"],
        "pong"
    );
    // A bad renewal is refused without closing.
    send_json(&mut ws, json!({"type":"auth","token":"garbage"})).await;
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(2)).await["code"],
        "invalid_token"
    );
    gw.shutdown().await;
}

/// Under 10,000 connection attempts in 10 s from one IP, clients on another
/// address keep receiving every message.
#[tokio::test]
async fn a_connection_flood_from_one_ip_does_not_starve_other_clients() {
    let redis = RedisServer::spawn().await;
    let mut c = test_config(&redis);
    c.limits.connections_per_ip = Rate {
        per_second: 20,
        burst: 50,
    };
    let gw = start_gateway(c).await;
    let addr = gw.local_addr;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let req = format!("ws://{addr}/ws").into_client_request().unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await.unwrap();
        send_json(
            &mut ws,
            json!({"type":"subscribe","channel":"persona:flood"}),
        )
        .await;
        assert_eq!(
            next_json(&mut ws, Duration::from_secs(5)).await["type"],
            "subscribed"
        );
        assert_eq!(
            next_json(&mut ws, Duration::from_secs(5)).await["type"],
            "initial_data"
        );
        clients.push(ws);
    }
    let flood = tokio::spawn(async move {
        let (mut refused, mut ok) = (0u32, 0u32);
        let started = Instant::now();
        for i in 0..10_000u32 {
            let target = started + Duration::from_micros(1000 * i as u64);
            tokio::time::sleep_until(target.into()).await;
            if let Ok(Ok(mut s)) =
                tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await
            {
                let _ = s
                    .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await;
                let mut buf = [0u8; 12];
                match tokio::time::timeout(Duration::from_millis(200), s.read_exact(&mut buf)).await
                {
                    Ok(Ok(_)) if &buf[9..12] == b"429" => refused += 1,
                    Ok(Ok(_)) => ok += 1,
                    _ => {}
                }
            }
        }
        (refused, ok, started.elapsed())
    });
    let publisher = redis.client().await;
    let mut sent = 0u64;
    while !flood.is_finished() {
        let _: i64 = fred::prelude::PubsubInterface::publish(
            &publisher,
            "pulse:{flood}:events",
            json!({"type":"tick","n":sent}).to_string(),
        )
        .await
        .unwrap();
        sent += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (refused, ok, took) = flood.await.unwrap();
    assert!(refused > 9000, "refused {refused}, ok {ok}");
    assert!(
        ok <= 50 + 20 * (took.as_secs() as u32 + 1),
        "ok {ok} in {took:?}"
    );
    for ws in clients.iter_mut() {
        for n in 0..sent {
            let m = next_json(ws, Duration::from_secs(5)).await;
            assert_eq!(m["data"]["n"], n, "{m}");
        }
    }
    gw.shutdown().await;
}

// --- the token verifier itself -------------------------------------------

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl {args:?}");
}

fn b64url(bytes: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..=chunk.len() {
            out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// An RSA key pair in `dir`: `key.pem` (private), `pub.pem`, and the JWK's `n`.
fn rsa_keys(dir: &Path) -> String {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "key.pem",
        ],
    );
    openssl(
        dir,
        &["pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem"],
    );
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(["rsa", "-in", "key.pem", "-noout", "-modulus"])
        .output()
        .unwrap();
    let hex = String::from_utf8(out.stdout).unwrap();
    let hex = hex.trim().trim_start_matches("Modulus=");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    b64url(&bytes)
}

fn claims(exp: u64) -> serde_json::Value {
    json!({"sub":"alice","personas":["pa"],"role":"viewer","exp":exp,"iss":"issuer-1","aud":"pulsegate"})
}

#[test]
fn jwt_verification_rules() {
    let mut c = AuthConfig {
        mode: AuthMode::Jwt,
        secret: Some(SECRET.into()),
        leeway: Duration::from_secs(5),
        issuer: Some("issuer-1".into()),
        audience: Some("pulsegate".into()),
        ..AuthConfig::default()
    };
    let auth = Authenticator::from_config(&c).unwrap();
    let t = now();
    // Valid.
    let ok = auth.verify(&hs_token(claims(t + 60))).unwrap();
    assert!(ok.allows_persona("pa") && !ok.allows_persona("pb"));
    // Expired (beyond the leeway), and within it.
    assert_eq!(
        auth.verify(&hs_token(claims(t - 60))),
        Err(AuthError::Expired)
    );
    assert!(auth.verify(&hs_token(claims(t - 2))).is_ok());
    // No exp at all.
    let mut no_exp = claims(0);
    no_exp.as_object_mut().unwrap().remove("exp");
    assert!(auth.verify(&hs_token(no_exp)).is_err());
    // nbf in the future.
    let mut nbf = claims(t + 600);
    nbf["nbf"] = json!(t + 300);
    assert!(matches!(
        auth.verify(&hs_token(nbf)),
        Err(AuthError::Invalid(_))
    ));
    // Wrong iss, wrong aud.
    let mut iss = claims(t + 60);
    iss["iss"] = json!("someone-else");
    assert!(auth.verify(&hs_token(iss)).is_err());
    let mut aud = claims(t + 60);
    aud["aud"] = json!("other-service");
    assert!(auth.verify(&hs_token(aud)).is_err());
    // Another secret.
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &claims(t + 60),
        &EncodingKey::from_secret(b"another-secret-another-secret-another"),
    )
    .unwrap();
    assert!(auth.verify(&forged).is_err());
    // alg: none (unsigned).
    let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let body = b64url(claims(t + 60).to_string().as_bytes());
    assert!(auth.verify(&format!("{header}.{body}.")).is_err());
    assert!(auth.verify(&format!("{header}.{body}")).is_err());
    // Config errors: a short secret, an unknown algorithm.
    c.secret = Some("short".into());
    assert!(Authenticator::from_config(&c).is_err());
    c.secret = Some(SECRET.into());
    c.algorithm = "none".into();
    assert!(Authenticator::from_config(&c).is_err());
}

#[test]
fn rs256_refuses_hs_confusion_and_unknown_kid() {
    let dir = tempfile::tempdir().unwrap();
    let n = rsa_keys(dir.path());
    let private = std::fs::read(dir.path().join("key.pem")).unwrap();
    let public = std::fs::read(dir.path().join("pub.pem")).unwrap();
    let c = AuthConfig {
        mode: AuthMode::Jwt,
        algorithm: "RS256".into(),
        public_key_file: Some(dir.path().join("pub.pem")),
        ..AuthConfig::default()
    };
    let auth = Authenticator::from_config(&c).unwrap();
    let key = EncodingKey::from_rsa_pem(&private).unwrap();
    let good = encode(&Header::new(Algorithm::RS256), &claims(now() + 60), &key).unwrap();
    assert!(auth.verify(&good).is_ok());
    // HS256 signed with the public key as the secret: the classic confusion.
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims(now() + 60),
        &EncodingKey::from_secret(&public),
    )
    .unwrap();
    assert!(auth.verify(&confused).is_err());

    // JWKS: the kid picks the key; an unknown kid is refused.
    let jwks =
        json!({"keys":[{"kty":"RSA","kid":"k1","alg":"RS256","use":"sig","n":n,"e":"AQAB"}]});
    std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).unwrap();
    let c = AuthConfig {
        public_key_file: None,
        jwks_file: Some(dir.path().join("jwks.json")),
        ..c
    };
    let auth = Authenticator::from_config(&c).unwrap();
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("k1".into());
    assert!(auth
        .verify(&encode(&h, &claims(now() + 60), &key).unwrap())
        .is_ok());
    h.kid = Some("k2".into());
    let e = auth.verify(&encode(&h, &claims(now() + 60), &key).unwrap());
    assert!(
        matches!(e, Err(AuthError::Invalid(ref m)) if m.contains("unknown kid")),
        "{e:?}"
    );
    // No kid at all.
    assert!(auth.verify(&good).is_err());
}

/// POST a JSON body with a bearer token; returns (status, body).
async fn post_json(addr: SocketAddr, path: &str, token: &str, body: &str) -> (u16, String) {
    let auth = format!("Bearer {token}");
    http_request(addr, "POST", path, &[("Authorization", &auth)], Some(body)).await
}
