//! The probe's own connection to each primary of a Cluster.
//!
//! fred 10.1 runs one routing task per client, and while a cluster client
//! reconnects to a node that died it answers nothing, not even a PING to a
//! node that is fine: probing through it would call every primary dead for
//! as long as one is. So the probe keeps a small standalone client per
//! primary, made from the command client's settings, and PINGs each over
//! its own. The primaries are those of fred's cached slot map, which the
//! cluster client refreshes as it follows a failover or a reshard.

use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::*;
use fred::types::config::ServerConfig;
use fred::types::ConnectHandle;

use super::nodes::NodeState;

/// A node's client and its connection task (fred's), joined when closed.
struct NodeClient {
    client: Client,
    task: ConnectHandle,
}

impl NodeClient {
    async fn close(self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.client.quit()).await;
        let mut task = self.task;
        if tokio::time::timeout(timeout, &mut task).await.is_err() {
            task.abort();
        }
    }
}

#[derive(Default)]
pub struct NodeClients {
    clients: HashMap<Server, NodeClient>,
}

impl NodeClients {
    /// PINGs every primary of `cluster`'s slot map, each bounded by
    /// `timeout`, over its own connection. Clients of nodes that are no
    /// longer primaries are closed.
    pub async fn ping(&mut self, cluster: &Client, timeout: Duration) -> Vec<NodeState> {
        let primaries = cluster
            .cached_cluster_state()
            .map(|s| s.unique_primary_nodes())
            .unwrap_or_default();
        let gone: Vec<Server> = self
            .clients
            .keys()
            .filter(|s| !primaries.contains(s))
            .cloned()
            .collect();
        for server in gone {
            if let Some(node) = self.clients.remove(&server) {
                node.close(timeout).await;
            }
        }
        for server in &primaries {
            if !self.clients.contains_key(server) {
                let client = node_client(cluster, server);
                // Reconnects on its own, as the gateway's clients do.
                let task = client.connect();
                self.clients
                    .insert(server.clone(), NodeClient { client, task });
            }
        }
        let pings = self.clients.iter().map(|(server, node)| async move {
            let up = matches!(
                tokio::time::timeout(timeout, node.client.ping::<Value>(None)).await,
                Ok(Ok(_))
            );
            NodeState {
                node: server.to_string(),
                conn: "command",
                up,
            }
        });
        futures_util::future::join_all(pings).await
    }

    /// Closes every connection (at shutdown).
    pub async fn quit(self, timeout: Duration) {
        for node in self.clients.into_values() {
            node.close(timeout).await;
        }
    }
}

/// A client of `server` alone, with the cluster client's credentials, TLS,
/// timeouts and reconnect policy.
fn node_client(cluster: &Client, server: &Server) -> Client {
    let mut config = cluster.client_config();
    config.server = ServerConfig::Centralized {
        server: server.clone(),
    };
    Client::new(
        config,
        Some(cluster.perf_config()),
        Some(cluster.connection_config().clone()),
        cluster.client_reconnect_policy(),
    )
}
