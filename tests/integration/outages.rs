//! Short Redis outages (issue 11, finding 3): Redis killed (SIGKILL) and
//! restarted on the same port within a second, ten times, under 100 clients
//! and a steady ingest. Every outage must be seen and told: `/readyz` turns
//! 503 within 1 s, every client gets `down` then `up` with `resync`, ingest
//! never finds the functions missing while `/readyz` says ready, and no
//! event is lost without an `up`/`resync` notice after it or a fresh
//! `initial_data` (`recovered: false`) covering it: the gap repair finds
//! the restarted Redis's stream went back and sends one in place of the
//! events it cannot replay.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::clientlog::{offset, spawn_client, untold_losses, Offset, Seen};
use crate::common::*;

const PERSONAS: usize = 10;
/// Clients per persona and endpoint: 10 personas × 2 endpoints × 5 = 100.
const PER_ENDPOINT: usize = 5;
const CYCLES: u64 = 10;

/// A publisher that reconnects quickly and gives up on a command after 1 s.
async fn publisher(redis: &RedisServer) -> fred::prelude::Client {
    let mut b = Builder::from_config(fred::prelude::Config::from_url(&redis.url()).unwrap());
    b.set_policy(ReconnectPolicy::new_constant(0, 20));
    b.with_performance_config(|p| p.default_command_timeout = Duration::from_secs(1));
    let client = b.build().unwrap();
    client.init().await.expect("connect the publisher");
    client
}

/// Ingests `variant_posted` events round-robin until stopped; returns the
/// acknowledged offsets per persona.
async fn ingest_loop(
    client: fred::prelude::Client,
    stop: CancellationToken,
) -> Vec<BTreeSet<Offset>> {
    let mut acked = vec![BTreeSet::new(); PERSONAS];
    let mut n = 0u64;
    while !stop.is_cancelled() {
        let p = (n % PERSONAS as u64) as usize;
        let event = json!({"type": "variant_posted", "variant_id": format!("v{n}"),
                           "content": "x", "predicted_er": 0.05});
        if let Ok(id) = ingest(&client, &format!("p{p}"), event).await {
            acked[p].insert(offset(&json!(id)).expect("an offset"));
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    acked
}

/// `/readyz` every 50 ms. On each 200, an FCALL at once (an invalid event:
/// it changes nothing, and is refused as INVALID when the function exists),
/// in its own task so that a call caught by a kill does not delay the next
/// poll. `generation` counts kills and restarts: an answer is checked only
/// when one Redis process served the whole round.
struct Polls {
    samples: Vec<(Instant, u16)>,
    checks: usize,
    not_found: Vec<String>,
}

async fn poll_readyz(
    gw: std::net::SocketAddr,
    client: fred::prelude::Client,
    generation: Arc<AtomicU64>,
    stop: CancellationToken,
) -> Polls {
    let mut samples = Vec::new();
    let mut calls = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while !stop.is_cancelled() {
        tick.tick().await;
        let g0 = generation.load(Ordering::SeqCst);
        let (status, _) = http_get(gw, "/readyz").await;
        samples.push((Instant::now(), status));
        if status == 200 {
            let (client, generation) = (client.clone(), generation.clone());
            calls.spawn(async move {
                let r = ingest(&client, "p0", json!({})).await;
                (generation.load(Ordering::SeqCst) == g0).then(|| r.err().map(|e| e.to_string()))
            });
        }
    }
    let mut polls = Polls {
        samples,
        checks: 0,
        not_found: Vec::new(),
    };
    // `None`: a kill or restart came between the poll and the answer.
    for checked in calls.join_all().await.into_iter().flatten() {
        polls.checks += 1;
        polls
            .not_found
            .extend(checked.filter(|e| e.contains("Function not found")));
    }
    polls
}

/// The gateway's own up/down state, sampled every millisecond (for the
/// detection figures in docs/redis.md).
async fn watch_status(
    app: Arc<pulsegate::app::App>,
    stop: CancellationToken,
) -> Vec<(Instant, bool)> {
    let mut changes = Vec::new();
    let mut last = app.redis_status.is_up();
    while !stop.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let up = app.redis_status.is_up();
        if up != last {
            changes.push((Instant::now(), up));
            last = up;
        }
    }
    changes
}

fn median_max(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() - 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_short_redis_outage_is_seen_and_told() {
    let _turn = heavy().await;
    let mut redis = RedisServer::spawn().await;
    let port = redis.port;
    let gw = start_gateway(test_config(&redis)).await;
    let stop_clients = CancellationToken::new();
    let mut clients = Vec::new();
    for p in 0..PERSONAS {
        for _ in 0..PER_ENDPOINT {
            let mut ws = connect(gw.local_addr, &format!("/dashboard/ws/p{p}")).await;
            assert_eq!(
                next_json(&mut ws, Duration::from_secs(5)).await["type"],
                "initial_data"
            );
            clients.push(spawn_client(p, ws, stop_clients.clone()));
            let mut ws = connect(gw.local_addr, "/ws").await;
            send_json(
                &mut ws,
                json!({"type": "subscribe", "channel": format!("persona:p{p}")}),
            )
            .await;
            assert_eq!(
                next_json(&mut ws, Duration::from_secs(5)).await["type"],
                "subscribed"
            );
            clients.push(spawn_client(p, ws, stop_clients.clone()));
        }
    }

    let stop = CancellationToken::new();
    let generation = Arc::new(AtomicU64::new(0));
    let ingesting = tokio::spawn(ingest_loop(publisher(&redis).await, stop.clone()));
    let polling = tokio::spawn(poll_readyz(
        gw.local_addr,
        publisher(&redis).await,
        generation.clone(),
        stop.clone(),
    ));
    let watching = tokio::spawn(watch_status(gw.app.clone(), stop.clone()));

    let mut kills = Vec::new();
    for cycle in 0..CYCLES {
        tokio::time::sleep(Duration::from_millis(150)).await;
        generation.fetch_add(1, Ordering::SeqCst);
        kills.push(Instant::now());
        redis.kill();
        // Down for 100 to 820 ms, plus redis-server's start.
        tokio::time::sleep(Duration::from_millis(100 + 80 * cycle)).await;
        generation.fetch_add(1, Ordering::SeqCst);
        redis = RedisServer::spawn_on(port).await;
        // Each outage told in full before the next, so each is counted alone.
        wait_until("every client told up", Duration::from_secs(15), || async {
            clients
                .iter()
                .all(|c| c.ups.load(Ordering::SeqCst) > cycle as usize)
        })
        .await;
    }
    stop.cancel();
    let acked_loop = ingesting.await.unwrap();
    let polls = polling.await.unwrap();
    let status_changes = watching.await.unwrap();

    // A last event per persona, to bracket every earlier one.
    let publisher = publisher(&redis).await;
    let mut acked = acked_loop;
    for (p, acked) in acked.iter_mut().enumerate() {
        let id = ingest(&publisher, &format!("p{p}"), posted("final", 0.05, "end"))
            .await
            .expect("ingest after the last restart");
        acked.insert(offset(&json!(id)).unwrap());
    }
    wait_until(
        "every client has the last event",
        Duration::from_secs(10),
        || async {
            clients.iter().all(|c| {
                let Some(&last) = acked[c.persona].last() else {
                    return true;
                };
                // As an event, or inside a fresh snapshot: an event the
                // gap repair finds gone from a restarted Redis comes in the
                // `initial_data` (`recovered: false`) that replaces it.
                c.log.lock().unwrap().iter().any(|(_, s)| match s {
                    Seen::Event(o) => *o == last,
                    Seen::Snapshot(o) => *o >= last,
                    _ => false,
                })
            })
        },
    )
    .await;
    stop_clients.cancel();

    // Every client: exactly down, up+resync per outage, down after each kill.
    let mut told_down = Vec::new();
    let mut told_up = Vec::new();
    for (n, c) in clients.iter().enumerate() {
        let log = c.log.lock().unwrap().clone();
        let notices: Vec<(Instant, Seen)> = log
            .iter()
            .copied()
            .filter(|(_, s)| matches!(s, Seen::Down | Seen::Up { .. }))
            .collect();
        assert_eq!(
            notices.len(),
            2 * CYCLES as usize,
            "client {n}: {notices:?}"
        );
        for (k, pair) in notices.chunks(2).enumerate() {
            assert_eq!(pair[0].1, Seen::Down, "client {n}, outage {k}");
            assert_eq!(
                pair[1].1,
                Seen::Up { resync: true },
                "client {n}, outage {k}"
            );
            assert!(pair[0].0 >= kills[k], "client {n}: down before kill {k}");
            told_down.push(pair[0].0 - kills[k]);
            told_up.push(pair[1].0 - kills[k]);
        }
        let offsets: Vec<Offset> = log
            .iter()
            .filter_map(|(_, s)| {
                if let Seen::Event(o) = s {
                    Some(*o)
                } else {
                    None
                }
            })
            .collect();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "client {n}: events out of order"
        );
        let untold = untold_losses(&log, &acked[c.persona]);
        assert!(
            untold.is_empty(),
            "client {n} lost {untold:?} and was never told"
        );
    }

    // /readyz: 503 within 1 s of each kill.
    let mut ready_503 = Vec::new();
    for (k, &kill) in kills.iter().enumerate() {
        let first = polls
            .samples
            .iter()
            .find(|(at, s)| *at >= kill && *s == 503);
        let after = first
            .map(|(at, _)| *at - kill)
            .expect("a 503 after the kill");
        assert!(
            after <= Duration::from_secs(1),
            "kill {k}: /readyz 503 only after {after:?}"
        );
        ready_503.push(after);
    }
    assert!(
        polls.checks >= CYCLES as usize,
        "only {} FCALL checks",
        polls.checks
    );
    assert!(
        polls.not_found.is_empty(),
        "ready while functions missing: {:?}",
        polls.not_found
    );

    let state_down: Vec<Duration> = kills
        .iter()
        .filter_map(|&kill| {
            status_changes
                .iter()
                .find(|(at, up)| *at >= kill && !up)
                .map(|(at, _)| *at - kill)
        })
        .collect();
    assert_eq!(state_down.len(), CYCLES as usize);
    let report = |what: &str, v: Vec<Duration>| {
        let (median, max) = median_max(v);
        println!("{what}: median {median:?}, max {max:?}");
    };
    println!(
        "{CYCLES} kills, {} clients, {} FCALL checks while ready",
        clients.len(),
        polls.checks
    );
    report("kill -> gateway state down (1 ms sampling)", state_down);
    report(
        "kill -> /readyz 503 (50 ms polling, response time)",
        ready_503,
    );
    report("kill -> client receives down", told_down);
    report("kill -> client receives up+resync", told_up);
    gw.shutdown().await;
}
