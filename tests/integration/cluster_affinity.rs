//! Which gateway a client lands on behind `config/haproxy.cfg`: the clients
//! of one persona (`/dashboard/ws/{persona}`, `/sse/{persona}`) go to one
//! instance, by the path's hash, so an instance subscribes to (and Redis
//! publishes to it) only the personas of its own clients; `/ws` goes by
//! load. This is what keeps the cost per delivery flat as instances are
//! added (docs/deploy.md, "Which instance a client lands on";
//! docs/benchmarks.md).

use std::net::SocketAddr;
use std::time::Duration;

use crate::cluster::{Balancer, Gateway};
use crate::common::*;

const T: Duration = Duration::from_secs(20);

/// The gateway's `pulsegate_redis_channels_active` and
/// `pulsegate_connections_active`.
async fn channels_and_connections(addr: SocketAddr) -> (u64, u64) {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    (
        counter(&body, "pulsegate_redis_channels_active"),
        counter(&body, "pulsegate_connections_active"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_of_one_persona_share_a_gateway_and_ws_goes_by_load() {
    // Not a multiple of 3: by load, a persona's clients would not line up
    // on one gateway by chance.
    const PERSONAS: usize = 10;
    const PER_PERSONA: usize = 3;
    let _turn = heavy().await;
    let redis = RedisServer::spawn().await;
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let gateways: Vec<Gateway> = ports.iter().map(|p| Gateway::start(&redis, *p)).collect();
    for g in &gateways {
        wait_http_ok(g.addr(), "/readyz", T).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let public = free_port();
    let _lb = Balancer::start(public, &ports, dir.path());
    let lb = SocketAddr::from(([127, 0, 0, 1], public));
    wait_http_ok(lb, "/readyz", T).await;

    let mut clients = Vec::new();
    for round in 0..PER_PERSONA {
        for p in 0..PERSONAS {
            let mut ws = connect(lb, &format!("/dashboard/ws/aff{p}?round={round}")).await;
            assert_eq!(next_json(&mut ws, T).await["type"], "initial_data");
            clients.push(ws);
        }
    }
    let mut total = (0, 0);
    for g in &gateways {
        let (channels, connections) = channels_and_connections(g.addr()).await;
        total = (total.0 + channels, total.1 + connections);
    }
    assert_eq!(total.1, (PERSONAS * PER_PERSONA) as u64);
    // By load, the 3 clients of a persona sit on 3 gateways (30 channels);
    // by persona, on one (10), but for the few a gateway over 1.5 × the
    // average spills to the next.
    assert!(
        total.0 <= (PERSONAS + PERSONAS / 2) as u64,
        "{} channels over the gateways for {PERSONAS} personas",
        total.0
    );

    // /ws has no persona in its path: by load, so 6 of them spread out.
    let mut before = Vec::new();
    for g in &gateways {
        before.push(channels_and_connections(g.addr()).await.1);
    }
    let mut multiplexed = Vec::new();
    for _ in 0..6 {
        multiplexed.push(connect(lb, "/ws").await);
    }
    // Counted once each session runs, a moment after its upgrade.
    let added = || async {
        let mut added = Vec::new();
        for (g, before) in gateways.iter().zip(&before) {
            added.push(channels_and_connections(g.addr()).await.1 - before);
        }
        added
    };
    wait_until("the /ws sessions to run", T, || async {
        added().await.iter().sum::<u64>() == 6
    })
    .await;
    let added = added().await;
    assert_eq!(added.iter().sum::<u64>(), 6, "{added:?}");
    assert!(added.iter().all(|n| *n > 0), "/ws by load: {added:?}");
    drop(multiplexed);
    drop(clients);
    drop(gateways);
}
