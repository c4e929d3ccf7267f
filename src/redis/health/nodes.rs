//! The Redis nodes the gateway's connections reach (one for standalone and
//! Sentinel, every primary in a Cluster) and whether each answered the last
//! probe: shown on `/readyz` and as `pulsegate_redis_node_up`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::metrics::{Metrics, NodeLabel};

/// One node as `/readyz` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeState {
    /// `host:port`.
    pub node: String,
    /// `command` or `subscriber`.
    pub conn: &'static str,
    /// Answered the last probe (the subscriber connection's nodes: connected).
    pub up: bool,
}

#[derive(Default)]
pub struct RedisNodes {
    nodes: Mutex<Vec<NodeState>>,
}

impl RedisNodes {
    pub fn snapshot(&self) -> Vec<NodeState> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The probe's latest view; nodes no longer reached go to 0 in the
    /// metric (a failed-over primary stays listed as down until restart).
    pub fn update(&self, metrics: &Metrics, now: Vec<NodeState>) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: BTreeMap<(String, &'static str), bool> = nodes
            .iter()
            .map(|n| ((n.node.clone(), n.conn), false))
            .collect();
        for n in &now {
            all.insert((n.node.clone(), n.conn), n.up);
        }
        for ((node, conn), up) in &all {
            let label = NodeLabel {
                node: node.clone(),
                conn,
            };
            metrics
                .continuity
                .node_up
                .get_or_create(&label)
                .set(i64::from(*up));
        }
        *nodes = all
            .into_iter()
            .map(|((node, conn), up)| NodeState { node, conn, up })
            .collect();
    }
}
