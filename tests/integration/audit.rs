//! The audit trail against real Redis and Postgres: exactly once, through a
//! Postgres outage, two instances and a SIGKILL, and a full backlog.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;

use crate::common::*;
use crate::pg::*;

fn audit_config(redis: &RedisServer, db: &str) -> pulsegate::config::Config {
    let mut c = test_config(redis);
    c.database.url = Some(db.to_owned());
    c.audit.discover_interval = Duration::from_millis(300);
    c.audit.poll_interval = Duration::from_millis(50);
    c.audit.claim_idle = Duration::from_secs(2);
    c.validate().expect("valid");
    c
}

/// A realistic mix for one persona: posts, updates, some kills.
fn events_for(n: usize, persona: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::with_capacity(n);
    let mut variants = 0usize;
    let mut views = HashMap::new();
    for i in 0..n {
        if i % 20 == 0 {
            variants += 1;
            out.push(posted(
                &format!("{persona}_v{variants}"),
                0.05,
                &format!("pattern{}", variants % 50),
            ));
        } else if i % 97 == 0 && variants > 1 {
            let v = format!("{persona}_v{}", variants - 1);
            out.push(json!({"type": "early_kill", "variant_id": v, "reason": "low_engagement", "final_engagement_rate": 0.01, "sample_size": 100}));
        } else {
            let v = format!("{persona}_v{variants}");
            let seen = views.entry(v.clone()).or_insert(0u64);
            *seen += 10;
            out.push(perf(&v, *seen, *seen / 20));
        }
    }
    out
}

async fn ingest_all(
    client: &fred::prelude::Client,
    persona: &str,
    events: Vec<serde_json::Value>,
) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in events.chunks(200) {
        let results = join_all(chunk.iter().map(|e| ingest(client, persona, e.clone()))).await;
        for r in results {
            match r {
                Ok(id) => ids.push(id),
                // A kill of an already killed variant is fine to refuse here.
                Err(e)
                    if e.details().contains("ALREADY_KILLED")
                        || e.details().contains("UNKNOWN_VARIANT") => {}
                Err(e) => panic!("ingest: {e}"),
            }
        }
    }
    ids
}

/// Every stream id of every persona, as (persona, id).
async fn all_stream_ids(
    client: &fred::prelude::Client,
    personas: &[&str],
) -> HashSet<(String, String)> {
    let mut all = HashSet::new();
    for p in personas {
        for id in stream_ids(client, &format!("pulse:{{{p}}}:stream")).await {
            all.insert((p.to_string(), id));
        }
    }
    all
}

async fn audited_ids(db: &tokio_postgres::Client) -> HashSet<(String, String)> {
    db.query("SELECT persona_id, event_id FROM dashboard_events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Waits until Postgres holds as many events as the personas' streams, then
/// checks they are exactly the stream ids: no gap, no duplicate.
async fn expect_exactly_audited(
    db: &tokio_postgres::Client,
    publisher: &fred::prelude::Client,
    personas: &[&str],
) {
    let expected = all_stream_ids(publisher, personas).await;
    wait_count(
        db,
        "SELECT count(*) FROM dashboard_events",
        expected.len() as i64,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(audited_ids(db).await, expected, "no gap, no duplicate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_land_exactly_once() {
    let _turn = heavy().await;
    let redis = RedisServer::spawn().await;
    let pg = PgServer::spawn();
    let gw = start_gateway(audit_config(&redis, &pg.url())).await;
    let publisher = redis.client().await;
    let personas = ["alpha", "beta", "gamma", "delta"];
    let mut tasks = Vec::new();
    for p in personas {
        let client = publisher.clone();
        tasks.push(tokio::spawn(async move {
            ingest_all(&client, p, events_for(2500, p)).await
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let expected = all_stream_ids(&publisher, &personas).await;
    assert!(
        expected.len() >= 10_000,
        "{} stream entries",
        expected.len()
    );
    let db = pg.client().await;
    wait_count(
        &db,
        "SELECT count(*) FROM dashboard_events",
        expected.len() as i64,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        audited_ids(&db).await,
        expected,
        "one row per stream entry, same ids"
    );

    let kills = count(
        &db,
        "SELECT count(*) FROM dashboard_events WHERE event_type = 'early_kill'",
    )
    .await;
    assert!(kills > 0);
    assert_eq!(
        count(&db, "SELECT count(*) FROM variant_kills").await,
        kills
    );
    let posts = count(
        &db,
        "SELECT count(*) FROM dashboard_events WHERE event_type = 'variant_posted'",
    )
    .await;
    assert_eq!(count(&db, "SELECT count(*) FROM variants").await, posts);
    assert_eq!(
        count(&db, "SELECT count(*) FROM variants WHERE status = 'killed'").await,
        kills
    );
    // Monitoring reflects the newest update of each variant.
    let (views, last): (i64, i64) = {
        let r = db
            .query_one(
                "SELECT m.view_count, (SELECT (event_data->'data'->>'view_count')::bigint FROM dashboard_events e
                   WHERE e.persona_id = m.persona_id AND e.variant_id = m.variant_id AND e.event_type = 'performance_update'
                   ORDER BY stream_ms DESC, stream_seq DESC LIMIT 1)
                 FROM variant_monitoring m WHERE persona_id = 'alpha' AND variant_id = 'alpha_v3'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(views, last);

    // The query API reads it back, paginated in stream order.
    let mut cursor: Option<String> = None;
    let mut seen = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/events/alpha?limit=1000&cursor={c}"),
            None => "/api/events/alpha?limit=1000".to_owned(),
        };
        let (status, page) = http_json(gw.local_addr, "GET", &path, None).await;
        assert_eq!(status, 200, "{page}");
        seen += page["events"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let alpha = expected.iter().filter(|(p, _)| p == "alpha").count();
    assert_eq!(seen, alpha);
    let (status, page) = http_json(
        gw.local_addr,
        "GET",
        "/api/events/alpha?event_type=early_kill&limit=5",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(page["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["event_type"] == "early_kill"));
    let (status, k) = http_json(gw.local_addr, "GET", "/api/kills/alpha", None).await;
    assert_eq!(status, 200);
    assert!(!k["kills"].as_array().unwrap().is_empty());
    let (status, h) = http_json(
        gw.local_addr,
        "GET",
        "/api/variants/alpha/alpha_v3/history",
        None,
    )
    .await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["variant"]["id"], "alpha_v3");
    assert_eq!(h["events"][0]["event_type"], "variant_posted");
    assert_eq!(
        http_json(
            gw.local_addr,
            "GET",
            "/api/variants/alpha/ghost/history",
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        http_json(
            gw.local_addr,
            "GET",
            "/api/events/alpha?since=yesterday",
            None
        )
        .await
        .0,
        400
    );
    assert_eq!(
        http_json(gw.local_addr, "GET", "/api/events/alpha?limit=0", None)
            .await
            .0,
        400
    );

    let metrics = gw.app.metrics.encode();
    assert!(
        metrics.contains("pulsegate_audit_rows_written_total"),
        "{metrics}"
    );
    let (_, ready) = http_json(gw.local_addr, "GET", "/readyz", None).await;
    assert_eq!(ready["audit"]["postgres"], true, "{ready}");
    assert_eq!(
        ready["audit"]["rows_written"].as_u64(),
        Some(expected.len() as u64),
        "{ready}"
    );
    assert!(ready["audit"]["batches"].as_u64().unwrap() > 0, "{ready}");
    assert!(
        ready["audit"]["last_batch_size"].as_u64().unwrap() > 0,
        "{ready}"
    );
    assert_eq!(ready["audit"]["lost"], 0, "{ready}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_delays_the_audit_but_not_fan_out() {
    let redis = RedisServer::spawn().await;
    let pg = PgServer::spawn();
    let proxy = FaultProxy::start(pg.port).await;
    let gw = start_gateway(audit_config(&redis, &pg.url_via(proxy.port))).await;
    let publisher = redis.client().await;
    let mut ws = connect(gw.local_addr, "/dashboard/ws/p1").await;
    next_json(&mut ws, Duration::from_secs(5)).await;
    let db = pg.client().await;

    let _first = ingest_all(&publisher, "p1", events_for(300, "p1")).await;
    wait_count(
        &db,
        "SELECT count(*) FROM dashboard_events",
        all_stream_ids(&publisher, &["p1"]).await.len() as i64,
        Duration::from_secs(30),
    )
    .await;
    proxy.cut();
    let during = ingest_all(
        &publisher,
        "p1",
        (0..1000)
            .map(|i| posted(&format!("out{i}"), 0.05, &format!("q{i}")))
            .collect(),
    )
    .await;
    // Fan-out is untouched: every event arrives live while Postgres is gone.
    let mut live = 0;
    while live < during.len() {
        let v = next_json(&mut ws, Duration::from_secs(10)).await;
        if v["data"]["variant_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("out"))
        {
            live += 1;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, ready) = http_json(gw.local_addr, "GET", "/readyz", None).await;
    assert_eq!(ready["status"], "ready", "fan-out stays ready: {ready}");
    assert_eq!(ready["audit"]["postgres"], false, "{ready}");
    assert!(
        ready["audit"]["lag_entries"].as_u64().unwrap() > 0,
        "{ready}"
    );
    assert!(ready["audit"]["failures"].as_u64().unwrap() > 0, "{ready}");
    // The persona behind is named, in /readyz and in /metrics.
    assert_eq!(ready["audit"]["behind"][0]["persona"], "p1", "{ready}");
    assert!(
        gw.app
            .metrics
            .encode()
            .contains("pulsegate_audit_persona_lag_seconds{persona=\"p1\"}"),
        "per-persona lag"
    );
    proxy.restore();
    expect_exactly_audited(&db, &publisher, &["p1"]).await;
    gw.shutdown().await;
}

fn spawn_gateway_process(
    redis: &RedisServer,
    db: &str,
    name: &str,
) -> (Child, std::net::SocketAddr) {
    let port = free_port();
    let child = gateway_command(redis, db, port)
        .env("PULSEGATE_AUDIT_CONSUMER", name)
        .env("PULSEGATE_AUDIT_CLAIM_IDLE", "2s")
        .spawn()
        .expect("spawn pulsegate");
    (child, format!("127.0.0.1:{port}").parse().unwrap())
}

/// `pulsegate serve` on `port` with the test's audit timings (claims left to the caller).
fn gateway_command(redis: &RedisServer, db: &str, port: u16) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pulsegate"));
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--redis-url",
        &redis.url(),
        "--database-url",
        db,
    ])
    .env_remove("PULSEGATE_AUDIT_CONSUMER")
    .env("PULSEGATE_AUDIT_DISCOVER_INTERVAL", "300ms")
    .env("PULSEGATE_AUDIT_POLL_INTERVAL", "50ms")
    .env("PULSEGATE_AUDIT_BATCH_SIZE", "200")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_work_and_survive_a_sigkill() {
    let redis = RedisServer::spawn().await;
    let pg = PgServer::spawn();
    let (mut a, addr_a) = spawn_gateway_process(&redis, &pg.url(), "gw-a");
    let (mut b, addr_b) = spawn_gateway_process(&redis, &pg.url(), "gw-b");
    wait_http_ok(addr_a, "/readyz", Duration::from_secs(20)).await;
    wait_http_ok(addr_b, "/readyz", Duration::from_secs(20)).await;
    let publisher = redis.client().await;
    let personas = ["k1", "k2", "k3"];
    let mut tasks = Vec::new();
    for p in personas {
        let client = publisher.clone();
        tasks.push(tokio::spawn(async move {
            ingest_all(&client, p, events_for(2000, p)).await
        }));
    }
    // Kill one instance while the others are busy.
    tokio::time::sleep(Duration::from_millis(700)).await;
    a.kill().expect("SIGKILL");
    let _ = a.wait();
    for t in tasks {
        t.await.unwrap();
    }
    let db = pg.client().await;
    expect_exactly_audited(&db, &publisher, &personas).await;
    let _ = b.kill();
    let _ = b.wait();
}

/// Pending entries of `consumer` on `key` (0 when it has none or is unknown).
async fn pending_of(client: &fred::prelude::Client, key: &str, consumer: &str) -> u64 {
    use fred::prelude::*;
    let consumers: Vec<HashMap<String, fred::types::Value>> = client
        .xinfo_consumers(key, "audit")
        .await
        .unwrap_or_default();
    consumers
        .iter()
        .filter(|c| c.get("name").and_then(|v| v.as_string()).as_deref() == Some(consumer))
        .filter_map(|c| c.get("pending").and_then(|v| v.as_u64()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_instance_writes_its_own_pending_entries_at_once() {
    let redis = RedisServer::spawn().await;
    let pg = PgServer::spawn();
    let proxy = FaultProxy::start(pg.port).await;
    let db_url = pg.url_via(proxy.port);
    let port = free_port();
    // Claims are out of reach: only the restarted instance's re-read of its
    // own pending entries can write them.
    let spawn = || {
        KillOnDrop(
            gateway_command(&redis, &db_url, port)
                .env("PULSEGATE_AUDIT_CLAIM_IDLE", "1h")
                .spawn()
                .expect("spawn pulsegate"),
        )
    };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut gw = spawn();
    wait_http_ok(addr, "/readyz", Duration::from_secs(20)).await;
    let publisher = redis.client().await;
    let db = pg.client().await;
    let key = "pulse:{again}:stream";
    ingest_all(&publisher, "again", events_for(100, "again")).await;
    wait_count(
        &db,
        "SELECT count(*) FROM dashboard_events",
        stream_ids(&publisher, key).await.len() as i64,
        Duration::from_secs(30),
    )
    .await;

    // Postgres gone: the instance reads a batch it cannot commit, and dies.
    proxy.cut();
    ingest_all(&publisher, "again", events_for(500, "again")).await;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let name = format!("{}-{port}", host.trim());
    wait_until(
        "entries pending with the killed consumer",
        Duration::from_secs(20),
        || {
            let publisher = publisher.clone();
            let name = name.clone();
            async move { pending_of(&publisher, key, &name).await > 0 }
        },
    )
    .await;
    gw.0.kill().expect("SIGKILL");
    let _ = gw.0.wait();
    proxy.restore();

    // Same host and port: the same consumer name, so it takes its own entries back.
    let _gw = spawn();
    expect_exactly_audited(&db, &publisher, &["again"]).await;
    wait_until("nothing left pending", Duration::from_secs(10), || {
        let publisher = publisher.clone();
        let name = name.clone();
        async move { pending_of(&publisher, key, &name).await == 0 }
    })
    .await;
    let consumers: Vec<HashMap<String, fred::types::Value>> = {
        use fred::prelude::*;
        publisher.xinfo_consumers(key, "audit").await.unwrap()
    };
    assert_eq!(consumers.len(), 1, "one consumer name across the restart");
}

/// A gateway process that does not outlive a failed test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_is_refused_before_trimming_could_drop_unaudited_entries() {
    let redis = RedisServer::spawn().await;
    let pg = PgServer::spawn();
    let proxy = FaultProxy::start(pg.port).await;
    let mut config = audit_config(&redis, &pg.url_via(proxy.port));
    config.ingest.stream_maxlen = 1000;
    config.audit.backlog_margin = 200;
    let gw = start_gateway(config).await;
    let db = pg.client().await;
    let post = |i: usize| json!({"persona_id": "full", "variant_id": format!("v{i}"), "content": "c", "predicted_er": 0.05, "pattern_used": format!("p{i}")});
    let (status, _) = http_json(
        gw.local_addr,
        "POST",
        "/api/events/variant-posted",
        Some(&post(0).to_string()),
    )
    .await;
    assert_eq!(status, 202);
    wait_count(
        &db,
        "SELECT count(*) FROM dashboard_events",
        1,
        Duration::from_secs(30),
    )
    .await;
    proxy.cut();
    let mut accepted = 1;
    let mut refused = None;
    for i in 1..2000 {
        let (status, body) = http_json(
            gw.local_addr,
            "POST",
            "/api/events/variant-posted",
            Some(&post(i).to_string()),
        )
        .await;
        match status {
            202 => accepted += 1,
            503 => {
                refused = Some(body);
                break;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let body = refused.expect("ingest is refused before the stream bound");
    assert_eq!(body["error"]["code"], "audit_backlog_full", "{body}");
    assert!(
        accepted <= 1000 - 200 + 1,
        "refused at the margin: accepted {accepted}"
    );
    // A direct FCALL is refused the same way.
    let publisher = redis.client().await;
    let err = ingest(&publisher, "full", posted("direct", 0.05, "x"))
        .await
        .expect_err("refused");
    assert!(err.details().contains("BACKLOG"), "{err}");
    proxy.restore();
    wait_count(
        &db,
        "SELECT count(*) FROM dashboard_events",
        accepted,
        Duration::from_secs(60),
    )
    .await;
    let expected = all_stream_ids(&publisher, &["full"]).await;
    assert_eq!(
        audited_ids(&db).await,
        expected,
        "every accepted event audited, none trimmed away"
    );
    // Once drained, ingest works again.
    let (status, _) = http_json(
        gw.local_addr,
        "POST",
        "/api/events/variant-posted",
        Some(&post(5000).to_string()),
    )
    .await;
    assert_eq!(status, 202);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_twice_and_concurrently() {
    let pg = PgServer::spawn();
    let url = pg.url();
    let runs = join_all((0..4).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { pulsegate::audit::migrate(&url).await })
    }))
    .await;
    let applied: usize = runs
        .into_iter()
        .map(|r| r.unwrap().expect("migrate").len())
        .sum();
    assert_eq!(
        applied,
        pulsegate::audit::migrate::MIGRATIONS.len(),
        "each migration applied once"
    );
    assert!(
        pulsegate::audit::migrate(&url).await.unwrap().is_empty(),
        "a second run has nothing to do"
    );
    let db = pg.client().await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM pulsegate_migrations").await,
        pulsegate::audit::migrate::MIGRATIONS.len() as i64
    );
    // The CLI does the same and says so.
    let out = Command::new(env!("CARGO_BIN_EXE_pulsegate"))
        .args(["migrate", "--database-url", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pulsegate"))
        .args(["migrate"])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

/// A database audited by the first schema keeps its rows through the
/// later migrations, and duplicates are still refused afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_upgrade_a_populated_database() {
    let pg = PgServer::spawn();
    let db = pg.client().await;
    let (_, _, first) = pulsegate::audit::migrate::MIGRATIONS[0];
    db.batch_execute(first).await.unwrap();
    db.batch_execute(
        "CREATE TABLE pulsegate_migrations (version integer PRIMARY KEY, name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO pulsegate_migrations (version, name) VALUES (1, 'audit_schema');
         INSERT INTO dashboard_events (persona_id, event_id, stream_ms, stream_seq, event_type, event_data, created_at)
             VALUES ('p', '17-0', 17, 0, 'variant_posted', '{}', now()),
                    ('p', '17-1', 17, 1, 'variant_posted', '{}', now());",
    )
    .await
    .unwrap();
    let applied = pulsegate::audit::migrate(&pg.url()).await.expect("migrate");
    assert_eq!(
        applied.len(),
        pulsegate::audit::migrate::MIGRATIONS.len() - 1
    );
    assert_eq!(count(&db, "SELECT count(*) FROM dashboard_events").await, 2);
    let insert = "INSERT INTO dashboard_events (persona_id, event_id, stream_ms, stream_seq, event_type, event_data, created_at)
                  VALUES ('p', $1, $2, $3, 'variant_posted', '{}', now())";
    let dup = db.execute(insert, &[&"17-1", &17i64, &1i64]).await;
    assert!(dup.is_err(), "the stream id stays unique");
    let mismatched = db.execute(insert, &[&"18-5", &18i64, &6i64]).await;
    assert!(mismatched.is_err(), "event_id must equal its parts");
    db.execute(insert, &[&"18-5", &18i64, &5i64]).await.unwrap();
    // Every identifier column compares byte by byte, whatever the database's locale.
    let not_c = count(
        &db,
        "SELECT count(*) FROM information_schema.columns
         WHERE table_name IN ('dashboard_events', 'variants', 'variant_monitoring', 'variant_kills')
           AND column_name IN ('persona_id', 'id', 'variant_id', 'event_type', 'pattern_used', 'status')
           AND collation_name IS DISTINCT FROM 'C'",
    )
    .await;
    assert_eq!(not_c, 0, "identifier columns not in the C collation");
    let variant_indexes = count(
        &db,
        "SELECT count(*) FROM pg_indexes WHERE tablename = 'variants'",
    )
    .await;
    assert_eq!(variant_indexes, 1, "variants keeps only its primary key");
}

/// Batches read fresh from the group are written with a plain insert. When
/// one holds events already audited anyway (here: the group was destroyed,
/// so it is created again and delivers the whole stream afresh), the insert
/// fails on the key and the batch is written again idempotently: nothing is
/// duplicated and the audit does not stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_batch_of_audited_events_is_written_idempotently() {
    use fred::prelude::*;
    let redis = RedisServer::spawn().await;
    let pg = PgServer::spawn();
    let gw = start_gateway(audit_config(&redis, &pg.url())).await;
    let publisher = redis.client().await;
    let db = pg.client().await;
    let key = "pulse:{twice}:stream";
    ingest_all(&publisher, "twice", events_for(50, "twice")).await;
    wait_count(
        &db,
        "SELECT count(*) FROM dashboard_events",
        50,
        Duration::from_secs(30),
    )
    .await;
    let _: i64 = publisher.xgroup_destroy(key, "audit").await.unwrap();
    ingest_all(&publisher, "twice", events_for(10, "twice_more")).await;
    expect_exactly_audited(&db, &publisher, &["twice"]).await;
    wait_until(
        "the 50 redelivered events counted as duplicates",
        Duration::from_secs(10),
        || async {
            let (_, metrics) = http_get(gw.local_addr, "/metrics").await;
            metrics.contains("pulsegate_audit_duplicates_total 50")
        },
    )
    .await;
    gw.shutdown().await;
}

/// Entries trimmed from the stream while still pending (a publisher with
/// its own stream bound, an operator's XTRIM) can no longer be audited. Each
/// one is recorded as a `lost` row with its id, counted and logged: the
/// audit trail shows the gap instead of skipping it. Both ways they come
/// back are covered: this instance's own pending entries (re-read without
/// fields) and another consumer's (XAUTOCLAIM reports them as deleted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_trimmed_while_pending_are_recorded_as_lost() {
    use fred::prelude::*;
    let redis = RedisServer::spawn().await;
    let pg = PgServer::spawn();
    let publisher = redis.client().await;
    pulsegate::redis::functions::load(&publisher)
        .await
        .expect("FUNCTION LOAD");
    let key = "pulse:{gone}:stream";
    ingest_all(&publisher, "gone", events_for(30, "gone")).await;
    let ids = stream_ids(&publisher, key).await;
    assert_eq!(ids.len(), 30);
    let _: () = publisher
        .xgroup_create(key, "audit", "0", false)
        .await
        .unwrap();
    for consumer in ["crashed", "gw"] {
        let _: fred::types::Value = publisher
            .xreadgroup("audit", consumer, Some(5), None, false, key, ">")
            .await
            .unwrap();
    }
    let _: fred::types::Value = publisher
        .custom(fred::cmd!("XTRIM"), vec![key, "MINID", ids[10].as_str()])
        .await
        .unwrap();

    let mut config = audit_config(&redis, &pg.url());
    config.audit.consumer = Some("gw".into());
    let gw = start_gateway(config).await;
    let db = pg.client().await;
    wait_count(
        &db,
        "SELECT count(*) FROM dashboard_events",
        30,
        Duration::from_secs(30),
    )
    .await;
    let lost: HashSet<String> = db
        .query(
            "SELECT event_id FROM dashboard_events WHERE event_type = 'lost' \
             AND event_data->>'reason' = 'trimmed_before_audit'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(lost, ids[..10].iter().cloned().collect());
    assert_eq!(audited_ids(&db).await.len(), 30, "one row per stream id");
    let (_, metrics) = http_get(gw.local_addr, "/metrics").await;
    assert!(
        metrics.contains("pulsegate_audit_lost_total 10"),
        "{metrics}"
    );
    wait_until("nothing left pending", Duration::from_secs(10), || {
        let publisher = publisher.clone();
        async move {
            pending_of(&publisher, key, "gw").await + pending_of(&publisher, key, "crashed").await
                == 0
        }
    })
    .await;
    gw.shutdown().await;
}

/// A new persona's stream is created together with the audit group, so the
/// backlog bound holds from its first entry rather than from the audit's
/// discovery of the stream: a burst into a brand-new persona is refused
/// before trimming could drop any of it, even with no gateway running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_stream_is_guarded_from_its_first_entry() {
    use fred::prelude::*;
    use pulsegate::redis::functions::{configured_library, load_configured};
    let redis = RedisServer::spawn().await;
    let pg = PgServer::spawn();
    let mut config = audit_config(&redis, &pg.url());
    config.ingest.stream_maxlen = 1000;
    config.audit.backlog_margin = 200;
    let publisher = redis.client().await;
    // The library as this deployment's gateways load it; none runs yet, so
    // nothing discovers the stream.
    load_configured(&publisher, &configured_library(&config))
        .await
        .expect("FUNCTION LOAD");
    let key = "pulse:{newborn}:stream";
    let bad = ingest(&publisher, "newborn", json!({"type": "variant_posted"})).await;
    assert!(bad.is_err());
    let exists: i64 = publisher.exists(key).await.unwrap();
    assert_eq!(exists, 0, "a refused event creates no stream");

    let mut accepted = 0;
    let mut refused = None;
    for i in 0..1500 {
        let post = posted(&format!("v{i}"), 0.05, &format!("p{i}"));
        match ingest(&publisher, "newborn", post).await {
            Ok(_) => accepted += 1,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let err = refused.expect("refused before the stream bound");
    assert!(err.details().contains("BACKLOG"), "{err}");
    assert_eq!(
        accepted,
        1000 - 200,
        "refused at stream_maxlen - backlog_margin"
    );

    let gw = start_gateway(config).await;
    let db = pg.client().await;
    expect_exactly_audited(&db, &publisher, &["newborn"]).await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM dashboard_events").await,
        accepted
    );
    wait_until("ingest accepted again", Duration::from_secs(10), || {
        let publisher = publisher.clone();
        async move {
            ingest(&publisher, "newborn", posted("again", 0.05, "q"))
                .await
                .is_ok()
        }
    })
    .await;
    gw.shutdown().await;
}

/// Routing is per method: a persona may be named like an ingest route, and
/// its history is a GET of that path while the POST still ingests.
#[tokio::test]
async fn a_persona_named_like_an_ingest_route_has_a_history() {
    let redis = RedisServer::spawn().await;
    let pg = PgServer::spawn();
    let gw = start_gateway(audit_config(&redis, &pg.url())).await;
    let db = pg.client().await;
    let a = gw.local_addr;
    let event = json!({"persona_id": "early-kill", "variant_id": "v1", "content": "c", "predicted_er": 0.05, "pattern_used": "hook"});
    let (status, body) = http_json(
        a,
        "POST",
        "/api/events/variant-posted",
        Some(&event.to_string()),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    wait_count(
        &db,
        "SELECT count(*) FROM dashboard_events",
        1,
        Duration::from_secs(30),
    )
    .await;

    let (status, page) = http_json(a, "GET", "/api/events/early-kill", None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"][0]["variant_id"], "v1", "{page}");
    // An impossible date is refused naming the parameter (strict RFC 3339).
    let (status, e) = http_json(
        a,
        "GET",
        "/api/events/early-kill?since=2026-13-45T99:99:99Z",
        None,
    )
    .await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`since`"),
        "{e}"
    );
    // Another method gets 405 naming both.
    let (status, text) = http_request(a, "DELETE", "/api/events/early-kill", &[], None).await;
    assert_eq!(status, 405, "{text}");
    assert!(text.contains("GET, POST"), "{text}");
    gw.shutdown().await;
}
