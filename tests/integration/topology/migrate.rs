//! A slot migrated by hand (IMPORTING/MIGRATING, MIGRATE, SETSLOT) while
//! clients watch a persona on it: no loss, no duplicate.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::cluster::shard_subscribers;
use super::cluster_personas::{personas_covering, slot};
use super::servers::{cli, RedisCluster};
use super::*;

/// Pause between ingests.
const INGEST_EVERY: Duration = Duration::from_millis(10);

/// The node id of node `i` (`CLUSTER MYID`).
fn node_id(cluster: &RedisCluster, i: usize) -> String {
    cli(cluster.nodes[i].port, &["CLUSTER", "MYID"])
        .trim()
        .to_owned()
}

/// Moves one slot from node `from` to node `to` by hand, as
/// `redis-cli --cluster reshard` does for each slot: IMPORTING/MIGRATING,
/// MIGRATE of its keys, then SETSLOT NODE on every primary.
fn migrate_slot(cluster: &RedisCluster, slot: u16, from: usize, to: usize) {
    let (src, dst) = (node_id(cluster, from), node_id(cluster, to));
    let s = slot.to_string();
    let (fp, tp) = (cluster.nodes[from].port, cluster.nodes[to].port);
    assert!(cli(tp, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &src]).contains("OK"));
    assert!(cli(fp, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &dst]).contains("OK"));
    loop {
        let keys = cli(fp, &["CLUSTER", "GETKEYSINSLOT", &s, "100"]);
        let keys: Vec<&str> = keys
            .lines()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect();
        if keys.is_empty() {
            break;
        }
        let port = tp.to_string();
        let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
        args.extend(keys);
        let out = cli(fp, &args);
        assert!(
            out.contains("OK") || out.contains("NOKEY"),
            "MIGRATE: {out}"
        );
    }
    for (i, _) in cluster.primaries() {
        cli(
            cluster.nodes[i].port,
            &["CLUSTER", "SETSLOT", &s, "NODE", &dst],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migrated_under_watching_clients_loses_and_repeats_nothing() {
    let _heavy = heavy().await;
    let cluster = RedisCluster::spawn(3, 0).await;
    let gw = start_gateway(config_for(cluster.url())).await;
    let publisher = cluster.client().await;
    let by_owner = personas_covering(&cluster, 1);
    let (&from, moving) = by_owner.iter().next().unwrap();
    let to = by_owner.keys().copied().find(|&o| o != from).unwrap();
    let moved = moving[0].clone();
    let stays = by_owner[&to][0].clone();
    let personas = vec![moved.clone(), stays.clone()];
    let mut clients = Vec::new();
    for p in &personas {
        for _ in 0..3 {
            clients.push((
                p.clone(),
                watch(gw.local_addr, p.clone(), Duration::from_secs(40)).await,
            ));
        }
    }
    wait_until(
        "subscribed on the owner",
        Duration::from_secs(10),
        || async { shard_subscribers(&cluster, from, &moved) == 1 },
    )
    .await;
    let running = Arc::new(AtomicBool::new(true));
    let producer = {
        let (publisher, personas, running) = (publisher.clone(), personas.clone(), running.clone());
        tokio::spawn(async move {
            let (mut ok, mut refused) = (0u64, 0u64);
            let mut i = 0usize;
            while running.load(Ordering::Relaxed) {
                let p = &personas[i % personas.len()];
                // ASK/TRYAGAIN while the slot's keys are half moved.
                match ingest(&publisher, p, posted(&format!("v{i}"), 0.05, "hook")).await {
                    Ok(_) => ok += 1,
                    Err(_) => refused += 1,
                }
                i += 1;
                tokio::time::sleep(INGEST_EVERY).await;
            }
            (ok, refused)
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    migrate_slot(&cluster, slot(&moved), from, to);
    assert_eq!(cluster.owner(slot(&moved)), Some(to));
    tokio::time::sleep(Duration::from_secs(3)).await;
    running.store(false, Ordering::Relaxed);
    let (ok, refused) = producer.await.unwrap();
    wait_until(
        "subscription followed the slot",
        Duration::from_secs(10),
        || async {
            shard_subscribers(&cluster, to, &moved) == 1
                && shard_subscribers(&cluster, from, &moved) == 0
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // As a raw publisher would: redis-cli following the redirect.
    for p in &personas {
        let ch = format!("pulse:{{{p}}}:events");
        let out = cli(
            cluster.nodes[from].port,
            &["-c", "SPUBLISH", &ch, r#"{"type":"test_end"}"#],
        );
        assert_eq!(out.trim(), "1", "SPUBLISH {ch}");
    }
    // Read with redis-cli: the publisher's fred client times out on the
    // moved slot after this hand-made migration (the gateway's does not:
    // its repairs read there).
    let mut updates = 0;
    for (p, h) in clients {
        let seen = h.await.expect("client");
        let key = format!("pulse:{{{p}}}:stream");
        let stream: Vec<Off> = cli(cluster.nodes[to].port, &["-c", "XRANGE", &key, "-", "+"])
            .lines()
            .filter_map(|l| offset(&serde_json::Value::String(l.trim().to_owned())))
            .collect();
        check(&p, &seen, &stream);
        assert_eq!(
            seen.initials.len(),
            1,
            "{p}: nothing lost, no fresh snapshot"
        );
        updates += seen.updates.len();
    }
    println!("slot migration: ingest {ok} ok, {refused} refused while moving; {updates} updates received");
    gw.shutdown().await;
}
