//! The subscription hub: Redis channel → local subscribers.
//!
//! One Redis subscription per channel per process, however many clients
//! watch it; the first subscriber asks the Redis subscriber task to
//! SUBSCRIBE, the last one leaving asks it to UNSUBSCRIBE. Each publication
//! is inspected and encoded once, then handed to every subscriber's bounded
//! outbox without waiting on any of them.

mod local;
pub mod message;
pub mod outbox;
pub mod registry;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, watch};

use crate::keys::{ws_channel_name, Keys, PersonaId};
use crate::metrics::{Metrics, ReadPath, ReasonLabel, Repair};
use crate::stream::Offset;
use crate::undecodable;
use outbox::{Outbox, Pushed};

/// How a subscriber wants publications framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `/dashboard/ws/{persona}`: the payload verbatim.
    Verbatim,
    /// `/ws`: wrapped in a `message` envelope naming the channel.
    Wrapped,
}

/// Something other than a WebSocket that wants to know when a channel
/// publishes (the REST answer cache refreshes on it).
pub trait Observer: Send + Sync {
    /// Called on the dispatching task for every publication carrying an
    /// offset: must not block.
    fn published(&self, offset: Offset);
}

#[derive(Clone)]
enum Sink {
    Client { outbox: Arc<Outbox>, mode: Mode },
    Observer(Arc<dyn Observer>),
}

#[derive(Clone)]
struct Subscriber {
    id: u64,
    sink: Sink,
}

struct Channel {
    ws_name: Arc<str>,
    /// Copy-on-write so dispatch can iterate without holding the hub lock.
    subscribers: Arc<Vec<Subscriber>>,
    /// True once Redis confirmed the SUBSCRIBE: a session reads its
    /// snapshot (and a `/ws` client gets its `subscribed`) only then, so a
    /// publication made after that read is never missed.
    ready: watch::Sender<bool>,
}

pub struct Hub {
    channels: Mutex<HashMap<Arc<str>, Channel>>,
    keys: Keys,
    metrics: Arc<Metrics>,
    /// Channels whose wanted state changed; the Redis subscriber reconciles them.
    changes: mpsc::UnboundedSender<Arc<str>>,
    next_id: AtomicU64,
    /// What a publication may be; anyone with access to Redis can PUBLISH.
    bounds: message::Bounds,
    /// Channels the gateway publishes itself (`local.rs`).
    local: local::Locals,
}

/// A client's subscription; dropping it unsubscribes.
pub struct Subscription {
    hub: Arc<Hub>,
    channel: Arc<str>,
    id: u64,
    ready: watch::Receiver<bool>,
}

impl Subscription {
    /// Waits until Redis confirmed the channel's subscription (messages
    /// published from then on will arrive). Returns false if the hub went away.
    pub async fn ready(&mut self) -> bool {
        self.ready.wait_for(|r| *r).await.is_ok()
    }

    /// Follows whether the subscription is confirmed (it turns false while
    /// Redis is unreachable, when publications can be missed).
    pub fn live(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.channel, self.id);
    }
}

impl Hub {
    pub fn new(
        keys: Keys,
        metrics: Arc<Metrics>,
        bounds: message::Bounds,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Arc<str>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let hub = Arc::new(Self {
            channels: Mutex::new(HashMap::new()),
            keys,
            metrics,
            changes: tx,
            next_id: AtomicU64::new(1),
            bounds,
            local: local::Locals::default(),
        });
        (hub, rx)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Channel>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Adds a subscriber; [`Subscription::ready`] says when Redis confirmed
    /// the channel.
    pub fn subscribe(
        self: &Arc<Self>,
        persona: &PersonaId,
        outbox: Arc<Outbox>,
        mode: Mode,
    ) -> Subscription {
        self.add(persona, Sink::Client { outbox, mode })
    }

    /// Tells `observer` the offset of every publication on `persona`'s
    /// channel for as long as the subscription lives.
    pub fn observe(
        self: &Arc<Self>,
        persona: &PersonaId,
        observer: Arc<dyn Observer>,
    ) -> Subscription {
        self.add(persona, Sink::Observer(observer))
    }

    fn add(self: &Arc<Self>, persona: &PersonaId, sink: Sink) -> Subscription {
        let name: Arc<str> = self.keys.channel(persona).into();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut channels = self.lock();
        let channel = channels.entry(name.clone()).or_insert_with(|| {
            let _ = self.changes.send(name.clone());
            self.metrics.redis_channels_active.inc();
            Channel {
                ws_name: ws_channel_name(persona).into(),
                subscribers: Arc::new(Vec::new()),
                ready: watch::channel(false).0,
            }
        });
        let mut subs = Vec::with_capacity(channel.subscribers.len() + 1);
        subs.extend(channel.subscribers.iter().cloned());
        subs.push(Subscriber { id, sink });
        channel.subscribers = Arc::new(subs);
        let ready = channel.ready.subscribe();
        drop(channels);
        self.metrics.subscriptions_active.inc();
        Subscription {
            hub: self.clone(),
            channel: name,
            id,
            ready,
        }
    }

    fn unsubscribe(&self, name: &Arc<str>, id: u64) {
        if self.local.remove(name, id) {
            self.metrics.subscriptions_active.dec();
            return;
        }
        let mut channels = self.lock();
        let Some(channel) = channels.get_mut(name) else {
            return;
        };
        let subs: Vec<Subscriber> = channel
            .subscribers
            .iter()
            .filter(|s| s.id != id)
            .cloned()
            .collect();
        if subs.is_empty() {
            channels.remove(name);
            let _ = self.changes.send(name.clone());
            self.metrics.redis_channels_active.dec();
        } else {
            channel.subscribers = Arc::new(subs);
        }
        drop(channels);
        self.metrics.subscriptions_active.dec();
    }

    /// Whether any local client wants `channel`.
    pub fn is_wanted(&self, channel: &str) -> bool {
        self.lock().contains_key(channel)
    }

    /// Every channel local clients want (to resubscribe after a reconnect).
    pub fn wanted(&self) -> Vec<Arc<str>> {
        self.lock().keys().cloned().collect()
    }

    /// Records whether Redis has confirmed the subscription of `channel`.
    pub fn set_ready(&self, channel: &str, ready: bool) {
        if let Some(c) = self.lock().get_mut(channel) {
            c.ready.send_replace(ready);
        }
    }

    /// Marks every channel unconfirmed (the Redis connection was lost).
    pub fn set_all_unready(&self) {
        for c in self.lock().values() {
            c.ready.send_replace(false);
        }
    }

    /// A publication refused for bytes that are not UTF-8 (a string stored
    /// before the library refused them, or another publisher's): with U+FFFD
    /// for each invalid sequence it goes out if it is then a JSON object, as
    /// its replay from the stream would. `None`: drop it.
    fn repair(
        &self,
        channel: &str,
        payload: &[u8],
        reason: message::RejectReason,
    ) -> Option<(String, message::Inspected)> {
        // Only bytes that are not UTF-8 can be repaired; an oversized or
        // deeply nested payload is dropped without another pass over it.
        if reason != message::RejectReason::InvalidJson {
            return None;
        }
        let text = undecodable::lossy(payload);
        if !text.replaced {
            return None;
        }
        let meta = message::inspect(text.text.as_bytes(), self.bounds).ok();
        let action = match meta {
            Some(_) => Repair::Replaced,
            None => Repair::Skipped,
        };
        undecodable::report(&self.metrics, ReadPath::Live, action, channel, None);
        Some((text.text.into_owned(), meta?))
    }

    /// Fans a publication out to the channel's subscribers.
    pub fn dispatch(&self, channel: &str, payload: &[u8]) {
        self.metrics.redis_messages_received.inc();
        let (subscribers, ws_name) = {
            let channels = self.lock();
            match channels.get(channel) {
                Some(c) => (c.subscribers.clone(), c.ws_name.clone()),
                None => return,
            }
        };
        let repaired;
        let (payload, meta) = match message::inspect(payload, self.bounds) {
            Ok(m) => (payload, m),
            Err(reason) => match self.repair(channel, payload, reason) {
                Some((text, m)) => {
                    repaired = text;
                    (repaired.as_bytes(), m)
                }
                None => {
                    tracing::debug!(channel, %reason, "dropping publication");
                    self.metrics.runtime.errors.inc();
                    self.metrics
                        .redis_messages_dropped
                        .get_or_create(&ReasonLabel {
                            reason: reason.label(),
                        })
                        .inc();
                    return;
                }
            },
        };
        let mut verbatim = None;
        let mut wrapped = None;
        for sub in subscribers.iter() {
            let (outbox, delivery) = match &sub.sink {
                Sink::Client {
                    outbox,
                    mode: Mode::Verbatim,
                } => (
                    outbox,
                    verbatim.get_or_insert_with(|| message::verbatim(payload, &meta, channel)),
                ),
                Sink::Client {
                    outbox,
                    mode: Mode::Wrapped,
                } => (
                    outbox,
                    wrapped.get_or_insert_with(|| message::wrapped(payload, &meta, &ws_name)),
                ),
                Sink::Observer(observer) => {
                    // Publications without an offset are not stream events:
                    // they change no aggregate.
                    if let Some(offset) = meta.offset {
                        observer.published(offset);
                    }
                    continue;
                }
            };
            // Overflows are counted by the outbox itself.
            if outbox.push(delivery) == Pushed::Conflated {
                self.metrics.messages_conflated.inc();
            }
        }
    }
}
