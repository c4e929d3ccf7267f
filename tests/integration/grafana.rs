//! deploy/grafana/pulsegate.json queries only metrics a running gateway
//! exports: every `pulsegate_*` name in the dashboard must be a sample name
//! of a family in `/metrics` (with the audit on, so its metrics are there),
//! with the suffix its type gives (`_total` for counters, `_bucket`/`_sum`/
//! `_count` for histograms, none for gauges). A renamed metric otherwise
//! turns a panel silently empty.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::common::*;
use crate::pg::*;

fn dashboard() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/pulsegate.json");
    let text = std::fs::read_to_string(path).expect("read deploy/grafana/pulsegate.json");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every PromQL expression in the dashboard: panel targets and variable queries.
fn expressions(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("query", serde_json::Value::String(s)) if s.contains('(') => {
                        out.push(s.clone())
                    }
                    _ => expressions(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| expressions(v, out)),
        _ => {}
    }
}

fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("pulsegate_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |n| start + n);
        if boundary {
            names.insert(expr[start..end].to_string());
        }
        i = end;
    }
    names
}

/// Sample names `/metrics` can carry, from its `# TYPE` lines.
fn exported_samples(metrics: &str) -> HashMap<String, String> {
    let mut samples = HashMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(family), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        for s in suffixes {
            samples.insert(format!("{family}{s}"), kind.to_string());
        }
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_metric_is_exported() {
    let dash = dashboard();
    let mut exprs = Vec::new();
    expressions(&dash, &mut exprs);
    let targets = dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|p| p["type"] != "row")
        .map(|p| p["targets"].as_array().map_or(0, Vec::len))
        .collect::<Vec<_>>();
    assert!(
        targets.len() >= 10 && targets.iter().all(|&n| n > 0),
        "every panel has a query: {targets:?}"
    );
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    for topic in [
        "connections_active",
        "frames_sent",
        "duration_seconds_bucket",
        "slow_disconnects",
        "rate_limited",
        "redis_up",
        "audit_lag",
    ] {
        assert!(
            used.iter().any(|m| m.contains(topic)),
            "the dashboard shows nothing about {topic}: {used:?}"
        );
    }

    let redis = RedisServer::spawn().await;
    let pg = PgServer::spawn();
    let mut config = test_config(&redis);
    config.database.url = Some(pg.url());
    config.audit.discover_interval = Duration::from_millis(300);
    config.audit.poll_interval = Duration::from_millis(50);
    config.validate().expect("valid config");
    let gw = start_gateway(config).await;
    // Something through the audit and HTTP paths, so their families are live.
    let publisher = redis.client().await;
    ingest(&publisher, "grafana", posted("v1", 0.5, "hook"))
        .await
        .expect("ingest");
    let (status, _) = http_get(gw.local_addr, "/api/metrics/grafana").await;
    assert_eq!(status, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let (status, body) = http_get(gw.local_addr, "/metrics").await;
        if status == 200 && body.contains("pulsegate_audit_rows_written_total 1") {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the audited event never showed in /metrics:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let exported = exported_samples(&metrics);
    let missing: Vec<&String> = used.iter().filter(|m| !exported.contains_key(*m)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics does not have: {missing:?}"
    );
    gw.shutdown().await;
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le) (rate(pulsegate_a_bucket{instance=~"$x"}[5m]))) / xpulsegate_no pulsegate_b"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["pulsegate_a_bucket", "pulsegate_b"]
    );
    let samples = exported_samples(
        "# TYPE pulsegate_c counter\n# TYPE pulsegate_h histogram\n# TYPE pulsegate_g gauge\n",
    );
    for name in [
        "pulsegate_c_total",
        "pulsegate_h_bucket",
        "pulsegate_h_count",
        "pulsegate_g",
    ] {
        assert!(samples.contains_key(name), "{name}");
    }
    assert!(!samples.contains_key("pulsegate_c"));
}
