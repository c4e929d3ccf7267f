//! Which Cluster node owns each subscribed channel's slot. A slot that
//! moves (a reshard, a failover) takes its sharded subscriptions with it:
//! Redis unsubscribes them on the old owner with a `SUNSUBSCRIBE` push that
//! fred drops without telling anyone, so the reconciler compares owners
//! with the cluster's slot map every [`CHECK_EVERY`] and subscribes a
//! moved channel again where it went (then repairs the gap, `gap.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::util::redis_keyslot;

/// How often the slot map is refreshed (`CLUSTER SLOTS`, one small reply).
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Owners(HashMap<Arc<str>, Server>);

fn owner(client: &SubscriberClient, channel: &str) -> Option<Server> {
    let state = client.cached_cluster_state()?;
    state.get_server(redis_keyslot(channel.as_bytes())).cloned()
}

impl Owners {
    /// Notes where `channel` was just subscribed.
    pub fn record(&mut self, client: &SubscriberClient, channel: &Arc<str>) {
        if let Some(server) = owner(client, channel) {
            self.0.insert(channel.clone(), server);
        }
    }

    /// Notes where every channel was just subscribed (a new connection).
    pub fn record_all(&mut self, client: &SubscriberClient, channels: &HashSet<Arc<str>>) {
        self.0.clear();
        for channel in channels {
            self.record(client, channel);
        }
    }

    pub fn forget(&mut self, channel: &str) {
        self.0.remove(channel);
    }

    /// Refreshes fred's slot map and returns the subscribed channels whose
    /// slot now lives on another node.
    pub async fn moved(
        &mut self,
        client: &SubscriberClient,
        subscribed: &HashSet<Arc<str>>,
    ) -> Vec<Arc<str>> {
        if let Err(e) = client.sync_cluster().await {
            tracing::debug!(error = %e, "cannot refresh the cluster's slot map");
            return Vec::new();
        }
        subscribed
            .iter()
            .filter(|c| owner(client, c).as_ref() != self.0.get(*c))
            .cloned()
            .collect()
    }
}
