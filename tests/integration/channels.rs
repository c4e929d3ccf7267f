//! `[[channels]]` namespaces end to end: `pulse_publish` (FCALL and HTTP),
//! `/ws` subscribe beside personas on one connection, resume with `since`,
//! the refusals with their codes, and the audit's `channel_events`.

use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::common::*;
use crate::pg::*;
use pulsegate::config::{AuthMode, Config, Grant, NamespaceConfig, Role};

const T: Duration = Duration::from_secs(15);
const SECRET: &str = "an-hs256-test-secret-of-at-least-32-bytes";

fn key(o: &str) -> (u64, u64) {
    let (a, b) = o.split_once('-').expect("offset");
    (a.parse().expect("ms"), b.parse().expect("seq"))
}

/// The default `task` namespace, plus one without history, one bounded
/// to a single subscriber and one granted by the role alone.
fn channels_config(redis: &RedisServer) -> Config {
    let mut c = test_config(redis);
    c.channels.push(NamespaceConfig {
        name: "live".into(),
        ..NamespaceConfig::default()
    });
    c.channels.push(NamespaceConfig {
        name: "solo".into(),
        history: 100,
        max_subscribers: 1,
        ..NamespaceConfig::default()
    });
    c.channels.push(NamespaceConfig {
        name: "board".into(),
        history: 100,
        recent: 10,
        role: Role::Viewer,
        grant: Grant::Role,
        ..NamespaceConfig::default()
    });
    c.validate().expect("valid");
    c
}

/// `FCALL pulse_publish` as any backend would.
async fn publish(client: &Client, channel: &str, message: Value) -> Result<Option<String>, Error> {
    client
        .fcall(
            "pulse_publish",
            vec![format!("pulse:{{{channel}}}")],
            vec![message.to_string()],
        )
        .await
}

fn line(task: &str, i: usize) -> Value {
    json!({"type": "task_output", "data": {"task_id": task, "seq": i, "line": format!("line {i}")}})
}

/// Reads `/ws` frames until `done` holds, grouping `message`s by channel
/// (their offsets, checked against the payload's) and keeping the acks.
async fn collect(
    ws: &mut Ws,
    acks: &mut HashMap<String, Value>,
    got: &mut HashMap<String, Vec<String>>,
    done: impl Fn(&HashMap<String, Value>, &HashMap<String, Vec<String>>) -> bool,
) {
    while !done(acks, got) {
        let v = next_json(ws, T).await;
        let channel = v["channel"]
            .as_str()
            .unwrap_or_else(|| panic!("{v}"))
            .to_owned();
        match v["type"].as_str() {
            Some("subscribed") => {
                acks.insert(channel, v);
            }
            Some("initial_data") => assert!(channel.starts_with("persona:"), "{v}"),
            Some("message") => {
                assert!(acks.contains_key(&channel), "the ack comes first: {v}");
                let offset = v["offset"].as_str().expect("top-level offset").to_owned();
                assert_eq!(v["data"]["offset"].as_str(), Some(offset.as_str()), "{v}");
                got.entry(channel).or_default().push(offset);
            }
            _ => panic!("unexpected {v}"),
        }
    }
}

fn in_order(offsets: &[String]) -> bool {
    offsets.windows(2).all(|w| key(&w[0]) < key(&w[1]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_and_persona_channels_share_a_connection_and_resume() {
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(channels_config(&redis)).await;
    let publisher = redis.client().await;
    let mut ws = connect(gw.local_addr, "/ws").await;
    for channel in ["task:123", "persona:x"] {
        send_json(&mut ws, json!({"type": "subscribe", "channel": channel})).await;
    }
    let (mut acks, mut got) = (HashMap::new(), HashMap::new());
    collect(&mut ws, &mut acks, &mut got, |a, _| a.len() == 2).await;
    // A channel nobody published on: no history yet, nothing covered.
    assert_eq!(acks["task:123"]["offset"], Value::Null, "{:?}", acks);
    assert_eq!(acks["task:123"]["recovered"], false);
    let task_stream = "pulse:{task:123}:stream";
    let mut task_ids = Vec::new();
    for i in 0..40 {
        let id = publish(&publisher, "task:123", line("123", i))
            .await
            .expect("publish");
        task_ids.push(id.expect("the task namespace keeps history"));
        if i % 2 == 0 {
            ingest(
                &publisher,
                "x",
                posted(&format!("v{i}"), 0.05, &format!("pat{i}")),
            )
            .await
            .expect("ingest");
        }
    }
    collect(&mut ws, &mut acks, &mut got, |_, g| {
        g.get("task:123").map_or(0, Vec::len) == 40 && g.get("persona:x").map_or(0, Vec::len) == 20
    })
    .await;
    assert_eq!(got["task:123"], task_ids, "every task line once, in order");
    assert_eq!(got["task:123"], stream_ids(&publisher, task_stream).await);
    assert!(in_order(&got["persona:x"]));

    // A late joiner resumes after the 10th line: lines 11..40, then live.
    let mut late = connect(gw.local_addr, "/ws").await;
    let since = task_ids[9].clone();
    send_json(
        &mut late,
        json!({"type": "subscribe", "channel": "task:123", "since": since}),
    )
    .await;
    let (mut late_acks, mut late_got) = (HashMap::new(), HashMap::new());
    collect(&mut late, &mut late_acks, &mut late_got, |_, g| {
        g.get("task:123").map_or(0, Vec::len) == 30
    })
    .await;
    assert_eq!(late_acks["task:123"]["recovered"], true);
    assert_eq!(
        late_acks["task:123"]["offset"].as_str(),
        Some(since.as_str())
    );
    assert_eq!(late_got["task:123"], task_ids[10..]);
    let status = json!({"type": "task_status", "data": {"task_id": "123", "status": "succeeded"}});
    let last = publish(&publisher, "task:123", status)
        .await
        .expect("publish")
        .expect("offset");
    collect(&mut late, &mut late_acks, &mut late_got, |_, g| {
        g["task:123"].len() == 31
    })
    .await;
    assert_eq!(late_got["task:123"].last(), Some(&last));

    // A fresh subscribe gets the newest `recent` entries (all 41 here); an
    // offset that cannot be resumed from (past the newest), the same.
    for since in [Value::Null, json!("99999999999999-0")] {
        let mut fresh = connect(gw.local_addr, "/ws").await;
        let m = json!({"type": "subscribe", "channel": "task:123", "since": since});
        send_json(&mut fresh, m).await;
        let (mut a, mut g) = (HashMap::new(), HashMap::new());
        collect(&mut fresh, &mut a, &mut g, |_, g| {
            g.get("task:123").map_or(0, Vec::len) == 41
        })
        .await;
        assert_eq!(a["task:123"]["recovered"], false, "{since}");
        assert_eq!(a["task:123"]["offset"].as_str(), Some(last.as_str()));
        assert_eq!(g["task:123"], stream_ids(&publisher, task_stream).await);
    }

    // The first connection got the status live too.
    collect(&mut ws, &mut acks, &mut got, |_, g| {
        g["task:123"].len() == 41
    })
    .await;
    assert_eq!(got["task:123"].last(), Some(&last));

    // A namespace without history: plain PUBLISH reaches subscribers, with no offset.
    send_json(
        &mut ws,
        json!({"type": "subscribe", "channel": "live:feed"}),
    )
    .await;
    let ack = next_json(&mut ws, T).await;
    assert_eq!(
        (ack["type"].as_str(), ack["offset"].clone()),
        (Some("subscribed"), Value::Null)
    );
    let published = publish(&publisher, "live:feed", json!({"type": "tick", "n": 1})).await;
    assert_eq!(published.expect("publish"), None, "no history, no offset");
    let _: i64 = publisher
        .publish("pulse:{live:feed}:events", r#"{"type":"tick","n":2}"#)
        .await
        .expect("PUBLISH");
    for n in [1, 2] {
        let v = next_json(&mut ws, T).await;
        assert_eq!(
            (v["channel"].as_str(), v["data"]["n"].as_i64()),
            (Some("live:feed"), Some(n))
        );
        assert!(v.get("offset").is_none(), "{v}");
    }
    assert_eq!(
        publisher
            .exists::<i64, _>("pulse:{live:feed}:stream")
            .await
            .expect("EXISTS"),
        0
    );
    gw.shutdown().await;
}

async fn refused(ws: &mut Ws, message: Value) -> String {
    send_json(ws, message.clone()).await;
    let v = next_json(ws, T).await;
    assert_eq!(v["type"], "error", "{message} → {v}");
    v["code"].as_str().expect("code").to_owned()
}

fn token(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_their_reason() {
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(channels_config(&redis)).await;
    let mut ws = connect(gw.local_addr, "/ws").await;
    let sub = |channel: &str| json!({"type": "subscribe", "channel": channel});
    for (message, code) in [
        (sub("nope:1"), "unknown_namespace"),
        (sub("task"), "invalid_channel"),
        (sub("task:a b"), "invalid_channel"),
        (sub("Task:1"), "invalid_channel"),
        (sub(&format!("task:{}", "a".repeat(65))), "invalid_channel"),
        (sub("system:other"), "unknown_channel"),
        (
            json!({"type": "subscribe", "channel": "live:1", "since": "1-0"}),
            "no_history",
        ),
    ] {
        assert_eq!(refused(&mut ws, message.clone()).await, code, "{message}");
    }
    // One subscriber per `solo` channel on this gateway.
    send_json(&mut ws, sub("solo:1")).await;
    assert_eq!(next_json(&mut ws, T).await["type"], "subscribed");
    let mut other = connect(gw.local_addr, "/ws").await;
    assert_eq!(refused(&mut other, sub("solo:1")).await, "channel_full");
    send_json(&mut other, sub("solo:2")).await;
    assert_eq!(next_json(&mut other, T).await["type"], "subscribed");
    // The first leaves: room again.
    send_json(&mut ws, json!({"type": "unsubscribe", "channel": "solo:1"})).await;
    assert_eq!(next_json(&mut ws, T).await["type"], "unsubscribed");
    send_json(&mut other, sub("solo:1")).await;
    assert_eq!(next_json(&mut other, T).await["type"], "subscribed");
    gw.shutdown().await;

    // With auth on: the `channels` claim grants `task` channels; `board`
    // needs the role alone.
    let mut c = channels_config(&redis);
    c.auth.mode = AuthMode::Jwt;
    c.auth.secret = Some(SECRET.into());
    let gw = start_gateway(c).await;
    let exp = jsonwebtoken::get_current_timestamp() + 300;
    let t = token(json!({"sub": "bob", "role": "viewer", "exp": exp, "channels": ["task:1"]}));
    let mut ws = connect(gw.local_addr, &format!("/ws?token={t}")).await;
    assert_eq!(refused(&mut ws, sub("task:2")).await, "forbidden");
    for ok in ["task:1", "board:7"] {
        send_json(&mut ws, sub(ok)).await;
        assert_eq!(next_json(&mut ws, T).await["type"], "subscribed", "{ok}");
    }
    let all = token(json!({"sub": "bob", "role": "viewer", "exp": exp, "channels": ["task:*"]}));
    let mut ws = connect(gw.local_addr, &format!("/ws?token={all}")).await;
    send_json(&mut ws, sub("task:99")).await;
    assert_eq!(next_json(&mut ws, T).await["type"], "subscribed");
    assert_eq!(refused(&mut ws, sub("solo:9")).await, "forbidden");

    // Publishing over HTTP needs the publisher role and, for `task`, the grant.
    let body = line("1", 1).to_string();
    let post = |tok: String, channel: &'static str| {
        let body = body.clone();
        let addr = gw.local_addr;
        async move {
            let auth = format!("Bearer {tok}");
            let path = format!("/api/channels/{channel}/publish");
            http_request(
                addr,
                "POST",
                &path,
                &[("Authorization", auth.as_str())],
                Some(&body),
            )
            .await
        }
    };
    assert_eq!(post(t.clone(), "task:1").await.0, 403, "a viewer");
    let publisher = |channels: Value| {
        token(json!({"sub": "svc", "role": "publisher", "exp": exp, "channels": channels}))
    };
    let (status, text) = post(publisher(json!(["task:2"])), "task:1").await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("forbidden"), "{text}");
    let (status, text) = post(publisher(json!(["task:1"])), "task:1").await;
    assert_eq!(status, 202, "{text}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulse_publish_over_fcall_and_http() {
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(channels_config(&redis)).await;
    let publisher = redis.client().await;
    let id = publish(&publisher, "task:9", line("9", 1))
        .await
        .expect("publish")
        .expect("offset");
    let entry: Vec<(String, HashMap<String, String>)> = publisher
        .xrange("pulse:{task:9}:stream", "-", "+", None)
        .await
        .expect("XRANGE");
    assert_eq!(entry.len(), 1);
    assert_eq!(entry[0].0, id);
    let stored: Value = serde_json::from_str(&entry[0].1["m"]).expect("json");
    assert_eq!(stored["offset"].as_str(), Some(id.as_str()));
    assert_eq!(stored["data"]["seq"], 1);
    assert_eq!(entry[0].1["t"], "task_output");

    // Refused with the field named, nothing written.
    for (channel, message, field) in [
        ("task:9", "nope".to_owned(), "field=message"),
        ("task:9", "[1]".to_owned(), "field=message"),
        ("task:9", r#"{"offset":"1-0"}"#.to_owned(), "field=offset"),
        ("task:9", "{\"a\":\"\u{1}\"}".to_owned(), "field=message"),
        ("nope:9", "{}".to_owned(), "field=namespace"),
        ("persona:9", "{}".to_owned(), "field=namespace"),
    ] {
        let r: Result<Option<String>, Error> = publisher
            .fcall(
                "pulse_publish",
                vec![format!("pulse:{{{channel}}}")],
                vec![message.clone()],
            )
            .await;
        let e = r.expect_err(&message);
        assert!(e.details().contains(field), "{message}: {e}");
    }
    let big = json!({"pad": "x".repeat(1024 * 1024)}).to_string();
    let r: Result<Option<String>, Error> = publisher
        .fcall("pulse_publish", vec!["pulse:{task:9}"], vec![big])
        .await;
    assert!(r.expect_err("too big").details().contains("larger than"));
    assert_eq!(
        stream_ids(&publisher, "pulse:{task:9}:stream").await,
        std::slice::from_ref(&id)
    );

    // Over HTTP: 202 with the offset, the same entry; specific 4xx otherwise.
    let addr = gw.local_addr;
    let post = |path: &'static str, body: &'static str| async move {
        http_request(addr, "POST", path, &[], Some(body)).await
    };
    let (status, text) = post(
        "/api/channels/task:9/publish",
        r#"{"type":"task_status","data":{"task_id":"9"}}"#,
    )
    .await;
    assert_eq!(status, 202, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["channel"], "task:9");
    let offset = v["offset"].as_str().expect("offset").to_owned();
    assert!(key(&offset) > key(&id));
    assert_eq!(
        stream_ids(&publisher, "pulse:{task:9}:stream").await,
        [id, offset]
    );
    let (status, text) = post("/api/channels/live:1/publish", "{}").await;
    assert_eq!(
        (
            status,
            serde_json::from_str::<Value>(&text).expect("json")["offset"].clone()
        ),
        (202, Value::Null)
    );
    for (path, body, status, code) in [
        ("/api/channels/task/publish", "{}", 400, "invalid_channel"),
        (
            "/api/channels/persona:x/publish",
            "{}",
            400,
            "invalid_channel",
        ),
        (
            "/api/channels/nope:1/publish",
            "{}",
            404,
            "unknown_namespace",
        ),
        ("/api/channels/task:9/publish", "nope", 400, "invalid_field"),
        (
            "/api/channels/task:9/publish",
            r#"{"offset":1}"#,
            400,
            "invalid_field",
        ),
    ] {
        let (got, text) = post(path, body).await;
        assert_eq!(got, status, "{path} {body}: {text}");
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["error"]["code"], code, "{text}");
    }
    let (_, metrics) = http_get(addr, "/metrics").await;
    assert!(
        metrics.contains("pulsegate_published_total 2"),
        "published_total"
    );
    assert!(metrics.contains(r#"pulsegate_publish_rejected_total{reason="unknown_namespace"} 1"#));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_events_are_audited_in_their_own_table() {
    let redis = RedisServer::spawn().await;
    let pg = PgServer::spawn();
    let mut c = channels_config(&redis);
    c.database.url = Some(pg.url());
    c.audit.discover_interval = Duration::from_millis(300);
    c.audit.poll_interval = Duration::from_millis(50);
    let gw = start_gateway(c).await;
    let publisher = redis.client().await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let channel = if i % 3 == 0 { "task:a" } else { "task:b" };
        ids.push(
            publish(&publisher, channel, line(channel, i))
                .await
                .expect("publish")
                .expect("id"),
        );
    }
    publish(
        &publisher,
        "task:a",
        json!({"type": "task_status", "data": {"status": "failed"}}),
    )
    .await
    .expect("publish");
    for i in 0..5 {
        ingest(
            &publisher,
            "pa",
            posted(&format!("v{i}"), 0.05, &format!("p{i}")),
        )
        .await
        .expect("ingest");
    }
    let db = pg.client().await;
    wait_count(&db, "SELECT count(*) FROM channel_events", 31, T).await;
    wait_count(&db, "SELECT count(*) FROM dashboard_events", 5, T).await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM dashboard_events WHERE persona_id LIKE '%:%'"
        )
        .await,
        0
    );
    let rows = db
        .query(
            "SELECT namespace, channel_id, event_type, count(*) FROM channel_events
             GROUP BY 1, 2, 3 ORDER BY 2, 3",
            &[],
        )
        .await
        .expect("query");
    let rows: Vec<(String, String, String, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let row = |id: &str, t: &str, n| ("task".to_owned(), id.to_owned(), t.to_owned(), n);
    assert_eq!(
        rows,
        [
            row("a", "task_output", 10),
            row("a", "task_status", 1),
            row("b", "task_output", 20)
        ]
    );
    let row = db
        .query_one(
            "SELECT event_id, event_data->>'offset', event_data->'data'->>'seq' FROM channel_events
             WHERE channel_id = 'b' ORDER BY stream_ms, stream_seq LIMIT 1",
            &[],
        )
        .await
        .expect("query");
    let (eid, offset, seq): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (eid.as_str(), offset.as_str(), seq.as_str()),
        (ids[1].as_str(), ids[1].as_str(), "1")
    );
    gw.shutdown().await;
}
