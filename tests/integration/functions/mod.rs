//! The ingest functions driven directly through FCALL, as any publisher
//! would: exact aggregates, rolling windows, validation that changes
//! nothing, the out-of-order rule, and concurrent publishers.
//! (scripts/lua-check/check.py holds the exhaustive randomized model check.)

mod defaults;

use fred::prelude::*;
use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::common::*;

const MIN: u64 = 60_000;

async fn load(redis: &RedisServer) -> Client {
    let client = redis.client().await;
    pulsegate::redis::functions::load(&client)
        .await
        .expect("FUNCTION LOAD");
    client
}

async fn variant(client: &Client, persona: &str, id: &str, now_ms: u64) -> Value {
    let raw: Option<String> = client
        .fcall_ro(
            "pulse_variant",
            vec![format!("pulse:{{{persona}}}")],
            vec![id.to_owned(), json!({"now_ms": now_ms}).to_string()],
        )
        .await
        .expect("pulse_variant");
    raw.map(|r| serde_json::from_str(&r).unwrap())
        .unwrap_or(Value::Null)
}

async fn snapshot(client: &Client, persona: &str) -> Value {
    let raw: String = client
        .fcall_ro(
            "pulse_snapshot",
            vec![format!("pulse:{{{persona}}}")],
            Vec::<String>::new(),
        )
        .await
        .expect("pulse_snapshot");
    serde_json::from_str(&raw).unwrap()
}

/// Every key of the persona with its DUMP, to prove nothing changed.
async fn dump_all(client: &Client, persona: &str) -> Vec<(String, Option<Vec<u8>>)> {
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

fn at(mut e: Value, ts: u64) -> Value {
    e["ts"] = json!(ts);
    e
}

#[tokio::test]
async fn sequences_give_exact_aggregates_and_windows_roll() {
    let redis = RedisServer::spawn().await;
    let c = load(&redis).await;
    let t0 = 1_795_300_000_000u64 - 1_795_300_000_000 % MIN;
    ingest(&c, "p", at(posted("a", 0.05, "hook"), t0))
        .await
        .unwrap();
    ingest(&c, "p", at(posted("b", 0.10, "story"), t0))
        .await
        .unwrap();
    ingest(&c, "p", at(perf("a", 1000, 50), t0)).await.unwrap();
    ingest(&c, "p", at(perf("a", 3000, 210), t0 + 10 * MIN))
        .await
        .unwrap();
    ingest(&c, "p", at(perf("b", 400, 20), t0 + 10 * MIN))
        .await
        .unwrap();

    let a = variant(&c, "p", "a", t0 + 10 * MIN).await;
    assert_eq!(
        (a["view_count"].as_u64(), a["interaction_count"].as_u64()),
        (Some(3000), Some(210))
    );
    assert_eq!(a["current_er"], 0.07);
    assert_eq!(a["performance_vs_prediction"], 0.4);
    // Last 5 minutes hold only the second update's increment: 160 / 2000.
    assert_eq!(a["er_5m"], 0.08);
    // 15 and 60 minutes hold both: 210 / 3000.
    assert_eq!(a["er_15m"], 0.07);
    assert_eq!(a["er_60m"], 0.07);
    // An hour and more later the windows have rolled past both updates.
    let later = variant(&c, "p", "a", t0 + 75 * MIN).await;
    assert_eq!(later["er_5m"], Value::Null);
    assert_eq!(later["er_60m"], Value::Null);
    assert_eq!(later["view_count"], 3000, "totals do not roll");

    let s = snapshot(&c, "p").await;
    assert_eq!(s["summary"]["total_variants"], 2);
    assert_eq!(s["summary"]["active_variants"], 2);
    // (0.07 + 0.05) / 2
    assert_eq!(s["summary"]["avg_engagement_rate"], 0.06);

    ingest(&c, "p", json!({"type": "early_kill", "variant_id": "b", "reason": "low", "final_engagement_rate": 0.05, "sample_size": 400, "ts": t0 + 12 * MIN})).await.unwrap();
    let s = snapshot(&c, "p").await;
    assert_eq!(s["summary"]["active_variants"], 1);
    assert_eq!(s["summary"]["avg_engagement_rate"], 0.07);
    assert_eq!(s["recent_kills"][0]["variant_id"], "b");
    assert_eq!(s["recent_kills"][0]["time_to_kill_minutes"], 12.0);
}

#[tokio::test]
async fn out_of_order_updates_never_lower_or_double_count() {
    let redis = RedisServer::spawn().await;
    let c = load(&redis).await;
    ingest(&c, "p", posted("a", 0.05, "hook")).await.unwrap();
    ingest(&c, "p", perf("a", 1000, 50)).await.unwrap();
    ingest(&c, "p", perf("a", 2000, 90)).await.unwrap();
    // Late and duplicate reports: accepted, marked stale, counted nowhere.
    let late = ingest(&c, "p", perf("a", 1500, 70)).await.unwrap();
    ingest(&c, "p", perf("a", 2000, 90)).await.unwrap();
    let entries: Vec<(String, std::collections::HashMap<String, String>)> = c
        .xrange("pulse:{p}:stream", late.as_str(), late.as_str(), None)
        .await
        .unwrap();
    let m: Value = serde_json::from_str(&entries[0].1["m"]).unwrap();
    assert_eq!(m["data"]["stale"], true);
    assert_eq!(
        (
            m["data"]["view_delta"].as_u64(),
            m["data"]["interaction_delta"].as_u64()
        ),
        (Some(0), Some(0))
    );
    // Interactions grew while views did not: max-merged per field.
    ingest(&c, "p", perf("a", 1800, 120)).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let a = variant(&c, "p", "a", now).await;
    assert_eq!(
        (a["view_count"].as_u64(), a["interaction_count"].as_u64()),
        (Some(2000), Some(120))
    );
    assert_eq!(a["current_er"], 0.06);
    assert_eq!(
        a["er_60m"], 0.06,
        "window sums equal the totals: nothing counted twice"
    );
}

#[tokio::test]
async fn invalid_events_name_the_field_and_change_nothing() {
    let redis = RedisServer::spawn().await;
    let c = load(&redis).await;
    ingest(&c, "p", posted("a", 0.05, "hook")).await.unwrap();
    ingest(&c, "p", perf("a", 100, 5)).await.unwrap();
    let before = dump_all(&c, "p").await;
    let cases = [
        (json!({"variant_id": "a"}), "type"),
        (json!({"type": "nope", "variant_id": "a"}), "type"),
        (
            json!({"type": "variant_posted", "variant_id": "b", "content": "c", "predicted_er": 2.0, "pattern_used": "x"}),
            "predicted_er",
        ),
        (
            json!({"type": "variant_posted", "variant_id": "b c", "content": "c", "predicted_er": 0.1, "pattern_used": "x"}),
            "variant_id",
        ),
        (
            json!({"type": "variant_posted", "variant_id": "b", "predicted_er": 0.1, "pattern_used": "x"}),
            "content",
        ),
        (
            json!({"type": "performance_update", "variant_id": "a", "view_count": 10.5, "interaction_count": 1}),
            "view_count",
        ),
        (
            json!({"type": "performance_update", "variant_id": "a", "view_count": 200, "interaction_count": 10, "engagement_rate": 0.5}),
            "engagement_rate",
        ),
        (
            json!({"type": "performance_update", "variant_id": "zz", "view_count": 200, "interaction_count": 10}),
            "variant_id",
        ),
        (
            json!({"type": "early_kill", "variant_id": "a", "reason": "r", "final_engagement_rate": 0.01, "sample_size": -1}),
            "sample_size",
        ),
        (
            json!({"type": "performance_update", "variant_id": "a", "view_count": 1, "interaction_count": 1, "ts": "now"}),
            "ts",
        ),
    ];
    for (event, field) in cases {
        let err = ingest(&c, "p", event.clone()).await.expect_err("rejected");
        assert!(
            err.details().contains(&format!("field={field}")),
            "{event}: {err}"
        );
    }
    let raw: Result<String, _> = c
        .fcall("pulse_ingest", vec!["pulse:{p}"], vec!["{not json"])
        .await;
    assert!(raw.unwrap_err().details().contains("field=event"));
    assert_eq!(
        dump_all(&c, "p").await,
        before,
        "rejected events changed nothing"
    );

    // The persona-id rule is the gateway's: no ':', at most
    // max_persona_id_len (default 64) characters.
    let long = "x".repeat(65);
    for persona in ["a:b", long.as_str(), &"y".repeat(129)] {
        let err = ingest(&c, persona, posted("a", 0.05, "hook"))
            .await
            .expect_err("persona id refused");
        assert!(
            err.details().contains("field=persona_id"),
            "{persona}: {err}"
        );
    }
    ingest_with(
        &c,
        &long,
        posted("a", 0.05, "hook"),
        json!({"max_persona_id_len": 65}),
    )
    .await
    .expect("a longer limit passed as an option");
    let err = ingest_with(
        &c,
        &long,
        posted("b", 0.05, "hook"),
        json!({"max_persona_id_len": 64}),
    )
    .await
    .expect_err("the limit applies to a persona already seen");
    assert!(err.details().contains("field=persona_id"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_keep_exact_totals() {
    const PUBLISHERS: usize = 8;
    const EVENTS: u64 = 5000;
    let redis = RedisServer::spawn().await;
    let c = load(&redis).await;
    for p in 0..PUBLISHERS {
        ingest(&c, "p", posted(&format!("v{p}"), 0.05, &format!("pat{p}")))
            .await
            .unwrap();
    }
    // Each publisher reports growing totals for its own variant and also
    // for a shared one, from its own connection, all at once.
    ingest(&c, "p", posted("shared", 0.05, "shared"))
        .await
        .unwrap();
    let tasks = (0..PUBLISHERS).map(|p| {
        let url = redis.url();
        tokio::spawn(async move {
            let client = Client::new(
                fred::prelude::Config::from_url(&url).unwrap(),
                None,
                None,
                None,
            );
            client.init().await.unwrap();
            for i in 1..=EVENTS {
                let event = if i % 2 == 0 {
                    perf(&format!("v{p}"), i, i / 10)
                } else {
                    perf("shared", i * 8 + p as u64, i)
                };
                ingest(&client, "p", event).await.unwrap();
            }
        })
    });
    for r in join_all(tasks).await {
        r.unwrap();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for p in 0..PUBLISHERS {
        let v = variant(&c, "p", &format!("v{p}"), now).await;
        assert_eq!(
            (v["view_count"].as_u64(), v["interaction_count"].as_u64()),
            (Some(EVENTS), Some(EVENTS / 10))
        );
    }
    let shared = variant(&c, "p", "shared", now).await;
    assert_eq!(
        shared["view_count"].as_u64(),
        Some((EVENTS - 1) * 8 + PUBLISHERS as u64 - 1),
        "the max of all reports"
    );
    assert_eq!(shared["interaction_count"].as_u64(), Some(EVENTS - 1));
    let len: u64 = c.xlen("pulse:{p}:stream").await.unwrap();
    assert_eq!(
        len,
        (PUBLISHERS as u64) * EVENTS + PUBLISHERS as u64 + 1,
        "one entry per call"
    );
    let s = snapshot(&c, "p").await;
    assert_eq!(s["summary"]["total_variants"], PUBLISHERS + 1);
}

/// `pulsegate simulate --events N` publishes exactly N accepted events (the
/// audit benchmark fills its realistic backlog with it), then exits 0.
#[tokio::test]
async fn simulate_stops_after_the_requested_number_of_events() {
    let redis = RedisServer::spawn().await;
    let client = load(&redis).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pulsegate"))
        .args([
            "simulate",
            "--redis-url",
            &redis.url(),
            "--personas",
            "s1,s2",
        ])
        .args(["--rate", "100000", "--events", "300"])
        .output()
        .await
        .expect("run pulsegate simulate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A post that makes its pattern fatigued appends a second entry of its
    // own (`pattern_fatigue`), so only the reported events are counted.
    let mut reported = 0;
    for p in ["s1", "s2"] {
        let entries: Vec<(String, std::collections::HashMap<String, String>)> = client
            .xrange(format!("pulse:{{{p}}}:stream"), "-", "+", None)
            .await
            .expect("XRANGE");
        reported += entries
            .iter()
            .filter(|(_, fields)| fields.get("t").map(String::as_str) != Some("pattern_fatigue"))
            .count();
    }
    assert_eq!(reported, 300);
}
