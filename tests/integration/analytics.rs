//! Analytics and point-in-time snapshots from the audit trail, against
//! real Redis, Postgres and the gateway: the answers equal what the test
//! computes from the events it ingested. A namespace's analytics are in
//! `analytics/channels.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use crate::pg::*;

mod channels;

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

fn audit_config(redis: &RedisServer, db: &str) -> pulsegate::config::Config {
    let mut c = test_config(redis);
    c.database.url = Some(db.to_owned());
    c.audit.discover_interval = Duration::from_millis(200);
    c.audit.poll_interval = Duration::from_millis(50);
    c.validate().expect("valid");
    c
}

fn rfc(ms: i64) -> String {
    pulsegate::time::format_rfc3339_ms(ms).expect("time")
}

fn r6(x: f64) -> f64 {
    (x * 1e6 + 0.5).floor() / 1e6
}

/// Waits until Postgres holds every entry of the persona's stream.
async fn audited(client: &fred::prelude::Client, pg: &tokio_postgres::Client, persona: &str) {
    let n = stream_ids(client, &format!("pulse:{{{persona}}}:stream"))
        .await
        .len() as i64;
    let sql = format!("SELECT count(*) FROM dashboard_events WHERE persona_id = '{persona}'");
    wait_count(pg, &sql, n, Duration::from_secs(30)).await;
}

/// One event as the test keeps it: what the analytics should count.
struct Sent {
    kind: &'static str,
    ts: i64,
}

#[tokio::test]
async fn summaries_and_histograms_equal_the_ingested_events() {
    let redis = RedisServer::spawn().await;
    let db = PgServer::spawn();
    let gw = start_gateway(audit_config(&redis, &db.url())).await;
    let addr = gw.local_addr;
    let client = redis.client().await;
    let pg = db.client().await;

    // Events with their own times (`ts`), two days back from a UTC midnight:
    // 12 variants posted 97 minutes apart (one exactly on an hour), each
    // updated twice, every third killed `k` minutes after its post.
    let t0 = (pulsegate::time::now_ms() / DAY - 2) * DAY;
    let mut sent: Vec<Sent> = Vec::new();
    let mut posted_at = BTreeMap::new();
    let mut kills: Vec<(String, i64, i64)> = Vec::new(); // variant, posted, killed
    for i in 0..12i64 {
        let v = format!("v{i}");
        let ts = t0 + i * 97 * MIN + if i == 5 { 0 } else { 17_000 };
        let ts = if i == 5 { (ts / HOUR) * HOUR } else { ts };
        let mut e = posted(&v, 0.05, &format!("pat{i}"));
        e["ts"] = ts.into();
        ingest(&client, "pa", e).await.expect("post");
        sent.push(Sent {
            kind: "variant_posted",
            ts,
        });
        posted_at.insert(v.clone(), ts);
        for (j, (views, inter)) in [
            (101 + 10 * i as u64, 3 + i as u64),
            (400 + 7 * i as u64, 9 + 2 * i as u64),
        ]
        .into_iter()
        .enumerate()
        {
            let uts = ts + (j as i64 + 1) * 11 * MIN;
            let mut e = perf(&v, views, inter);
            e["ts"] = uts.into();
            ingest(&client, "pa", e).await.expect("update");
            sent.push(Sent {
                kind: "performance_update",
                ts: uts,
            });
        }
        if i % 3 == 0 {
            let kts = ts + (25 + 4 * i) * MIN;
            let e = json!({"type": "early_kill", "variant_id": v, "reason": "low", "final_engagement_rate": 0.01,
                           "sample_size": 100, "ts": kts});
            ingest(&client, "pa", e).await.expect("kill");
            sent.push(Sent {
                kind: "early_kill",
                ts: kts,
            });
            kills.push((v.clone(), ts, kts));
        }
    }
    audited(&client, &pg, "pa").await;

    // A range starting mid-hour and ending mid-day.
    let (since, until) = (t0 + 2 * HOUR + 30 * MIN, t0 + 15 * HOUR + 5 * MIN);
    let inside = |ts: i64| ts >= since && ts < until;
    let (status, s) = http_json(
        addr,
        "GET",
        &format!(
            "/api/analytics/pa/summary?since={}&until={}",
            rfc(since),
            rfc(until)
        ),
        None,
    )
    .await;
    assert_eq!(status, 200, "{s}");
    let mut by_type = BTreeMap::new();
    for e in sent.iter().filter(|e| inside(e.ts)) {
        *by_type.entry(e.kind).or_insert(0i64) += 1;
    }
    let total: i64 = by_type.values().sum();
    assert_eq!(s["events"]["total"], total);
    assert_eq!(s["events"]["by_type"], json!(by_type));
    assert_eq!(s["variants_posted"], by_type["variant_posted"]);
    assert_eq!(s["kills"], by_type.get("early_kill").copied().unwrap_or(0));
    assert_eq!(
        (s["since"].as_str(), s["until"].as_str()),
        (Some(&*rfc(since)), Some(&*rfc(until)))
    );
    // Kill rate: variants posted in the range, killed before `until`.
    let posted_in: Vec<&String> = posted_at
        .iter()
        .filter(|(_, &t)| inside(t))
        .map(|(v, _)| v)
        .collect();
    let killed_in = kills
        .iter()
        .filter(|(v, _, k)| posted_in.contains(&v) && *k < until)
        .count();
    assert_eq!(s["kill_rate"]["posted"], posted_in.len());
    assert_eq!(s["kill_rate"]["killed"], killed_in);
    assert_eq!(
        s["kill_rate"]["rate"],
        json!(r6(killed_in as f64 / posted_in.len() as f64))
    );
    let (lo, hi) =
        pulsegate::dashboard::wilson::interval(killed_in as u64, posted_in.len() as u64).unwrap();
    assert_eq!(s["kill_rate"]["interval"], json!([r6r(lo), r6r(hi)]));
    // Mean ER: each variant's latest update in the range.
    let ers: Vec<f64> = posted_at
        .keys()
        .filter_map(|v| sent_latest(&posted_at, v, since, until))
        .collect();
    let mean = ers.iter().sum::<f64>() / ers.len() as f64;
    assert_eq!(s["er_variants"], ers.len());
    assert!(
        (s["mean_er"].as_f64().unwrap() - mean).abs() < 1e-6,
        "{} vs {mean}",
        s["mean_er"]
    );
    // Minutes to kill, of the kills in the range.
    let mut ttk: Vec<f64> = kills
        .iter()
        .filter(|(_, _, k)| inside(*k))
        .map(|(_, p, k)| (k - p) as f64 / 60_000.0)
        .collect();
    ttk.sort_by(f64::total_cmp);
    let median = if ttk.len() % 2 == 1 {
        ttk[ttk.len() / 2]
    } else {
        (ttk[ttk.len() / 2 - 1] + ttk[ttk.len() / 2]) / 2.0
    };
    assert_eq!(s["minutes_to_kill"]["count"], ttk.len());
    assert!((s["minutes_to_kill"]["median"].as_f64().unwrap() - median).abs() < 1e-6);
    assert!(
        (s["minutes_to_kill"]["mean"].as_f64().unwrap()
            - ttk.iter().sum::<f64>() / ttk.len() as f64)
            .abs()
            < 1e-6
    );

    // Hour buckets of posts: from the hour holding `since`, every hour to
    // the one holding `until - 1 ms`, zeros included.
    for (metric, kind) in [
        ("posts", Some("variant_posted")),
        ("kills", Some("early_kill")),
        ("events", None),
    ] {
        let (status, h) = http_json(
            addr,
            "GET",
            &format!(
                "/api/analytics/pa/histogram?metric={metric}&bucket=hour&since={}&until={}",
                rfc(since),
                rfc(until)
            ),
            None,
        )
        .await;
        assert_eq!(status, 200, "{h}");
        let buckets = h["buckets"].as_array().unwrap();
        let first = since / HOUR * HOUR;
        assert_eq!(buckets.len() as i64, (until - first + HOUR - 1) / HOUR);
        for (n, b) in buckets.iter().enumerate() {
            let start = first + n as i64 * HOUR;
            let want = sent
                .iter()
                .filter(|e| {
                    kind.is_none_or(|k| e.kind == k)
                        && inside(e.ts)
                        && e.ts >= start
                        && e.ts < start + HOUR
                })
                .count();
            assert_eq!(
                b,
                &json!({"start": rfc(start), "count": want}),
                "{metric} bucket {n}"
            );
        }
    }
    // Day buckets of every event over four days.
    let (status, h) = http_json(
        addr,
        "GET",
        &format!(
            "/api/analytics/pa/histogram?metric=events&bucket=day&since={}&until={}",
            rfc(t0 - DAY),
            rfc(t0 + 3 * DAY)
        ),
        None,
    )
    .await;
    assert_eq!(status, 200, "{h}");
    let counts: Vec<i64> = h["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_i64().unwrap())
        .collect();
    let per_day = |d: i64| {
        sent.iter()
            .filter(|e| e.ts >= t0 + d * DAY && e.ts < t0 + (d + 1) * DAY)
            .count() as i64
    };
    assert_eq!(counts, vec![0, per_day(0), per_day(1), 0]);
    assert_eq!(h["buckets"][1]["start"], rfc(t0));
    // ER value buckets: 0.01 wide from 0, the last open.
    let (status, h) = http_json(
        addr,
        "GET",
        &format!(
            "/api/analytics/pa/histogram?metric=er&since={}&until={}",
            rfc(since),
            rfc(until)
        ),
        None,
    )
    .await;
    assert_eq!(status, 200, "{h}");
    let b = h["buckets"].as_array().unwrap();
    assert_eq!(b.len(), 21);
    assert_eq!(
        b[0],
        json!({"lower": 0.0, "upper": 0.01, "count": ers.iter().filter(|&&e| e < 0.01).count()})
    );
    assert_eq!(b[20]["upper"], Value::Null);
    for (n, bucket) in b.iter().enumerate().take(20) {
        let (lo, hi) = (n as f64 / 100.0, (n + 1) as f64 / 100.0);
        let want = ers.iter().filter(|&&e| e >= lo && e < hi).count();
        assert_eq!(bucket["count"], want, "er bucket {n}");
    }

    // Refusals: specific codes, counted.
    for (query, code) in [
        ("summary?since=yesterday", "invalid_since"),
        ("summary?until=2026-13-01T00:00:00Z", "invalid_until"),
        (
            "summary?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
            "invalid_range",
        ),
        (
            "summary?since=2020-01-01T00:00:00Z&until=2026-01-01T00:00:00Z",
            "span_too_long",
        ),
        ("histogram?metric=views", "invalid_metric"),
        ("histogram?bucket=week", "invalid_bucket"),
        (
            "histogram?bucket=hour&since=2026-01-01T00:00:00Z&until=2026-03-01T00:00:00Z",
            "too_many_buckets",
        ),
    ] {
        let (status, body) =
            http_json(addr, "GET", &format!("/api/analytics/pa/{query}"), None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{query}"
        );
    }
    let (status, body) = http_json(addr, "GET", "/api/analytics/bad!id/summary", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_persona_id"))
    );
    let (_, metrics) = http_get(addr, "/metrics").await;
    assert!(
        metrics.contains("pulsegate_analytics_rejected_total{reason=\"invalid_metric\"} 1"),
        "{metrics}"
    );

    // Without a database: 503 with a JSON body.
    let bare = start_gateway(test_config(&redis)).await;
    for path in [
        "/api/analytics/pa/summary",
        "/api/analytics/pa/histogram",
        "/api/snapshot/pa?at=2026-01-01T00:00:00Z",
    ] {
        let (status, body) = http_json(bare.local_addr, "GET", path, None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (503, Some("audit_unavailable")),
            "{path}"
        );
    }
    bare.shutdown().await;
    gw.shutdown().await;
}

fn r6r(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The variant's ER as of its last update in `[since, until)`: the updates
/// are at post + 11 and + 22 minutes; `None` without one in the range.
fn sent_latest(posted: &BTreeMap<String, i64>, v: &str, since: i64, until: i64) -> Option<f64> {
    let i: u64 = v[1..].parse().ok()?;
    let ts = posted[v];
    let updates = [
        (ts + 11 * MIN, 101 + 10 * i, 3 + i),
        (ts + 22 * MIN, 400 + 7 * i, 9 + 2 * i),
    ];
    updates
        .iter()
        .rev()
        .find(|(t, _, _)| *t >= since && *t < until)
        .map(|&(_, views, inter)| r6(inter as f64 / views as f64))
}

/// The live `initial_data` of `persona`: (offset, data).
async fn live(addr: std::net::SocketAddr, persona: &str) -> (Value, Value) {
    let mut ws = connect(addr, &format!("/dashboard/ws/{persona}")).await;
    let msg = next_json(&mut ws, Duration::from_secs(10)).await;
    assert_eq!(msg["type"], "initial_data");
    (msg["offset"].clone(), msg["data"].clone())
}

#[tokio::test]
async fn snapshots_at_three_instants_equal_the_live_ones() {
    let redis = RedisServer::spawn().await;
    let db = PgServer::spawn();
    let gw = start_gateway(audit_config(&redis, &db.url())).await;
    let addr = gw.local_addr;
    let client = redis.client().await;
    let pg = db.client().await;
    let now = pulsegate::time::now_ms();

    let mut instants = Vec::new();
    let mut views = BTreeMap::new();
    for phase in 0..3u64 {
        for i in 0..5u64 {
            let v = format!("p{phase}v{i}");
            // One pattern used more than the fatigue threshold (5) overall.
            let pattern = if i % 2 == 0 { "hook" } else { "story" };
            ingest(&client, "pit", posted(&v, 0.04 + i as f64 / 100.0, pattern))
                .await
                .expect("post");
            views.insert(v.clone(), 0u64);
        }
        let names: Vec<String> = views.keys().cloned().collect();
        for (n, v) in names.iter().enumerate() {
            let seen = views.get_mut(v).unwrap();
            *seen += 50 + 13 * n as u64;
            let mut e = perf(v, *seen, *seen / (7 + n as u64 % 5));
            if n % 4 == 1 {
                // Minute buckets in the past: a late update of the same totals
                // is stale; an earlier minute lands in its own bucket.
                e["ts"] = (now - (5 + n as i64) * MIN).into();
            }
            match ingest(&client, "pit", e).await {
                Ok(_) => {}
                Err(err) if err.details().contains("UNKNOWN_VARIANT") => {}
                Err(err) => panic!("update: {err}"),
            }
        }
        // Kill one variant of this phase and one of an earlier one.
        for v in [format!("p{phase}v1"), format!("p0v{}", 2 + phase)] {
            let e = json!({"type": "early_kill", "variant_id": v, "reason": format!("r{phase}"),
                           "final_engagement_rate": 0.0123456789, "sample_size": 77});
            match ingest(&client, "pit", e).await {
                Ok(_) => {
                    views.remove(&v);
                }
                Err(err) if err.details().contains("ALREADY_KILLED") => {}
                Err(err) => panic!("kill: {err}"),
            }
        }
        let (offset, data) = live(addr, "pit").await;
        instants.push((
            data["generated_at"].as_i64().expect("generated_at"),
            offset,
            data,
        ));
        // The next events get a later stream time than this snapshot's clock.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    audited(&client, &pg, "pit").await;
    // The three moments differ, and the last one has what the rebuild must
    // get right: kills, a fatigued pattern, windows and minute buckets.
    assert_ne!(instants[0].2, instants[1].2);
    assert_ne!(instants[1].2, instants[2].2);
    let last = &instants[2].2;
    assert!(!last["recent_kills"].as_array().unwrap().is_empty());
    assert!(
        !last["pattern_fatigue_warnings"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{last}"
    );
    assert!(last["active_variants"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["er_5m"].is_number()));

    for (at, offset, data) in &instants {
        let (status, body) = http_json(
            addr,
            "GET",
            &format!("/api/snapshot/pit?at={}", rfc(*at)),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(&body["offset"], offset);
        assert_eq!(
            &body["data"], data,
            "the rebuilt snapshot at {at} differs from the live one"
        );
    }
    // Before the first event: the empty dashboard; refusals.
    let (status, body) = http_json(
        addr,
        "GET",
        &format!("/api/snapshot/pit?at={}", rfc(now - HOUR)),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["offset"].clone(),
            body["data"]["summary"]["total_variants"].clone()
        ),
        (Value::Null, json!(0))
    );
    for (path, status_want, code) in [
        (
            format!("/api/snapshot/nobody?at={}", rfc(now)),
            404,
            "unknown_persona",
        ),
        (
            "/api/snapshot/pit?at=yesterday".to_string(),
            400,
            "invalid_at",
        ),
        ("/api/snapshot/pit".to_string(), 400, "invalid_at"),
        (
            format!("/api/snapshot/pit?at={}", rfc(now + DAY)),
            400,
            "at_in_future",
        ),
    ] {
        let (status, body) = http_json(addr, "GET", &path, None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (status_want, Some(code)),
            "{path}"
        );
    }
    gw.shutdown().await;
}
