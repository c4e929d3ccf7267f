//! A Redis Cluster of 3 primaries and 3 replicas: the library on every
//! primary, `pulse_ingest` publishing with SPUBLISH, the gateway's
//! SSUBSCRIBEs on the owning nodes only, and a primary killed mid-stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;

use super::cluster_personas::slot;
use super::servers::{cli, RedisCluster};
use super::*;

/// Personas per primary, and clients per persona: the issue's 30 personas
/// and 300 clients.
const PERSONAS_PER_PRIMARY: usize = 10;
const CLIENTS_PER_PERSONA: usize = 10;
/// Each of the 3 producers ingests once per tick: 500 events/s in all, as
/// the issue asks, when the machine keeps up (the test prints the rate).
const PRODUCER_TICK: Duration = Duration::from_millis(6);

fn personas_covering(cluster: &RedisCluster) -> HashMap<usize, Vec<String>> {
    super::cluster_personas::personas_covering(cluster, PERSONAS_PER_PRIMARY)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_mid_stream_loses_no_event_and_no_client() {
    let _heavy = heavy().await;
    let mut cluster = RedisCluster::spawn(3, 1).await;
    let gw = start_gateway(config_for(cluster.url())).await;
    let publisher = cluster.client().await;
    let by_owner = personas_covering(&cluster);
    let personas: Vec<String> = by_owner.values().flatten().cloned().collect();

    // The library is on every primary.
    for (i, _) in cluster.primaries() {
        assert_eq!(
            cli(cluster.nodes[i].port, &["FCALL_RO", "pulse_version", "0"]).trim(),
            "1"
        );
    }

    let mut clients: HashMap<String, Vec<tokio::task::JoinHandle<Seen>>> = HashMap::new();
    let mut progress: HashMap<String, Vec<Progress>> = HashMap::new();
    for p in &personas {
        for _ in 0..CLIENTS_PER_PERSONA {
            let (h, seen) = watch_live(gw.local_addr, p.clone(), Duration::from_secs(60)).await;
            clients.entry(p.clone()).or_default().push(h);
            progress.entry(p.clone()).or_default().push(seen);
        }
    }
    // Subscribed on the owning node only (sharded pub/sub).
    wait_until(
        "every channel subscribed on its owner",
        Duration::from_secs(10),
        || async {
            let mut all = true;
            for p in &personas {
                let owner = cluster.owner(slot(p)).unwrap();
                all &= shard_subscribers(&cluster, owner, p) == 1;
            }
            all
        },
    )
    .await;

    // One producer per primary: the killed primary's personas through a
    // cluster client (refused or retried during the failover), the others
    // each through a client of their own node, which the failover does not
    // stop, so their events keep coming while it runs.
    let (&victim, victims) = by_owner.iter().next().unwrap();
    let running = Arc::new(AtomicBool::new(true));
    let mut producers = Vec::new();
    for (&owner, group) in &by_owner {
        let client = if owner == victim {
            publisher.clone()
        } else {
            cluster.node_client(owner).await
        };
        let (group, running) = (group.clone(), running.clone());
        producers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            let mut i = 0usize;
            let mut tick = tokio::time::interval(PRODUCER_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while running.load(Ordering::Relaxed) {
                tick.tick().await;
                let p = &group[i % group.len()];
                match ingest(&client, p, posted(&format!("v{i}"), 0.05, "hook")).await {
                    Ok(_) => ok += 1,
                    Err(_) => failed += 1,
                }
                i += 1;
            }
            (ok, failed)
        }));
    }
    let ingest_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // kill -9 the primary of the first group. Its replica may not take over
    // until the other primaries' personas are checked: so "before the
    // promotion" is an order the test sets, not a race it times.
    let standby = cluster.replicas_of(victim);
    assert!(!standby.is_empty(), "the victim has a replica");
    for &r in &standby {
        let out = cli(
            cluster.nodes[r].port,
            &["CONFIG", "SET", "cluster-replica-no-failover", "yes"],
        );
        assert!(out.contains("OK"), "{out}");
    }
    // /readyz, polled from the kill until the promotion is done: one dead
    // primary of three keeps every gateway in its balancer.
    let polling = Arc::new(AtomicBool::new(true));
    let poller = {
        let (polling, addr) = (polling.clone(), gw.local_addr);
        tokio::spawn(async move {
            let mut codes = Vec::new();
            while polling.load(Ordering::Relaxed) {
                codes.push(http_json(addr, "GET", "/readyz", None).await.0);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            codes
        })
    };
    let killed_at = Instant::now();
    cluster.nodes[victim].kill9();
    let probe_slot = slot(&victims[0]);
    // Events acknowledged by the surviving primaries after the kill...
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut marks: Vec<(String, Off)> = Vec::new();
    for p in personas.iter().filter(|p| !victims.contains(p)) {
        let owner = cluster.owner(slot(p)).unwrap();
        let direct = cluster.node_client(owner).await;
        let newest = *stream_offsets(&direct, p).await.last().expect("entries");
        marks.push((p.clone(), newest));
    }
    // ...reach every client of those personas while the killed primary's
    // slots have no live owner.
    wait_until(
        "the other primaries' personas delivered during the outage",
        Duration::from_secs(15),
        || async {
            marks.iter().all(|(p, mark)| {
                progress[p].iter().all(|seen| {
                    let newest = *seen.lock().unwrap_or_else(|e| e.into_inner());
                    newest.is_some_and(|o| o >= *mark)
                })
            })
        },
    )
    .await;
    // /readyz names the dead primary as down, and is still ready.
    let dead = cluster.nodes[victim].addr();
    wait_until(
        "/readyz shows the dead primary down",
        Duration::from_secs(15),
        || async {
            let (code, ready) = http_json(gw.local_addr, "GET", "/readyz", None).await;
            code == 200
                && ready["redis_nodes"].as_array().is_some_and(|nodes| {
                    nodes
                        .iter()
                        .any(|n| n["node"] == dead.as_str() && n["up"] == false)
                })
        },
    )
    .await;
    let owner = cluster.owner(probe_slot);
    assert!(
        owner.is_none() || owner == Some(victim),
        "no replica was promoted yet: {owner:?}"
    );
    let outage_checked = killed_at.elapsed();
    // Now let the replica take over.
    for &r in &standby {
        cli(
            cluster.nodes[r].port,
            &["CONFIG", "SET", "cluster-replica-no-failover", "no"],
        );
        cli(cluster.nodes[r].port, &["CLUSTER", "FAILOVER", "FORCE"]);
    }
    let failover_at = Instant::now();
    wait_until("a replica promoted", Duration::from_secs(20), || async {
        cluster.owner(probe_slot).is_some_and(|o| o != victim)
    })
    .await;
    cluster.wait_ok(3).await;
    let promoted_in = failover_at.elapsed();
    let new_owner = cluster.owner(slot(&victims[0])).unwrap();
    assert_ne!(new_owner, victim);
    // The promoted replica got the library (checked with pulse_version).
    wait_until(
        "library on the promoted replica",
        Duration::from_secs(10),
        || async {
            cli(
                cluster.nodes[new_owner].port,
                &["FCALL_RO", "pulse_version", "0"],
            )
            .trim()
                == "1"
        },
    )
    .await;
    wait_http_ok(gw.local_addr, "/readyz", Duration::from_secs(15)).await;
    polling.store(false, Ordering::Relaxed);
    let codes = poller.await.unwrap();
    assert!(
        codes.iter().all(|&c| c == 200),
        "/readyz during the failover: {codes:?}"
    );
    // /readyz names the nodes: every primary answering (the promoted one
    // once the gateway has learnt of it), the dead one down.
    let command_up = |ready: &serde_json::Value| {
        ready["redis_nodes"].as_array().map_or(0, |nodes| {
            nodes
                .iter()
                .filter(|n| n["conn"] == "command" && n["up"] == true)
                .count()
        })
    };
    wait_until(
        "/readyz lists the promoted primary",
        Duration::from_secs(15),
        || async { command_up(&http_json(gw.local_addr, "GET", "/readyz", None).await.1) >= 3 },
    )
    .await;
    let (_, ready) = http_json(gw.local_addr, "GET", "/readyz", None).await;
    assert_eq!(ready["redis_topology"], "cluster", "{ready}");
    let nodes = ready["redis_nodes"].as_array().cloned().unwrap_or_default();
    assert!(
        nodes
            .iter()
            .all(|n| n["node"] != dead.as_str() || n["up"] == false),
        "{ready}"
    );
    // Ingest goes on for a while after the failover.
    tokio::time::sleep(Duration::from_secs(3)).await;
    running.store(false, Ordering::Relaxed);
    let ingest_secs = ingest_started.elapsed().as_secs_f64();
    let (mut ok, mut failed) = (0, 0);
    for producer in producers {
        let (o, f) = producer.await.unwrap();
        (ok, failed) = (ok + o, failed + f);
    }

    // Subscriptions follow the slots: on the new owner, nowhere else.
    wait_until(
        "channels resubscribed where their slot went",
        Duration::from_secs(10),
        || async {
            let mut right = true;
            for p in &personas {
                let owner = cluster.owner(slot(p)).unwrap();
                for (i, _) in cluster.primaries() {
                    let n = shard_subscribers(&cluster, i, p);
                    right &= n == i64::from(i == owner);
                }
            }
            right
        },
    )
    .await;

    // A raw SPUBLISH of arbitrary JSON reaches the clients; it ends them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for p in &personas {
        let _: i64 = publisher
            .spublish(
                format!("pulse:{{{p}}}:events"),
                r#"{"type":"test_end","note":"raw"}"#,
            )
            .await
            .expect("SPUBLISH");
    }
    let mut results: HashMap<String, Vec<Seen>> = HashMap::new();
    for (p, hs) in clients {
        for h in hs {
            results
                .entry(p.clone())
                .or_default()
                .push(h.await.expect("client"));
        }
    }
    let mut lost = 0;
    for p in &personas {
        let stream = stream_offsets(&publisher, p).await;
        for seen in &results[p] {
            // Delivered before the kill, gone from the promoted replica.
            lost += seen.updates.iter().filter(|o| !stream.contains(o)).count();
            check(p, seen, &stream);
            if !victims.contains(p) {
                // Personas on the surviving primaries lose nothing at all,
                // and their clients are told of no outage.
                assert_eq!(seen.initials.len(), 1, "{p}: {:?}", seen.initials);
                assert!(seen.statuses.is_empty(), "{p}: {:?}", seen.statuses);
            } else {
                // The dead primary's clients: down, then up with resync.
                let first = seen.statuses.first();
                let last = seen.statuses.last();
                assert!(
                    first.is_some_and(|s| s["redis"] == "down"),
                    "{p}: {:?}",
                    seen.statuses
                );
                assert!(
                    last.is_some_and(|s| s["redis"] == "up" && s["resync"] == true),
                    "{p}: {:?}",
                    seen.statuses
                );
            }
        }
    }
    let (_, metrics) = http_get(gw.local_addr, "/metrics").await;
    assert!(
        metrics.contains("pulsegate_redis_node_up{"),
        "per-node gauge"
    );
    let repairs = metrics
        .lines()
        .find(|l| l.starts_with("pulsegate_redis_gap_repairs_total"))
        .unwrap_or("")
        .to_owned();
    let pause = longest_pause(victims.iter().flat_map(|p| results[p].iter()));
    let others = longest_pause(
        personas
            .iter()
            .filter(|p| !victims.contains(p))
            .flat_map(|p| results[p].iter()),
    );
    println!(
        "cluster failover: longest delivery pause {pause:?} on the killed primary's personas, \
         {others:?} on the others;"
    );
    println!(
        "cluster failover: the other primaries' personas delivered everything up to {:?} after \
         the kill with no replica promoted; promoted {promoted_in:?} after CLUSTER FAILOVER FORCE; ingest {ok} ok ({:.0}/s over {ingest_secs:.1} s), {failed} refused; {}; \
         {lost} deliveries of entries the failover lost; {repairs}",
        outage_checked,
        ok as f64 / ingest_secs,
        summary(&results)
    );
    gw.shutdown().await;
}

/// `PUBSUB SHARDNUMSUB` of the persona's channel on node `i`.
pub fn shard_subscribers(cluster: &RedisCluster, i: usize, persona: &str) -> i64 {
    let ch = format!("pulse:{{{persona}}}:events");
    let out = cli(cluster.nodes[i].port, &["PUBSUB", "SHARDNUMSUB", &ch]);
    out.lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(-1)
}
