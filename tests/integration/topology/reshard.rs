//! Slots moved by `redis-cli --cluster reshard` itself, to a node of the
//! Cluster and to one added later with `redis-cli --cluster add-node`,
//! while clients watch a persona of the moving slot: nothing lost, nothing
//! repeated, no fresh `initial_data`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::util::redis_keyslot;

use super::cluster_personas::slot;
use super::servers::{cli, cli_run, RedisCluster};
use super::*;

/// Pause between ingests (about 60 events/s over both personas).
const INGEST_EVERY: Duration = Duration::from_millis(15);

/// A persona id whose slot is the lowest slot of node `i`: the one
/// `redis-cli --cluster reshard --cluster-slots 1` moves from it.
fn persona_on_lowest_slot(cluster: &RedisCluster, i: usize) -> String {
    let lowest = cluster
        .primaries()
        .into_iter()
        .find(|(n, _)| *n == i)
        .and_then(|(_, ranges)| ranges.iter().map(|(a, _)| *a).min())
        .expect("node i owns slots");
    (0..)
        .map(|n| format!("r{n}"))
        .find(|p| redis_keyslot(format!("pulse:{{{p}}}:events").as_bytes()) == lowest)
        .expect("an id")
}

fn node_id(cluster: &RedisCluster, i: usize) -> String {
    cli(cluster.nodes[i].port, &["CLUSTER", "MYID"])
        .trim()
        .to_owned()
}

/// `redis-cli --cluster reshard` of one slot (the lowest of `from`) to
/// `to`, retried while the nodes still disagree about the configuration.
async fn reshard_one(cluster: &RedisCluster, from: usize, to: usize) {
    cluster.wait_agreed().await;
    let (ok, out) = cli_run(&[
        "--cluster".into(),
        "reshard".into(),
        cluster.nodes[0].addr(),
        "--cluster-from".into(),
        node_id(cluster, from),
        "--cluster-to".into(),
        node_id(cluster, to),
        "--cluster-slots".into(),
        "1".into(),
        "--cluster-yes".into(),
    ]);
    assert!(ok, "reshard: {out}");
}

/// Watches a persona of one primary's lowest slot, and one of another
/// primary, under load while `redis-cli --cluster reshard` moves that slot
/// to the third primary, or to a node added first (`add_node`); then
/// checks every client.
async fn watched_while_resharding(cluster: &mut RedisCluster, add_node: bool) {
    let gw = start_gateway(config_for(cluster.url())).await;
    let publisher = cluster.client().await;
    let primaries: Vec<usize> = cluster.primaries().iter().map(|(i, _)| *i).collect();
    let from = primaries[0];
    let moved = persona_on_lowest_slot(cluster, from);
    let stays = persona_on_lowest_slot(cluster, primaries[1]);
    let personas = vec![moved.clone(), stays.clone()];
    let mut clients = Vec::new();
    for p in &personas {
        for _ in 0..3 {
            let h = watch(gw.local_addr, p.clone(), Duration::from_secs(60)).await;
            clients.push((p.clone(), h));
        }
    }
    let ch = format!("pulse:{{{moved}}}:events");
    wait_until(
        "subscribed on the owner",
        Duration::from_secs(10),
        || async { cli(cluster.nodes[from].port, &["PUBSUB", "SHARDNUMSUB", &ch]).contains("\n1") },
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
                // ASK/TRYAGAIN while the slot's keys are half moved; the
                // library missing on a node just added.
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
    let to = if add_node {
        cluster.add_node().await
    } else {
        primaries[2]
    };
    if add_node {
        // The gateway loads its library on the new primary (pulse_version).
        wait_until(
            "library on the new node",
            Duration::from_secs(15),
            || async {
                cli(cluster.nodes[to].port, &["FCALL_RO", "pulse_version", "0"]).trim() == "1"
            },
        )
        .await;
    }
    reshard_one(cluster, from, to).await;
    assert_eq!(cluster.owner(slot(&moved)), Some(to));
    tokio::time::sleep(Duration::from_secs(2)).await;
    running.store(false, Ordering::Relaxed);
    let (ok, refused) = producer.await.unwrap();
    wait_until(
        "subscription followed the slot",
        Duration::from_secs(10),
        || async {
            cli(cluster.nodes[to].port, &["PUBSUB", "SHARDNUMSUB", &ch]).contains("\n1")
                && cli(cluster.nodes[from].port, &["PUBSUB", "SHARDNUMSUB", &ch]).contains("\n0")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for p in &personas {
        let ch = format!("pulse:{{{p}}}:events");
        let out = cli(
            cluster.nodes[from].port,
            &["-c", "SPUBLISH", &ch, r#"{"type":"test_end"}"#],
        );
        assert_eq!(out.trim(), "1", "SPUBLISH {ch}");
    }
    let mut updates = 0;
    for (p, h) in clients {
        let seen = h.await.expect("client");
        let key = format!("pulse:{{{p}}}:stream");
        let stream: Vec<Off> = cli(cluster.nodes[from].port, &["-c", "XRANGE", &key, "-", "+"])
            .lines()
            .filter_map(|l| offset(&serde_json::Value::String(l.trim().to_owned())))
            .collect();
        check(&p, &seen, &stream);
        assert_eq!(seen.initials.len(), 1, "{p}: no fresh snapshot");
        updates += seen.updates.len();
    }
    println!(
        "redis-cli reshard{}: ingest {ok} ok, {refused} refused while moving; {updates} updates received",
        if add_node { " to an added node" } else { "" }
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_reshard_of_a_watched_slot_loses_and_repeats_nothing() {
    let _heavy = heavy().await;
    let mut cluster = RedisCluster::spawn(3, 0).await;
    watched_while_resharding(&mut cluster, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_later_takes_a_watched_slot_losing_and_repeating_nothing() {
    let _heavy = heavy().await;
    let mut cluster = RedisCluster::spawn(3, 0).await;
    watched_while_resharding(&mut cluster, true).await;
}
