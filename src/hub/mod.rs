//! The subscription hub: Redis channel → local subscribers.
//!
//! One Redis subscription per channel per process, however many clients
//! watch it; the first subscriber asks the Redis subscriber task to
//! SUBSCRIBE, the last one leaving asks it to UNSUBSCRIBE. Each publication
//! is inspected and encoded once, then handed to every subscriber's bounded
//! outbox without waiting on any of them.

mod continuity;
mod dispatch;
mod local;
pub mod message;
mod notice;
pub mod outbox;
mod prime;
pub mod recent;
pub mod registry;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, watch};

use crate::channel_name::ChannelId;
use crate::keys::{ws_channel_name, Keys, PersonaId};
use crate::metrics::Metrics;
use crate::stream::Offset;
use outbox::Outbox;
use recent::{Lookup, Recent};

/// How a subscriber wants publications framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `/dashboard/ws/{persona}`: the payload verbatim.
    Verbatim,
    /// `/ws`: wrapped in a `message` envelope naming the channel.
    Wrapped,
    /// `/sse/{persona}`: the payload verbatim as a Server-Sent Event.
    SseVerbatim,
    /// `/sse?channel=`: the `message` envelope as a Server-Sent Event.
    SseWrapped,
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
    /// `None` for a `[[channels]]` channel: gap repair (which reads a
    /// persona's stream) covers persona channels only.
    persona: Option<PersonaId>,
    ws_name: Arc<str>,
    /// The namespace's conflation field path (`[[channels]].conflate`);
    /// `None` for personas (performance updates) and lossless namespaces.
    conflate: Option<Arc<[String]>>,
    /// The last offset forwarded and the publications held while a gap
    /// repair runs (`continuity.rs`); locked while forwarding, so the
    /// receiver and a repair never interleave one channel's messages.
    flow: Arc<Mutex<continuity::Flow>>,
    /// Who receives the channel's publications, and the last ones.
    fanout: Arc<Mutex<Fanout>>,
    /// True once Redis confirmed the SUBSCRIBE: a session reads its
    /// snapshot (and a `/ws` client gets its `subscribed`) only then, so a
    /// publication made after that read is never missed.
    ready: watch::Sender<bool>,
    /// True once the first repair started the recent window (`prime.rs`).
    primed: watch::Sender<bool>,
}

/// Locked on its own, never while taking another lock: dispatch records a
/// publication in `recent` and copies `subscribers` in one step, so a
/// client added after that step finds the publication in the window, and
/// one added before gets it pushed.
#[derive(Default)]
struct Fanout {
    /// Copy-on-write so dispatch can iterate without holding any lock.
    subscribers: Arc<Vec<Subscriber>>,
    /// The last publications, for resumes served without Redis.
    recent: Recent,
}

fn lock_fanout(fanout: &Mutex<Fanout>) -> MutexGuard<'_, Fanout> {
    fanout.lock().unwrap_or_else(|e| e.into_inner())
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
    /// How much of each channel's recent publications to keep.
    recent: recent::Limits,
}

/// Where a subscriber is added: the Redis channel, the `/ws` name and the
/// namespace's rules.
struct Target {
    redis: Arc<str>,
    ws_name: Arc<str>,
    persona: Option<PersonaId>,
    conflate: Option<Arc<[String]>>,
    max_subscribers: usize,
}

/// A client's subscription; dropping it unsubscribes.
pub struct Subscription {
    hub: Arc<Hub>,
    channel: Arc<str>,
    id: u64,
    ready: watch::Receiver<bool>,
}

impl Subscription {
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
        recent: recent::Limits,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Arc<str>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let hub = Arc::new(Self {
            channels: Mutex::new(HashMap::new()),
            keys,
            metrics,
            changes: tx,
            next_id: AtomicU64::new(1),
            bounds,
            recent,
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

    /// Adds a subscriber; [`Subscription::live`] says when Redis confirmed
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
        let target = Target {
            redis: self.keys.channel(persona).into(),
            ws_name: ws_channel_name(persona).into(),
            persona: Some(persona.clone()),
            conflate: None,
            max_subscribers: 0,
        };
        // No bound: it cannot refuse.
        self.add_to(target, sink)
            .unwrap_or_else(|| unreachable!("a persona channel has no subscriber bound"))
    }

    /// Adds a `/ws` subscriber to a `[[channels]]` channel: `conflate` is
    /// its namespace's field path, `max_subscribers` (0: none) the most
    /// subscribers it may have in this process. `None`: that many already.
    pub fn subscribe_channel(
        self: &Arc<Self>,
        channel: &ChannelId,
        conflate: Option<Arc<[String]>>,
        max_subscribers: usize,
        outbox: Arc<Outbox>,
    ) -> Option<Subscription> {
        let target = Target {
            redis: self.keys.channel_events(channel.as_str()).into(),
            ws_name: channel.as_str().into(),
            persona: None,
            conflate,
            max_subscribers,
        };
        let sink = Sink::Client {
            outbox,
            mode: Mode::Wrapped,
        };
        self.add_to(target, sink)
    }

    fn add_to(self: &Arc<Self>, target: Target, sink: Sink) -> Option<Subscription> {
        let Target {
            redis: name,
            ws_name,
            persona,
            conflate,
            max_subscribers,
        } = target;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut channels = self.lock();
        if max_subscribers > 0
            && channels
                .get(&name)
                .is_some_and(|c| lock_fanout(&c.fanout).subscribers.len() >= max_subscribers)
        {
            return None;
        }
        let channel = channels.entry(name.clone()).or_insert_with(|| {
            let _ = self.changes.send(name.clone());
            self.metrics.redis_channels_active.inc();
            // A persona channel starts with the repair that finds where its
            // stream stands; another channel forwards from the start.
            let flow = match persona {
                Some(_) => continuity::Flow::new(),
                None => continuity::Flow::live(),
            };
            Channel {
                persona,
                ws_name,
                conflate,
                flow: Arc::new(Mutex::new(flow)),
                fanout: Arc::default(),
                ready: watch::channel(false).0,
                primed: watch::channel(false).0,
            }
        });
        {
            let mut fanout = lock_fanout(&channel.fanout);
            let mut subs = Vec::with_capacity(fanout.subscribers.len() + 1);
            subs.extend(fanout.subscribers.iter().cloned());
            subs.push(Subscriber { id, sink });
            fanout.subscribers = Arc::new(subs);
        }
        let ready = channel.ready.subscribe();
        drop(channels);
        self.metrics.subscriptions_active.inc();
        Some(Subscription {
            hub: self.clone(),
            channel: name,
            id,
            ready,
        })
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
        let mut fanout = lock_fanout(&channel.fanout);
        let subs: Vec<Subscriber> = fanout
            .subscribers
            .iter()
            .filter(|s| s.id != id)
            .cloned()
            .collect();
        let empty = subs.is_empty();
        fanout.subscribers = Arc::new(subs);
        drop(fanout);
        if empty {
            channels.remove(name);
            let _ = self.changes.send(name.clone());
            self.metrics.redis_channels_active.dec();
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
            if !ready {
                lock_fanout(&c.fanout).recent.clear();
            }
            c.ready.send_replace(ready);
            continuity::lock(&c.flow).subscribed = ready;
        }
    }

    /// Marks every channel unconfirmed (the Redis connection was lost), and
    /// holds its publications until a gap repair has read back what the
    /// lost connection missed.
    pub fn set_all_unready(&self) {
        for c in self.lock().values_mut() {
            lock_fanout(&c.fanout).recent.clear();
            c.ready.send_replace(false);
            let mut flow = continuity::lock(&c.flow);
            flow.subscribed = false;
            if c.persona.is_some() {
                flow.begin();
            }
        }
    }

    /// Forgets every channel's recent publications: some may have been
    /// missed (the hub lagged behind Redis).
    pub fn forget_recent(&self) {
        for c in self.lock().values() {
            lock_fanout(&c.fanout).recent.clear();
        }
    }

    /// What `persona` published after `since`, if this process saw all of
    /// it (at most `max` entries); [`Lookup::Unknown`] sends the resume to Redis.
    pub fn recent_since(&self, persona: &PersonaId, since: Offset, max: usize) -> Lookup {
        let name = self.keys.channel(persona);
        let fanout = match self.lock().get(name.as_str()) {
            Some(c) => c.fanout.clone(),
            None => return Lookup::Unknown,
        };
        let recent = &lock_fanout(&fanout).recent;
        recent.since(since, max)
    }
}
