//! The audit trail on a Redis Cluster: streams on every primary are found
//! and copied to Postgres exactly once, across a primary killed mid-run.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::cluster_personas::personas_covering;
use super::servers::cli;
use super::servers::RedisCluster;
use super::*;
use crate::pg::*;
use fred::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_surviving_entry_is_audited_once_across_a_failover() {
    let _heavy = heavy().await;
    let mut cluster = RedisCluster::spawn(3, 1).await;
    let pg = PgServer::spawn();
    let mut config = config_for(cluster.url());
    config.database.url = Some(pg.url());
    config.audit.discover_interval = Duration::from_millis(300);
    config.audit.poll_interval = Duration::from_millis(50);
    config.audit.claim_idle = Duration::from_secs(2);
    config.validate().expect("valid");
    let gw = start_gateway(config).await;
    let publisher = cluster.client().await;
    let by_owner = personas_covering(&cluster, 2);
    let personas: Vec<String> = by_owner.values().flatten().cloned().collect();
    let ingest_all = |tag: &'static str| {
        let (publisher, personas) = (publisher.clone(), personas.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            for i in 0..30 {
                for p in &personas {
                    let event = posted(&format!("{tag}{i}"), 0.05, "hook");
                    while ingest(&publisher, p, event.clone()).await.is_err() {
                        assert!(Instant::now() < deadline, "ingest did not come back");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    };
    ingest_all("a").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (&victim, victims) = by_owner.iter().next().unwrap();
    cluster.nodes[victim].kill9();
    let moved_slot = super::cluster_personas::slot(&victims[0]);
    wait_until("a replica promoted", Duration::from_secs(20), || async {
        cluster.owner(moved_slot).is_some_and(|o| o != victim)
    })
    .await;
    ingest_all("b").await;

    let db = pg.client().await;
    let mut expected: HashSet<(String, String)> = HashSet::new();
    for p in &personas {
        for id in stream_ids(&publisher, &format!("pulse:{{{p}}}:stream")).await {
            expected.insert((p.clone(), id));
        }
    }
    wait_count(
        &db,
        "SELECT count(*) FROM dashboard_events",
        expected.len() as i64,
        Duration::from_secs(30),
    )
    .await;
    let audited: HashSet<(String, String)> = db
        .query("SELECT persona_id, event_id FROM dashboard_events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(audited, expected, "exactly the surviving stream entries");
    println!(
        "cluster audit: {} entries on {} personas audited once across the failover",
        expected.len(),
        personas.len()
    );
    gw.shutdown().await;
}

/// `master_repl_offset` from `INFO replication` of the node on `port`.
fn repl_offset(port: u16) -> i64 {
    cli(port, &["INFO", "replication"])
        .lines()
        .find_map(|l| l.trim().strip_prefix("master_repl_offset:"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_a_failover_lost_are_recorded_as_lost() {
    let _heavy = heavy().await;
    let mut cluster = RedisCluster::spawn(3, 1).await;
    let pg = PgServer::spawn();
    let mut config = config_for(cluster.url());
    config.database.url = Some(pg.url());
    config.audit.discover_interval = Duration::from_millis(300);
    config.audit.poll_interval = Duration::from_millis(50);
    config.validate().expect("valid");
    let gw = start_gateway(config).await;
    let publisher = cluster.client().await;
    let by_owner = personas_covering(&cluster, 1);
    let (&victim, group) = by_owner.iter().next().unwrap();
    let p = group[0].clone();
    let standby = cluster.replicas_of(victim)[0];
    let (client, progress) = watch_live(gw.local_addr, p.clone(), Duration::from_secs(60)).await;
    let db = pg.client().await;
    let count = format!("SELECT count(*) FROM dashboard_events WHERE persona_id = '{p}'");
    let received = |upto: Off| {
        let progress = progress.clone();
        move || {
            let newest = *progress.lock().unwrap_or_else(|e| e.into_inner());
            std::future::ready(newest.is_some_and(|o| o >= upto))
        }
    };
    let ingest_n = |tag: &'static str, n: usize| {
        let (publisher, p) = (publisher.clone(), p.clone());
        async move {
            for i in 0..n {
                ingest(&publisher, &p, posted(&format!("{tag}{i}"), 0.05, "hook"))
                    .await
                    .expect("ingest");
            }
            // The library may derive entries of its own (pattern_fatigue).
            let all = stream_offsets(&publisher, &p).await;
            (*all.last().expect("entries"), all.len() as i64)
        }
    };

    // Entries on the primary and its replica, delivered and audited.
    let (kept, n_kept) = ingest_n("a", 10).await;
    let (pp, rp) = (cluster.nodes[victim].port, cluster.nodes[standby].port);
    wait_until("the replica in sync", Duration::from_secs(10), || async {
        repl_offset(rp) >= repl_offset(pp)
    })
    .await;
    wait_until("delivered", Duration::from_secs(10), received(kept)).await;
    wait_count(&db, &count, n_kept, Duration::from_secs(20)).await;

    // The replica frozen and cut off: more entries reach the primary only.
    // They are delivered and audited, then the primary dies.
    cluster.nodes[standby].signal("STOP");
    let out = cli(pp, &["CLIENT", "KILL", "TYPE", "replica"]);
    assert!(out.trim() == "1", "CLIENT KILL: {out}");
    let (gone, n_all) = ingest_n("b", 5).await;
    wait_until("delivered", Duration::from_secs(10), received(gone)).await;
    wait_count(&db, &count, n_all, Duration::from_secs(20)).await;
    cluster.nodes[victim].kill9();
    cluster.nodes[standby].signal("CONT");
    let s = super::cluster_personas::slot(&p);
    wait_until(
        "the stale replica promoted",
        Duration::from_secs(30),
        || async {
            if cluster.owner(s) == Some(standby) {
                return true;
            }
            cli(rp, &["CLUSTER", "FAILOVER", "FORCE"]);
            tokio::time::sleep(Duration::from_millis(500)).await;
            false
        },
    )
    .await;

    // The gateway finds its last forwarded entry gone and records the range.
    wait_count(
        &db,
        "SELECT count(*) FROM audit_lost_ranges",
        1,
        Duration::from_secs(30),
    )
    .await;
    let row = db
        .query_one(
            "SELECT persona_id, after_ms, after_seq, through_ms, through_seq FROM audit_lost_ranges",
            &[],
        )
        .await
        .unwrap();
    let after: Off = (row.get::<_, i64>(1) as u64, row.get::<_, i64>(2) as u64);
    let through: Off = (row.get::<_, i64>(3) as u64, row.get::<_, i64>(4) as u64);
    assert_eq!(row.get::<_, String>(0), p);
    assert_eq!(
        (after, through),
        (kept, gone),
        "the range the failover lost"
    );
    // Every audited row is either in the final stream or named lost.
    let lost: i64 = db
        .query_one(
            "SELECT count(*) FROM dashboard_events_lost WHERE persona_id = $1",
            &[&p],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        lost,
        n_all - n_kept,
        "the entries only the dead primary had"
    );
    let surviving: HashSet<String> = stream_ids(&publisher, &format!("pulse:{{{p}}}:stream"))
        .await
        .into_iter()
        .collect();
    assert_eq!(surviving.len() as i64, n_kept);
    let kept_rows: HashSet<String> = db
        .query(
            "SELECT event_id FROM dashboard_events e WHERE persona_id = $1
             AND NOT EXISTS (SELECT 1 FROM dashboard_events_lost l
                             WHERE l.persona_id = e.persona_id AND l.event_id = e.event_id)",
            &[&p],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kept_rows, surviving, "one row per surviving entry");
    let (_, metrics) = http_get(gw.local_addr, "/metrics").await;
    assert!(
        metrics.contains("pulsegate_audit_lost_ranges_total 1"),
        "counted"
    );
    // The client was told: a fresh snapshot, not recovered.
    let _: i64 = publisher
        .spublish(format!("pulse:{{{p}}}:events"), r#"{"type":"test_end"}"#)
        .await
        .expect("SPUBLISH");
    let seen = client.await.expect("client");
    assert!(
        seen.initials.iter().any(|(_, r)| *r == Some(false)),
        "{:?}",
        seen.initials
    );
    gw.shutdown().await;
}
