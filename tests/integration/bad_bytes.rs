//! Bytes that are not UTF-8 and numbers that are not JSON (issue 11,
//! finding 2): `pulse_ingest` refuses them and changes nothing; and what is
//! already in Redis (written before the refusal existed, or by something
//! else) wedges no persona: snapshot, resume, REST, live delivery and the
//! audit serve the rest and count it in `pulsegate_undecodable_total`.

use std::time::Duration;

use bytes::Bytes;
use fred::prelude::*;
use serde_json::{json, Value as Json};

use crate::common::*;
use crate::pg::*;

const T: Duration = Duration::from_secs(10);

fn raw(b: &[u8]) -> Value {
    Value::Bytes(Bytes::copy_from_slice(b))
}

/// Every key of the persona with its DUMP, to prove a refusal changed nothing.
async fn dump_persona(client: &Client, persona: &str) -> Vec<(String, Option<Vec<u8>>)> {
    let (_, mut keys): (String, Vec<String>) = client
        .scan_page("0", format!("pulse:{{{persona}}}*"), Some(10_000), None)
        .await
        .unwrap();
    keys.sort();
    let mut out = Vec::new();
    for k in keys {
        let v: Option<Vec<u8>> = client.dump(&k).await.unwrap();
        out.push((k, v));
    }
    out
}

#[tokio::test]
async fn ingest_refuses_invalid_utf8_and_non_json_numbers_and_changes_nothing() {
    let redis = RedisServer::spawn().await;
    let c = redis.client().await;
    pulsegate::redis::functions::load(&c).await.unwrap();
    ingest(&c, "p", posted("a", 0.05, "hook")).await.unwrap();
    ingest(&c, "p", perf("a", 100, 5)).await.unwrap();
    let before = dump_persona(&c, "p").await;
    assert!(before.len() >= 4, "{before:?}");
    let post = |content: &[u8]| {
        let mut e = br#"{"type":"variant_posted","variant_id":"b","predicted_er":0.05,"content":""#
            .to_vec();
        e.extend_from_slice(content);
        e.extend_from_slice(b"\"}");
        e
    };
    let update = |views: &str| {
        format!(r#"{{"type":"performance_update","variant_id":"a","view_count":{views},"interaction_count":1}}"#)
            .into_bytes()
    };
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (post(b"\xff\xfe"), "content", "not valid UTF-8"),
        (post(b"caf\xc3"), "content", "not valid UTF-8"),
        (post(b"\xed\xa0\x80"), "content", "not valid UTF-8"),
        (
            b"{\"type\":\"early_kill\",\"variant_id\":\"a\",\"reason\":\"low \xff\",\"final_engagement_rate\":0.01,\"sample_size\":1}".to_vec(),
            "reason",
            "not valid UTF-8",
        ),
        (update("0x10"), "view_count", "not a JSON number"),
        (update("+1"), "view_count", "not a JSON number"),
        (update("01"), "view_count", "not a JSON number"),
        (update("inf"), "view_count", "not a JSON number"),
        (update("NaN"), "view_count", "not a JSON number"),
        (update("200."), "view_count", "not a JSON number"),
        (update("-.0"), "view_count", "not a JSON number"),
        (update("1.e3"), "view_count", "not a JSON number"),
    ];
    for (event, field, why) in cases {
        let shown = String::from_utf8_lossy(&event).into_owned();
        let r: Result<String, _> = c
            .fcall("pulse_ingest", vec!["pulse:{p}"], vec![raw(&event)])
            .await;
        let err = r.expect_err(&shown);
        let details = err.details();
        assert!(
            details.starts_with(&format!("INVALID field={field}: ")) && details.contains(why),
            "{shown}: {details}"
        );
    }
    // The options argument and the key are checked the same way.
    let r: Result<String, _> = c
        .fcall(
            "pulse_ingest",
            vec!["pulse:{p}"],
            vec![raw(&update("1")), raw(br#"{"stream_maxlen":0x10}"#)],
        )
        .await;
    assert!(r
        .unwrap_err()
        .details()
        .starts_with("INVALID field=options.stream_maxlen: "));
    let r: Result<String, _> = c
        .fcall(
            "pulse_ingest",
            vec![Key::from(Bytes::from_static(b"pulse\xff:{p}"))],
            vec![raw(&update("1"))],
        )
        .await;
    assert!(r.unwrap_err().details().starts_with("INVALID field=key: "));

    assert_eq!(
        dump_persona(&c, "p").await,
        before,
        "every key of the persona unchanged"
    );
    // What JSON allows still goes in.
    ingest(&c, "p", json!({"type": "variant_posted", "variant_id": "b", "predicted_er": 0.05, "content": "café 😀"}))
        .await
        .unwrap();
    let r: Result<String, _> = c
        .fcall(
            "pulse_ingest",
            vec!["pulse:{p}"],
            vec![raw(&update("2.5e2"))],
        )
        .await;
    r.unwrap();
}

/// What the library stored before it refused invalid UTF-8, plus what a
/// foreign writer could add: in persona `p`, variant `v1`'s content is
/// `\xff\xfe` (so every snapshot holds it), and two stream entries after
/// the good ones: `bad` (a `variant_posted` whose content is `\xff\xfe`,
/// as the old library wrote it) and `junk` (invalid bytes outside any JSON
/// string: not even its replacement is JSON). Returns their ids.
async fn plant_bad_bytes(c: &Client) -> (String, String) {
    let _: () = c
        .hset("pulse:{p}:v:v1", ("content", raw(b"\xff\xfe")))
        .await
        .unwrap();
    let ids = stream_ids(c, "pulse:{p}:stream").await;
    let (ms, seq) = ids.last().unwrap().split_once('-').unwrap();
    let seq: u64 = seq.parse().unwrap();
    let bad = format!("{ms}-{}", seq + 1);
    let junk = format!("{ms}-{}", seq + 2);
    let m = format!(
        r#"{{"type":"variant_update","timestamp":"2026-11-22T03:20:00.000Z","offset":"{bad}","data":{{"event_type":"variant_posted","variant_id":"bad","content":"CONTENT","predicted_er":0.05,"pattern_used":null,"posted_at":{ms},"status":"active","view_count":0,"interaction_count":0,"current_er":0}}}}"#
    );
    let m = m.replace("CONTENT", "\u{1}").into_bytes();
    let m: Vec<u8> = m
        .iter()
        .flat_map(|&b| if b == 1 { vec![0xff, 0xfe] } else { vec![b] })
        .collect();
    let key = "pulse:{p}:stream";
    let fields = vec![
        ("m", raw(&m)),
        ("t", "variant_posted".into()),
        ("v", "bad".into()),
    ];
    let _: String = c
        .xadd(key, false, None, bad.as_str(), fields)
        .await
        .unwrap();
    let junk_m = format!(r#"{{"type":"variant_update","offset":"{junk}","data":"#).into_bytes();
    let junk_m = [junk_m.as_slice(), b"\xff}"].concat();
    let fields = vec![("m", raw(&junk_m)), ("t", "variant_posted".into())];
    let _: String = c
        .xadd(key, false, None, junk.as_str(), fields)
        .await
        .unwrap();
    (bad, junk)
}

fn counted(metrics: &str, read: &str, action: &str) -> u64 {
    let prefix = format!(r#"pulsegate_undecodable_total{{read="{read}",action="{action}"}} "#);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bytes_in_redis_wedge_no_read_of_the_persona() {
    let redis = RedisServer::spawn().await;
    let mut config = test_config(&redis);
    // The resume below must read the stream (the replay path's repair is
    // what it checks), not the window of recent publications.
    config.ws.recent_entries = 0;
    let gw = start_gateway(config).await;
    let c = redis.client().await;
    ingest(&c, "p", posted("v1", 0.05, "hook")).await.unwrap();
    let before_bad = ingest(&c, "p", perf("v1", 1000, 60)).await.unwrap();
    // A dashboard open before, to see the live path.
    let mut live = connect(gw.local_addr, "/dashboard/ws/p").await;
    assert_eq!(next_json(&mut live, T).await["type"], "initial_data");

    let (bad, junk) = plant_bad_bytes(&c).await;
    let bad_m: Vec<(String, Vec<(String, Value)>)> = c
        .xrange("pulse:{p}:stream", bad.as_str(), bad.as_str(), None)
        .await
        .unwrap();
    let bad_payload = bad_m[0].1[0].1.as_bytes().unwrap().to_vec();
    let _: i64 = c
        .publish("pulse:{p}:events", raw(&bad_payload))
        .await
        .unwrap();
    let after = vec![
        ingest(&c, "p", perf("v1", 2000, 130)).await.unwrap(),
        ingest(&c, "p", posted("v2", 0.07, "story")).await.unwrap(),
    ];

    // Live: the published bad message arrives repaired, then the good ones.
    let v = next_json(&mut live, T).await;
    assert_eq!(v["offset"].as_str(), Some(bad.as_str()), "{v}");
    assert_eq!(v["data"]["content"], "\u{fffd}\u{fffd}");
    for id in &after {
        assert_eq!(
            next_json(&mut live, T).await["offset"].as_str(),
            Some(id.as_str())
        );
    }

    // A new dashboard: a real snapshot, current to the newest entry.
    let mut ws = connect(gw.local_addr, "/dashboard/ws/p").await;
    let init = next_json(&mut ws, T).await;
    assert_eq!(init["type"], "initial_data");
    assert_eq!(
        init["offset"].as_str(),
        after.last().map(String::as_str),
        "{init}"
    );
    let variants = init["data"]["active_variants"].as_array().unwrap();
    let v1 = variants
        .iter()
        .find(|v| v["variant_id"] == "v1")
        .expect("v1");
    assert_eq!(v1["content"], "\u{fffd}\u{fffd}");
    assert_eq!(v1["view_count"], 2000);
    assert!(variants.iter().any(|v| v["variant_id"] == "v2"));

    // A resume across the bad entries: the repaired one, not the junk, and
    // every good one after them; no initial_data.
    let mut ws = connect(
        gw.local_addr,
        &format!("/dashboard/ws/p?since={before_bad}"),
    )
    .await;
    let v = next_json(&mut ws, T).await;
    assert_eq!(v["type"], "variant_update", "{v}");
    assert_eq!(v["offset"].as_str(), Some(bad.as_str()));
    assert_eq!(v["data"]["content"], "\u{fffd}\u{fffd}");
    for id in &after {
        let v = next_json(&mut ws, T).await;
        assert_eq!(
            v["offset"].as_str(),
            Some(id.as_str()),
            "{junk} is skipped: {v}"
        );
    }

    // REST: the snapshot routes and the feed, which reads the stream.
    let (status, body) = http_json(gw.local_addr, "GET", "/api/variants/p/active", None).await;
    assert_eq!(status, 200, "{body}");
    let contents: Vec<&Json> = body["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["content"])
        .collect();
    assert!(contents.contains(&&json!("\u{fffd}\u{fffd}")), "{body}");
    let (status, body) = http_json(gw.local_addr, "GET", "/api/metrics/p", None).await;
    assert_eq!(status, 200, "{body}");
    let feed: Vec<&str> = body["real_time_feed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["offset"].as_str())
        .collect();
    assert!(
        feed.contains(&bad.as_str()) && !feed.contains(&junk.as_str()),
        "{feed:?}"
    );
    assert_eq!(feed.len(), 5, "every entry but the junk: {feed:?}");

    let metrics = gw.app.metrics.encode();
    assert_eq!(counted(&metrics, "live", "replaced"), 1, "{metrics}");
    assert!(counted(&metrics, "snapshot", "replaced") >= 2, "{metrics}");
    assert_eq!(counted(&metrics, "replay", "replaced"), 1, "{metrics}");
    assert_eq!(counted(&metrics, "replay", "skipped"), 1, "{metrics}");
    assert!(counted(&metrics, "feed", "replaced") >= 1, "{metrics}");
    assert!(counted(&metrics, "feed", "skipped") >= 1, "{metrics}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_records_bad_entries_replaced_and_the_rest_of_the_persona() {
    let redis = RedisServer::spawn().await;
    let pg = PgServer::spawn();
    let mut config = test_config(&redis);
    config.database.url = Some(pg.url());
    config.audit.discover_interval = Duration::from_millis(300);
    config.audit.poll_interval = Duration::from_millis(50);
    config.validate().unwrap();
    let gw = start_gateway(config).await;
    let c = redis.client().await;
    ingest(&c, "p", posted("v1", 0.05, "hook")).await.unwrap();
    ingest(&c, "p", perf("v1", 1000, 60)).await.unwrap();
    let (bad, junk) = plant_bad_bytes(&c).await;
    ingest(&c, "p", perf("v1", 2000, 130)).await.unwrap();
    ingest(&c, "p", posted("v2", 0.07, "story")).await.unwrap();
    let ids = stream_ids(&c, "pulse:{p}:stream").await;
    assert_eq!(ids.len(), 6);

    let db = pg.client().await;
    let sql = "SELECT count(*) FROM dashboard_events WHERE persona_id = 'p'";
    wait_count(&db, sql, ids.len() as i64, Duration::from_secs(30)).await;
    let row = |id: String| {
        let db = &db;
        async move {
            let r = db
                .query_one(
                    "SELECT event_data::text FROM dashboard_events WHERE persona_id = 'p' AND event_id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            serde_json::from_str::<Json>(&r.get::<_, String>(0)).unwrap()
        }
    };
    let b = row(bad.clone()).await;
    assert_eq!(b["invalid_utf8_replaced"], true, "{b}");
    assert_eq!(b["data"]["content"], "\u{fffd}\u{fffd}");
    let j = row(junk.clone()).await;
    assert_eq!(j["invalid_utf8_replaced"], true, "{j}");
    assert!(j["unparsed"].as_str().unwrap().contains('\u{fffd}'), "{j}");
    let good = row(ids[5].clone()).await;
    assert!(good.get("invalid_utf8_replaced").is_none(), "{good}");

    // Nothing is left pending: the stream's audit is not stuck.
    wait_until("the audit group to have nothing pending", T, || async {
        let groups: Vec<std::collections::HashMap<String, Value>> =
            c.xinfo_groups("pulse:{p}:stream").await.unwrap();
        groups
            .iter()
            .all(|g| g.get("pending").and_then(|v| v.as_u64()) == Some(0))
    })
    .await;
    let (status, body) = http_json(gw.local_addr, "GET", "/api/events/p", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"].as_array().unwrap().len(), 6, "{body}");
    let metrics = gw.app.metrics.encode();
    assert_eq!(counted(&metrics, "audit", "replaced"), 2, "{metrics}");
    gw.shutdown().await;
}
