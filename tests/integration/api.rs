//! The REST API: ingest over HTTP, read routes with exact numbers, and the
//! 4xx answers.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

async fn post(addr: std::net::SocketAddr, route: &str, body: Value) -> (u16, Value) {
    http_json(
        addr,
        "POST",
        &format!("/api/events/{route}"),
        Some(&body.to_string()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_read_back_exact_numbers() {
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(test_config(&redis)).await;
    let a = gw.local_addr;
    let mut ws = connect(a, "/dashboard/ws/shop").await;
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(5)).await["type"],
        "initial_data"
    );

    for (id, pred, pattern) in [
        ("v1", 0.05, "hook"),
        ("v2", 0.10, "story"),
        ("v3", 0.04, "list"),
    ] {
        let (status, body) = post(
            a,
            "variant-posted",
            json!({"persona_id": "shop", "variant_id": id, "content": format!("text {id}"), "predicted_er": pred, "pattern_used": pattern}),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        assert!(body["event_id"].as_str().is_some_and(|e| e.contains('-')));
    }
    let (status, body) = post(a, "performance-update", json!({"persona_id": "shop", "variant_id": "v1", "view_count": 2500, "interaction_count": 150})).await;
    assert_eq!(status, 202, "{body}");
    let event_id = body["event_id"].as_str().unwrap().to_owned();
    post(a, "performance-update", json!({"persona_id": "shop", "variant_id": "v2", "view_count": 1000, "interaction_count": 50})).await;
    post(a, "performance-update", json!({"persona_id": "shop", "variant_id": "v3", "view_count": 1000, "interaction_count": 10})).await;
    let (status, body) = post(a, "early-kill", json!({"persona_id": "shop", "variant_id": "v3", "reason": "low_engagement", "final_engagement_rate": 0.01, "sample_size": 1000})).await;
    assert_eq!(status, 202, "{body}");

    // The live message of the first performance update, as published.
    let mut update = Value::Null;
    for _ in 0..10 {
        let v = next_json(&mut ws, Duration::from_secs(5)).await;
        if v["offset"] == event_id.as_str() {
            update = v;
            break;
        }
    }
    assert_eq!(update["type"], "variant_update");
    let d = &update["data"];
    assert_eq!(d["event_type"], "performance_update");
    assert_eq!(d["variant_id"], "v1");
    assert_eq!(d["current_er"], 0.06);
    assert_eq!(
        (d["view_count"].as_u64(), d["interaction_count"].as_u64()),
        (Some(2500), Some(150))
    );
    assert_eq!(d["performance_vs_prediction"], 0.2);

    let (status, m) = http_json(a, "GET", "/api/metrics/shop", None).await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["summary"]["total_variants"], 3);
    assert_eq!(m["summary"]["active_variants"], 2);
    // (0.06 + 0.05) / 2 over the active variants
    assert_eq!(m["summary"]["avg_engagement_rate"], 0.055);
    assert_eq!(m["early_kills_today"]["kills_today"], 1);
    assert!(m["early_kills_today"]["avg_time_to_kill_minutes"].is_number());
    assert_eq!(m["performance_leaders"][0]["variant_id"], "v1");
    assert!(m["pattern_fatigue_warnings"].as_array().unwrap().is_empty());
    assert!(m["optimization_opportunities"].is_array());
    let feed = m["real_time_feed"].as_array().unwrap();
    assert_eq!(feed.len(), 7, "every event, newest first");
    assert_eq!(feed[0]["data"]["event_type"], "early_kill");
    assert_eq!(feed[0]["data"]["kill_reason"], "low_engagement");

    let (status, v) = http_json(a, "GET", "/api/variants/shop/active", None).await;
    assert_eq!(status, 200);
    let variants = v["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 2);
    let v1 = variants.iter().find(|x| x["id"] == "v1").unwrap();
    assert_eq!(v1["content"], "text v1");
    assert_eq!(v1["predicted_er"], 0.05);
    assert_eq!(v1["live_metrics"]["engagement_rate"], 0.06);
    assert_eq!(v1["live_metrics"]["views"], 2500);
    assert_eq!(v1["live_metrics"]["interactions"], 150);
    let iv = v1["live_metrics"]["er_interval"].as_array().unwrap();
    assert!(
        (iv[0].as_f64().unwrap() - 0.05131).abs() < 1e-4
            && (iv[1].as_f64().unwrap() - 0.07006).abs() < 1e-4
    );
    assert_eq!(v1["verdict"], "over_performing");
    assert_eq!(v1["status"], "active");
    assert!(v1["time_since_post"].is_string());

    let (status, o) = http_json(a, "GET", "/api/optimization/shop", None).await;
    assert_eq!(status, 200);
    assert!(o["suggestions"].is_array());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_the_field_named() {
    let redis = RedisServer::spawn().await;
    let mut config = test_config(&redis);
    config.ingest.max_body_bytes = 1024;
    let gw = start_gateway(config).await;
    let a = gw.local_addr;
    let good = json!({"persona_id": "p", "variant_id": "v1", "content": "c", "predicted_er": 0.05, "pattern_used": "hook"});
    assert_eq!(post(a, "variant-posted", good).await.0, 202);

    let cases = [
        ("variant-posted", "not json".to_string(), 400, "body"),
        ("variant-posted", "[1]".to_string(), 400, "body"),
        ("variant-posted", json!({"variant_id": "v"}).to_string(), 400, "persona_id"),
        ("variant-posted", json!({"persona_id": "a:b", "variant_id": "v"}).to_string(), 400, "persona_id"),
        ("variant-posted", json!({"persona_id": "p", "type": "early_kill"}).to_string(), 400, "type"),
        ("variant-posted", json!({"persona_id": "p", "variant_id": "v2", "content": "c", "predicted_er": "high", "pattern_used": "x"}).to_string(), 400, "predicted_er"),
        ("performance-update", json!({"persona_id": "p", "variant_id": "v1", "view_count": -1, "interaction_count": 0}).to_string(), 400, "view_count"),
        ("performance-update", json!({"persona_id": "p", "variant_id": "v1", "view_count": 10}).to_string(), 400, "interaction_count"),
        ("performance-update", json!({"persona_id": "p", "variant_id": "ghost", "view_count": 10, "interaction_count": 1}).to_string(), 404, "variant_id"),
        ("early-kill", json!({"persona_id": "p", "variant_id": "v1", "reason": "r", "final_engagement_rate": 0.01}).to_string(), 400, "sample_size"),
    ];
    for (route, body, status, field) in cases {
        let (got, answer) =
            http_json(a, "POST", &format!("/api/events/{route}"), Some(&body)).await;
        assert_eq!(got, status, "{route} {body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{route} {body}: {answer}");
        assert!(answer["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // Nothing of the refused events was written.
    let (_, m) = http_json(a, "GET", "/api/metrics/p", None).await;
    assert_eq!(m["summary"]["total_variants"], 1);
    assert_eq!(m["real_time_feed"].as_array().unwrap().len(), 1);

    let big = json!({"persona_id": "p", "variant_id": "v9", "content": "x".repeat(2000), "predicted_er": 0.05, "pattern_used": "hook"});
    assert_eq!(post(a, "variant-posted", big).await.0, 413);
    // A persona named `early-kill`: its history, which needs a database.
    assert_eq!(
        http_json(a, "GET", "/api/events/early-kill", None).await.0,
        503
    );
    assert_eq!(
        http_json(a, "POST", "/api/metrics/p", Some("{}")).await.0,
        405
    );
    assert_eq!(
        http_json(a, "POST", "/api/events/nope", Some("{}")).await.0,
        405
    );
    let (status, body) = http_json(a, "GET", "/api/metrics/nobody", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_persona"))
    );
    assert_eq!(
        http_json(a, "GET", "/api/variants/nobody/active", None)
            .await
            .0,
        404
    );
    assert_eq!(
        http_json(a, "GET", "/api/optimization/nobody", None)
            .await
            .0,
        404
    );
    let (status, body) = http_json(a, "GET", "/api/metrics/bad%7Bid", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_persona_id"))
    );
    let metrics = gw.app.metrics.encode();
    assert!(
        metrics.contains(r#"pulsegate_ingest_rejected_total{reason="invalid"}"#),
        "{metrics}"
    );
    gw.shutdown().await;
}

/// Reads served by the background-refreshed cache follow every event: with
/// `http.api_cache_max_lag = 0` a read after an HTTP ingest on the same
/// instance shows it; events from other publishers (FCALL) show within a
/// bounded wait; while Redis is down no cached answer is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_reads_follow_every_event_and_never_outlive_redis() {
    let mut redis = RedisServer::spawn().await;
    let mut config = test_config(&redis);
    config.http.api_cache_max_lag = Duration::ZERO;
    let gw = start_gateway(config).await;
    let a = gw.local_addr;
    let (status, _) = post(a, "variant-posted", json!({"persona_id": "rw", "variant_id": "v1", "content": "c", "predicted_er": 0.05, "pattern_used": "p"})).await;
    assert_eq!(status, 202);
    for route in [
        "/api/metrics/rw",
        "/api/variants/rw/active",
        "/api/optimization/rw",
    ] {
        assert_eq!(http_json(a, "GET", route, None).await.0, 200);
    }
    wait_until(
        "the REST cache watches the persona",
        Duration::from_secs(5),
        || async { gw.app.api_cache.watched() == 1 },
    )
    .await;

    for i in 1..=30u64 {
        let (status, body) = post(a, "performance-update", json!({"persona_id": "rw", "variant_id": "v1", "view_count": 100 * i, "interaction_count": i})).await;
        assert_eq!(status, 202, "{body}");
        let (status, m) = http_json(a, "GET", "/api/metrics/rw", None).await;
        assert_eq!(status, 200, "{m}");
        assert_eq!(m["offset"], body["event_id"], "read after write {i}");
        assert_eq!(m["active_variants"][0]["view_count"], 100 * i);
        let (_, v) = http_json(a, "GET", "/api/variants/rw/active", None).await;
        assert_eq!(v["variants"][0]["live_metrics"]["interactions"], i);
    }

    // Whether the very first reads were built by the request or waited for
    // the watcher depends on how soon Redis confirmed its subscription.
    let (_, metrics) = http_get(a, "/metrics").await;
    assert!(
        metrics.contains("pulsegate_api_cache_personas 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pulsegate_api_reads_total{source=\"cached\"}")
            || metrics.contains("pulsegate_api_reads_total{source=\"waited\"}"),
        "reads served by the cache are counted"
    );

    // Another publisher: the hub's publication triggers the rebuild.
    let publisher = redis.client().await;
    let id = ingest(&publisher, "rw", perf("v1", 10_000, 500))
        .await
        .unwrap();
    wait_until(
        "the cached answer shows the FCALL event",
        Duration::from_secs(5),
        || async { http_json(a, "GET", "/api/metrics/rw", None).await.1["offset"] == id.as_str() },
    )
    .await;

    redis.kill();
    wait_until(
        "reads fail while Redis is down",
        Duration::from_secs(15),
        || async { http_json(a, "GET", "/api/metrics/rw", None).await.0 == 503 },
    )
    .await;
    gw.shutdown().await;
}
