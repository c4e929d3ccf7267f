//! Analytics of a `[[channels]]` namespace from the audit's
//! `channel_events`, against real Redis, Postgres and the gateway: messages
//! published with `FCALL pulse_publish` (their own `timestamp`s, two days
//! back), then the summary and the histograms equal what the test counts;
//! every refusal has its code and is counted; with auth on, the whole
//! namespace must be granted.

use std::collections::BTreeMap;
use std::time::Duration;

use fred::prelude::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::common::*;
use crate::pg::*;
use pulsegate::config::{AuthMode, Config, Grant, NamespaceConfig};

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;
const SECRET: &str = "an-hs256-test-secret-of-at-least-32-bytes";

/// `task` (history, granted by the claim), `board` (history, granted by the
/// role) and `live` (no history, so never audited).
fn config(redis: &RedisServer, db: &str) -> Config {
    let mut c = test_config(redis);
    c.channels.retain(|n| n.name != "task");
    c.channels.push(NamespaceConfig {
        name: "task".into(),
        history: 1000,
        ..NamespaceConfig::default()
    });
    c.channels.push(NamespaceConfig {
        name: "board".into(),
        history: 100,
        grant: Grant::Role,
        ..NamespaceConfig::default()
    });
    c.channels.push(NamespaceConfig {
        name: "live".into(),
        ..NamespaceConfig::default()
    });
    c.database.url = Some(db.to_owned());
    c.audit.discover_interval = Duration::from_millis(200);
    c.audit.poll_interval = Duration::from_millis(50);
    c.validate().expect("valid");
    c
}

fn rfc(ms: i64) -> String {
    pulsegate::time::format_rfc3339_ms(ms).expect("time")
}

async fn publish(client: &Client, channel: &str, message: Value) {
    let _: Option<String> = client
        .fcall(
            "pulse_publish",
            vec![format!("pulse:{{{channel}}}")],
            vec![message.to_string()],
        )
        .await
        .expect("pulse_publish");
}

fn token(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token")
}

/// One message as the test keeps it.
struct Sent {
    channel: String,
    kind: &'static str,
    ts: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_summaries_and_histograms_equal_the_published_messages() {
    let redis = RedisServer::spawn().await;
    let db = PgServer::spawn();
    let gw = start_gateway(config(&redis, &db.url())).await;
    let addr = gw.local_addr;
    let client = redis.client().await;
    let pg = db.client().await;

    // 60 messages on 4 task channels, 23 minutes apart from two days back
    // (one exactly on an hour): output lines, a status now and then, and
    // some without a `type` (audited as `message`). `board` gets its own.
    let t0 = (pulsegate::time::now_ms() / DAY - 2) * DAY;
    let mut sent = Vec::new();
    for i in 0..60i64 {
        let channel = format!("task:{}", i % 4);
        let ts = if i == 9 {
            t0 + 4 * HOUR
        } else {
            t0 + i * 23 * MIN + 7_000
        };
        let kind = match i % 5 {
            0 => "task_status",
            1 => "message",
            _ => "task_output",
        };
        let mut m = json!({"timestamp": rfc(ts), "data": {"task_id": channel, "i": i}});
        if kind != "message" {
            m["type"] = kind.into();
        }
        publish(&client, &channel, m).await;
        sent.push(Sent { channel, kind, ts });
    }
    for i in 0..5 {
        let m = json!({"type": "card_moved", "timestamp": rfc(t0 + HOUR + i * MIN)});
        publish(&client, "board:1", m).await;
    }
    wait_count(
        &pg,
        "SELECT count(*) FROM channel_events",
        65,
        Duration::from_secs(30),
    )
    .await;

    // A range starting mid-hour and ending mid-day.
    let (since, until) = (t0 + 2 * HOUR + 30 * MIN, t0 + 15 * HOUR + 5 * MIN);
    let inside: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.ts >= since && s.ts < until)
        .collect();
    let span = format!("since={}&until={}", rfc(since), rfc(until));
    let (status, s) = http_json(
        addr,
        "GET",
        &format!("/api/analytics/channels/task/summary?{span}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{s}");
    let mut by_type = BTreeMap::new();
    for m in &inside {
        *by_type.entry(m.kind).or_insert(0i64) += 1;
    }
    let mut channels: Vec<&str> = inside.iter().map(|m| m.channel.as_str()).collect();
    channels.sort();
    channels.dedup();
    assert_eq!(
        s,
        json!({
            "namespace": "task",
            "since": rfc(since),
            "until": rfc(until),
            "messages": {"total": inside.len(), "by_type": by_type, "types": by_type.len()},
            "channels": channels.len(),
        })
    );

    // Hour buckets from the hour holding `since`, zeros included, each
    // split by type; the types most frequent first.
    let (status, h) = http_json(
        addr,
        "GET",
        &format!("/api/analytics/channels/task/histogram?bucket=hour&{span}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{h}");
    let mut ranked: Vec<(&str, i64)> = by_type.iter().map(|(k, v)| (*k, *v)).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let ranked: Vec<&str> = ranked.into_iter().map(|(k, _)| k).collect();
    assert_eq!(h["types"], json!(ranked));
    assert_eq!(
        (h["metric"].as_str(), h["bucket"].as_str()),
        (Some("messages"), Some("hour"))
    );
    let buckets = h["buckets"].as_array().expect("buckets");
    let first = since / HOUR * HOUR;
    assert_eq!(buckets.len() as i64, (until - first + HOUR - 1) / HOUR);
    for (n, b) in buckets.iter().enumerate() {
        let start = first + n as i64 * HOUR;
        let here: Vec<&&Sent> = inside
            .iter()
            .filter(|m| m.ts >= start && m.ts < start + HOUR)
            .collect();
        let split: BTreeMap<&str, usize> = ranked
            .iter()
            .map(|t| (*t, here.iter().filter(|m| m.kind == *t).count()))
            .collect();
        assert_eq!(
            b,
            &json!({"start": rfc(start), "count": here.len(), "by_type": split}),
            "bucket {n}"
        );
    }
    // Day buckets over four days: every task message, none of `board`'s.
    let (status, h) = http_json(
        addr,
        "GET",
        &format!(
            "/api/analytics/channels/task/histogram?metric=messages&bucket=day&since={}&until={}",
            rfc(t0 - DAY),
            rfc(t0 + 3 * DAY)
        ),
        None,
    )
    .await;
    assert_eq!(status, 200, "{h}");
    let counts: Vec<i64> = h["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| b["count"].as_i64().expect("count"))
        .collect();
    let per_day = |d: i64| {
        sent.iter()
            .filter(|m| m.ts >= t0 + d * DAY && m.ts < t0 + (d + 1) * DAY)
            .count() as i64
    };
    assert_eq!(counts, vec![0, per_day(0), per_day(1), 0]);
    assert_eq!(h["buckets"][1]["start"], rfc(t0));

    // The namespaces a page may offer: audited ones only.
    let (status, list) = http_json(addr, "GET", "/api/analytics/channels", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        list,
        json!({"namespaces": [{"name": "task", "history": 1000}, {"name": "board", "history": 100}]})
    );

    // Refusals: specific codes, counted.
    for (path, status, code) in [
        ("Task/summary", 400, "invalid_namespace"),
        ("a.b/summary", 400, "invalid_namespace"),
        ("nope/summary", 404, "unknown_namespace"),
        ("persona/histogram", 404, "unknown_namespace"),
        ("system/summary", 404, "unknown_namespace"),
        ("live/summary", 404, "namespace_not_audited"),
        ("task/summary?since=yesterday", 400, "invalid_since"),
        (
            "task/summary?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
            400,
            "invalid_range",
        ),
        ("task/histogram?metric=posts", 400, "invalid_metric"),
        ("task/histogram?bucket=week", 400, "invalid_bucket"),
        (
            "task/histogram?bucket=hour&since=2026-01-01T00:00:00Z&until=2026-03-01T00:00:00Z",
            400,
            "too_many_buckets",
        ),
    ] {
        let (got, body) = http_json(
            addr,
            "GET",
            &format!("/api/analytics/channels/{path}"),
            None,
        )
        .await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
    }
    let (_, metrics) = http_get(addr, "/metrics").await;
    for (reason, n) in [
        ("invalid_namespace", 2),
        ("unknown_namespace", 3),
        ("namespace_not_audited", 1),
    ] {
        let line = format!("pulsegate_analytics_rejected_total{{reason=\"{reason}\"}} {n}");
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    gw.shutdown().await;

    // With auth on: a namespace's analytics need its role and, for a claim
    // namespace, `<ns>:*` or `*`; one channel of it is not enough.
    let mut c = config(&redis, &db.url());
    c.auth.mode = AuthMode::Jwt;
    c.auth.secret = Some(SECRET.into());
    let gw = start_gateway(c).await;
    let exp = jsonwebtoken::get_current_timestamp() + 300;
    let get = |tok: Option<String>, path: &'static str| {
        let addr = gw.local_addr;
        async move {
            let auth = tok.map(|t| format!("Bearer {t}")).unwrap_or_default();
            let headers: Vec<(&str, &str)> = if auth.is_empty() {
                vec![]
            } else {
                vec![("Authorization", auth.as_str())]
            };
            let (status, body) = http_request(addr, "GET", path, &headers, None).await;
            (
                status,
                serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
            )
        }
    };
    let viewer = |channels: Value| {
        token(json!({"sub": "ann", "role": "viewer", "exp": exp, "channels": channels}))
    };
    let summary = "/api/analytics/channels/task/summary";
    assert_eq!(get(None, summary).await.0, 401);
    let (status, body) = get(Some(viewer(json!(["task:1"]))), summary).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    for grant in [json!(["task:*"]), json!(["*"])] {
        let (status, body) = get(Some(viewer(grant.clone())), summary).await;
        assert_eq!(status, 200, "{grant}: {body}");
        assert_eq!(body["namespace"], "task");
    }
    let one = viewer(json!(["task:1"]));
    let (status, body) = get(Some(one.clone()), "/api/analytics/channels/board/histogram").await;
    assert_eq!(status, 200, "{body}");
    let (status, list) = get(Some(one), "/api/analytics/channels").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        list,
        json!({"namespaces": [{"name": "board", "history": 100}]})
    );
    gw.shutdown().await;

    // Without a database: 503 with a JSON body.
    let bare = start_gateway(test_config(&redis)).await;
    for path in [
        "/api/analytics/channels",
        "/api/analytics/channels/task/summary",
        "/api/analytics/channels/task/histogram",
    ] {
        let (status, body) = http_json(bare.local_addr, "GET", path, None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (503, Some("audit_unavailable")),
            "{path}"
        );
    }
    bare.shutdown().await;
}
