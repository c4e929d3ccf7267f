//! Channels the gateway publishes itself (`system:runtime`), beside the
//! Redis ones: the same copy-on-write subscriber lists, [`Subscription`]
//! handles and outbox pushes as a persona's channel, but no Redis
//! subscription behind them (nothing is sent to the reconciler, and
//! `Hub::wanted` never lists them). Each keeps a count of its subscribers
//! that a publisher can wait on, so it works only while someone watches.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::outbox::{Delivery, Outbox, Pushed};
use super::{Hub, Subscription};

#[derive(Default)]
pub(super) struct Locals {
    channels: Mutex<HashMap<Arc<str>, Local>>,
}

struct Local {
    /// Copy-on-write, as `Channel::subscribers`: a publish iterates without the lock.
    subscribers: Arc<Vec<(u64, Arc<Outbox>)>>,
    /// How many subscribers there are; kept while the hub lives, so a
    /// publisher's receiver stays valid when the count falls to 0.
    count: watch::Sender<usize>,
}

impl Local {
    fn new() -> Self {
        Self {
            subscribers: Arc::new(Vec::new()),
            count: watch::Sender::new(0),
        }
    }
}

impl Locals {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Local>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes subscriber `id` of `name`; false when `name` is not local.
    pub(super) fn remove(&self, name: &str, id: u64) -> bool {
        let mut channels = self.lock();
        let Some(c) = channels.get_mut(name) else {
            return false;
        };
        let subs: Vec<_> = c
            .subscribers
            .iter()
            .filter(|(i, _)| *i != id)
            .cloned()
            .collect();
        c.count.send_replace(subs.len());
        c.subscribers = Arc::new(subs);
        true
    }
}

impl Hub {
    /// Subscribes `outbox` to the local channel `name` (its `/ws` name, e.g.
    /// `system:runtime`); dropping the [`Subscription`] ends it. Local
    /// channels are always ready: there is no Redis subscription to wait for.
    pub fn subscribe_local(self: &Arc<Self>, name: &str, outbox: Arc<Outbox>) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut channels = self.local.lock();
        let name: Arc<str> = match channels.get_key_value(name) {
            Some((k, _)) => k.clone(),
            None => name.into(),
        };
        let c = channels.entry(name.clone()).or_insert_with(Local::new);
        let mut subs = Vec::with_capacity(c.subscribers.len() + 1);
        subs.extend(c.subscribers.iter().cloned());
        subs.push((id, outbox));
        c.count.send_replace(subs.len());
        c.subscribers = Arc::new(subs);
        drop(channels);
        self.metrics.subscriptions_active.inc();
        Subscription {
            hub: self.clone(),
            channel: name,
            id,
            ready: watch::channel(true).1,
        }
    }

    /// Follows how many subscribers the local channel `name` has.
    pub fn local_subscribers(&self, name: &str) -> watch::Receiver<usize> {
        let mut channels = self.local.lock();
        match channels.get(name) {
            Some(c) => c.count.subscribe(),
            None => channels
                .entry(name.into())
                .or_insert_with(Local::new)
                .count
                .subscribe(),
        }
    }

    /// Queues `delivery` (encoded once) for every subscriber of the local
    /// channel `name`, as `dispatch` does for a publication; returns how
    /// many took it.
    pub fn publish_local(&self, name: &str, delivery: &Delivery) -> usize {
        let Some(subscribers) = self.local.lock().get(name).map(|c| c.subscribers.clone()) else {
            return 0;
        };
        let mut queued = 0;
        for (_, outbox) in subscribers.iter() {
            match outbox.push(delivery) {
                Pushed::Queued => queued += 1,
                Pushed::Conflated => {
                    self.metrics.messages_conflated.inc();
                    queued += 1;
                }
                // Overflows are counted by the outbox itself.
                _ => {}
            }
        }
        queued
    }
}
