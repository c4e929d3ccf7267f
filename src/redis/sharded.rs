//! The reconciler's Cluster half: channels whose node's connection dropped
//! are held, their clients told `down`, and subscribed again (then told
//! `up`) once fred can reach their slot's owner, while every other
//! channel's subscription stays as it is and its clients hear nothing. (A standalone
//! or Sentinel connection carries every subscription, so there a drop
//! holds them all and a reconnect resubscribes them all: `subscriber.rs`.)

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use fred::clients::SubscriberClient;
use fred::prelude::*;

use crate::hub::Hub;
use crate::protocol::{frame, ServerMessage};
use crate::redis::gap::Requests;
use crate::redis::slots::{NodeEvent, NodeEvents, Owners};

pub struct Sharded {
    events: NodeEvents,
    /// Wanted channels whose subscription went with its node's connection.
    lost: HashSet<Arc<str>>,
    /// The subscriber epoch to report as resubscribed once `lost` is empty.
    owed: Option<u64>,
}

impl Sharded {
    /// Takes fred's event streams: call it before the client connects.
    pub fn new(client: &SubscriberClient) -> Self {
        Self {
            events: NodeEvents::of(client),
            lost: HashSet::new(),
            owed: None,
        }
    }

    pub async fn next_event(&mut self) -> NodeEvent {
        self.events.next().await
    }

    /// Holds the channels a node event took the subscriptions of: live
    /// publications wait for their repair (`gap.rs`) once they are
    /// subscribed again.
    pub fn apply(
        &mut self,
        event: NodeEvent,
        hub: &Hub,
        owners: &mut Owners,
        subscribed: &mut HashSet<Arc<str>>,
    ) {
        let channels = match event {
            NodeEvent::Lost(server) => owners.take_on(&server),
            NodeEvent::LostAll => owners.take_all(),
            NodeEvent::None => return,
        };
        if channels.is_empty() {
            return;
        }
        for channel in &channels {
            hub.set_ready(channel, false);
            hub.begin_repair(channel);
            subscribed.remove(channel);
            self.lost.insert(channel.clone());
        }
        let told = hub.notify(&channels, &notice(false));
        tracing::info!(
            channels = channels.len(),
            clients = told,
            "a Cluster node's connection dropped; holding and telling its channels only"
        );
    }

    /// Applies the events already queued. `reconnects: false` right after
    /// every channel was subscribed: the connections those reconnects
    /// announced are the ones the subscriptions went through.
    pub fn drain(
        &mut self,
        reconnects: bool,
        hub: &Hub,
        owners: &mut Owners,
        subscribed: &mut HashSet<Arc<str>>,
    ) {
        for event in self.events.drain(reconnects) {
            self.apply(event, hub, owners, subscribed);
        }
    }

    /// SSUBSCRIBEs the lost channels that are still wanted, where their
    /// slot lives now, and asks for their repairs; stops at the first
    /// failure (fred is still reconnecting) for the next check to retry.
    /// Called on each new connection fred reports, and from the slot check
    /// while fred is connected (its commands wait while it reconnects).
    pub async fn resubscribe_lost(
        &mut self,
        client: &SubscriberClient,
        hub: &Hub,
        owners: &mut Owners,
        subscribed: &mut HashSet<Arc<str>>,
        repairs: &Requests,
    ) {
        if self.lost.is_empty() {
            return;
        }
        let lost: Vec<Arc<str>> = self.lost.iter().cloned().collect();
        let mut back = Vec::new();
        for channel in lost {
            if !hub.is_wanted(&channel) {
                self.lost.remove(&channel);
                continue;
            }
            if let Err(e) = client.ssubscribe(&*channel).await {
                tracing::debug!(%channel, error = %e, "resubscribing after a node loss failed; will retry");
                break;
            }
            self.lost.remove(&channel);
            subscribed.insert(channel.clone());
            hub.set_ready(&channel, true);
            owners.record(client, &channel);
            let _ = repairs.send(channel.clone());
            back.push(channel);
        }
        if !back.is_empty() {
            // As for the whole Redis: `up` once subscribed again, with the
            // missed entries on their way from the stream (`gap.rs`).
            hub.notify(&back, &notice(true));
        }
    }

    /// Whether the slot check should retry the lost channels now.
    pub fn retry_due(&self, client: &SubscriberClient) -> bool {
        !self.lost.is_empty() && client.state() == ClientState::Connected
    }

    /// `channel` reached its wanted state some other way.
    pub fn settled(&mut self, channel: &str) {
        self.lost.remove(channel);
    }

    pub fn owe(&mut self, epoch: u64) {
        self.owed = Some(epoch);
    }

    /// The epoch to report as resubscribed, once nothing is lost.
    pub fn due_report(&mut self) -> Option<u64> {
        if self.lost.is_empty() {
            self.owed.take()
        } else {
            None
        }
    }
}

/// `{"type":"status","redis":"down"}`, or `up` with `resync`, as the
/// health monitor words them for the whole Redis (`docs/protocol.md`).
fn notice(up: bool) -> Bytes {
    let message = ServerMessage::Status {
        redis: Some(if up { "up" } else { "down" }),
        resync: up.then_some(true),
    };
    frame::text(&message.to_json())
}

/// The next node event, or never without a Cluster.
pub async fn next_event(sharded: &mut Option<Sharded>) -> NodeEvent {
    match sharded {
        Some(s) => s.next_event().await,
        None => std::future::pending().await,
    }
}
