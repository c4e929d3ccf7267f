//! The probe: PINGs both connections every `redis.probe_interval`. A Redis
//! that dies closes the sockets and fred reports it at once; one that is
//! frozen (SIGSTOP, a black-holed network) keeps them open, and only an
//! unanswered PING shows it.

use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use tokio_util::sync::CancellationToken;

use super::nodes::NodeState;
use super::{Health, RedisStatus, Signal};
use crate::metrics::Metrics;

/// What the probe reads and writes besides the two clients.
pub struct Probe {
    pub health: Health,
    pub status: Arc<RedisStatus>,
    pub metrics: Arc<Metrics>,
    pub interval: Duration,
    pub timeout: Duration,
}

/// PINGs both connections every `interval`, each bounded by `timeout`, and
/// reports the results to the monitor with the links they were sent on. In
/// a Cluster the command connection's PING goes to every primary, and it
/// answers only if all of them do.
pub async fn run(
    command: Client,
    subscriber: SubscriberClient,
    probe: Probe,
    cancel: CancellationToken,
) {
    let Probe {
        health,
        status,
        metrics,
        interval,
        timeout,
    } = probe;
    let links = health.links();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let at = *links.borrow();
        let pings =
            async { tokio::join!(ping_nodes(&command, timeout), ping(&subscriber, timeout)) };
        let (nodes, subscriber_ok) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = pings => r,
        };
        let command_ok = !nodes.is_empty() && nodes.iter().all(|n| n.up);
        let mut seen = nodes;
        seen.extend(
            subscriber
                .active_connections()
                .into_iter()
                .map(|s| NodeState {
                    node: s.to_string(),
                    conn: "subscriber",
                    up: subscriber_ok,
                }),
        );
        status.nodes.update(&metrics, seen);
        let signal = Signal::Probe {
            at,
            command_ok,
            subscriber_ok,
        };
        if health.report(signal).await.is_err() {
            return;
        }
    }
}

async fn ping<C: ClientLike>(client: &C, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, client.ping::<Value>(None)).await,
        Ok(Ok(_))
    )
}

/// PINGs each node the command client is connected to (every primary of a
/// Cluster; the one server otherwise).
async fn ping_nodes(client: &Client, timeout: Duration) -> Vec<NodeState> {
    let servers = client.active_connections();
    if !client.is_clustered() {
        let up = ping(client, timeout).await;
        let node = servers
            .first()
            .map(|s| s.to_string())
            .unwrap_or_else(|| "unknown".to_owned());
        return vec![NodeState {
            node,
            conn: "command",
            up,
        }];
    }
    let pings = servers.iter().map(|s| async move {
        let node = client.with_cluster_node(s.clone());
        let up = matches!(
            tokio::time::timeout(timeout, node.ping::<Value>(None)).await,
            Ok(Ok(_))
        );
        NodeState {
            node: s.to_string(),
            conn: "command",
            up,
        }
    });
    futures_util::future::join_all(pings).await
}
