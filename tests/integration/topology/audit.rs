//! The audit trail on a Redis Cluster: streams on every primary are found
//! and copied to Postgres exactly once, across a primary killed mid-run.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::cluster_personas::personas_covering;
use super::servers::RedisCluster;
use super::*;
use crate::pg::*;

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
