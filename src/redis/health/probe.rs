//! The probe: PINGs both connections every `redis.probe_interval`. A Redis
//! that dies closes the sockets and fred reports it at once; one that is
//! frozen (SIGSTOP, a black-holed network) keeps them open, and only an
//! unanswered PING shows it. In a Cluster it PINGs each primary on its own
//! (`node_probe.rs`).

use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use tokio_util::sync::CancellationToken;

use super::node_probe::NodeClients;
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
/// a Cluster each primary is PINGed over the probe's own connection to it
/// (`node_probe.rs`), and the command side answers if any primary does: a
/// dead primary's channels are the reconciler's to hold and tell
/// (`sharded.rs`), not a reason to call the whole Redis down.
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
    let mut node_clients = command.is_clustered().then(NodeClients::default);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let at = *links.borrow();
        let round = async {
            match node_clients.as_mut() {
                Some(nodes) => {
                    let nodes = nodes.ping(&command, timeout).await;
                    let any = nodes.iter().any(|n| n.up);
                    let subs = cluster_subscribers(&subscriber, &nodes);
                    (nodes, any, subs, true)
                }
                None => {
                    let (node, subscriber_ok) =
                        tokio::join!(ping_one(&command, timeout), ping(&subscriber, timeout));
                    let subs = subscriber_nodes(&subscriber, subscriber_ok);
                    (vec![node.clone()], node.up, subs, subscriber_ok)
                }
            }
        };
        let (mut seen, command_ok, subs, subscriber_ok) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = round => r,
        };
        seen.extend(subs);
        status.nodes.update(&metrics, seen);
        let signal = Signal::Probe {
            at,
            command_ok,
            subscriber_ok,
        };
        if health.report(signal).await.is_err() {
            break;
        }
    }
    if let Some(nodes) = node_clients {
        nodes.quit(timeout).await;
    }
}

async fn ping<C: ClientLike>(client: &C, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, client.ping::<Value>(None)).await,
        Ok(Ok(_))
    )
}

/// PINGs the one server of a standalone or Sentinel client.
async fn ping_one(client: &Client, timeout: Duration) -> NodeState {
    let up = ping(client, timeout).await;
    let node = client
        .active_connections()
        .first()
        .map(|s| s.to_string())
        .unwrap_or_else(|| "unknown".to_owned());
    NodeState {
        node,
        conn: "command",
        up,
    }
}

fn subscriber_nodes(subscriber: &SubscriberClient, up: bool) -> Vec<NodeState> {
    subscriber
        .active_connections()
        .into_iter()
        .map(|s| NodeState {
            node: s.to_string(),
            conn: "subscriber",
            up,
        })
        .collect()
}

/// The subscriber client's nodes in a Cluster, each up when the probe's
/// PING of that primary answered (a sharded subscription lives and dies
/// with its node).
fn cluster_subscribers(subscriber: &SubscriberClient, primaries: &[NodeState]) -> Vec<NodeState> {
    subscriber
        .active_connections()
        .into_iter()
        .map(|s| {
            let node = s.to_string();
            let up = primaries.iter().any(|p| p.node == node && p.up);
            NodeState {
                node,
                conn: "subscriber",
                up,
            }
        })
        .collect()
}
