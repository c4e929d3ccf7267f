//! Which Cluster node holds each subscribed channel's sharded subscription,
//! and which channels lost theirs with their node.
//!
//! A slot that moves (a reshard, a failover) takes its sharded subscriptions
//! with it: Redis unsubscribes them on the old owner with a `SUNSUBSCRIBE`
//! push that fred drops without telling anyone, so the reconciler compares
//! owners with the cluster's slot map every [`CHECK_EVERY`] and subscribes a
//! moved channel again where it went (then repairs the gap, `gap.rs`).
//!
//! A node whose connection drops takes only its own channels' subscriptions:
//! fred keeps reading the other nodes' connections while it reconnects, so
//! only the channels recorded on that node are held and subscribed again
//! later ([`NodeEvents`]); the other primaries' channels keep flowing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::util::redis_keyslot;
use tokio::sync::broadcast::{self, error::TryRecvError};

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

    /// Forgets and returns the channels subscribed on `server`.
    pub fn take_on(&mut self, server: &Server) -> Vec<Arc<str>> {
        let on: Vec<Arc<str>> = self
            .0
            .iter()
            .filter(|(_, s)| *s == server)
            .map(|(c, _)| c.clone())
            .collect();
        for c in &on {
            self.0.remove(c);
        }
        on
    }

    /// Forgets and returns every channel.
    pub fn take_all(&mut self) -> Vec<Arc<str>> {
        self.0.drain().map(|(c, _)| c).collect()
    }

    /// Refreshes fred's slot map and returns the subscribed channels whose
    /// slot now lives on another node. While fred reconnects to a node that
    /// died it answers nothing, so the refresh gives up after
    /// [`CHECK_EVERY`] and the next check tries again.
    pub async fn moved(
        &mut self,
        client: &SubscriberClient,
        subscribed: &HashSet<Arc<str>>,
    ) -> Vec<Arc<str>> {
        match tokio::time::timeout(CHECK_EVERY, client.sync_cluster()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot refresh the cluster's slot map");
                return Vec::new();
            }
            Err(_) => return Vec::new(),
        }
        subscribed
            .iter()
            .filter(|c| owner(client, c).as_ref() != self.0.get(*c))
            .cloned()
            .collect()
    }
}

/// fred's per-node connection events of the subscriber client: a dropped
/// connection (an error naming its node) and a new one (a reconnect naming
/// its node), read by the reconciler to tell which channels lost their
/// subscription.
pub struct NodeEvents {
    errors: broadcast::Receiver<(Error, Option<Server>)>,
    reconnects: broadcast::Receiver<Server>,
}

/// What one node event means for the subscriptions.
pub enum NodeEvent {
    /// The subscriptions on this node are gone (its connection dropped, or
    /// fred opened a new one to it).
    Lost(Server),
    /// Events were missed: any subscription may be gone.
    LostAll,
    /// Nothing to do (an error naming no node: a failed reconnect attempt).
    None,
}

impl NodeEvents {
    pub fn of(client: &SubscriberClient) -> Self {
        Self {
            errors: client.error_rx(),
            reconnects: client.reconnect_rx(),
        }
    }

    /// The next event; pending forever once fred closed its streams.
    pub async fn next(&mut self) -> NodeEvent {
        let event = tokio::select! {
            r = self.errors.recv() => error_event(r),
            r = self.reconnects.recv() => reconnect_event(r),
        };
        match event {
            Some(e) => e,
            None => std::future::pending().await,
        }
    }

    /// Events already queued, without waiting. `reconnects: false` drops
    /// the queued reconnects: they announced connections that every
    /// subscription just made went through.
    pub fn drain(&mut self, reconnects: bool) -> Vec<NodeEvent> {
        let mut out = Vec::new();
        loop {
            match self.errors.try_recv() {
                Ok(e) => out.extend(error_event(Ok(e))),
                Err(TryRecvError::Lagged(_)) => out.push(NodeEvent::LostAll),
                Err(_) => break,
            }
        }
        loop {
            match self.reconnects.try_recv() {
                Ok(s) if reconnects => out.push(NodeEvent::Lost(s)),
                Ok(_) => {}
                Err(TryRecvError::Lagged(_)) if reconnects => out.push(NodeEvent::LostAll),
                Err(TryRecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
        out
    }
}

fn error_event(
    r: Result<(Error, Option<Server>), broadcast::error::RecvError>,
) -> Option<NodeEvent> {
    match r {
        Ok((_, Some(server))) => Some(NodeEvent::Lost(server)),
        Ok((_, None)) => Some(NodeEvent::None),
        Err(broadcast::error::RecvError::Lagged(_)) => Some(NodeEvent::LostAll),
        Err(broadcast::error::RecvError::Closed) => None,
    }
}

fn reconnect_event(r: Result<Server, broadcast::error::RecvError>) -> Option<NodeEvent> {
    match r {
        Ok(server) => Some(NodeEvent::Lost(server)),
        Err(broadcast::error::RecvError::Lagged(_)) => Some(NodeEvent::LostAll),
        Err(broadcast::error::RecvError::Closed) => None,
    }
}
