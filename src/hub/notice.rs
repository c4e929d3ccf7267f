//! Status notices for the clients of some channels only: in a Redis
//! Cluster a dead primary takes the subscriptions of its own slots' channels,
//! and only their WebSocket clients are told (`redis/sharded.rs`).

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;

use super::{lock_fanout, Hub, Mode, Sink};

impl Hub {
    /// Queues `frame` (a status notice) once for every WebSocket connection
    /// subscribed to at least one of `channels` (Redis names), however many
    /// of them it watches; returns how many connections got it. Server-Sent
    /// Event streams get no notices, as with the gateway-wide ones.
    pub fn notify(&self, channels: &[Arc<str>], frame: &Bytes) -> usize {
        let fanouts: Vec<_> = {
            let map = self.lock();
            channels
                .iter()
                .filter_map(|c| map.get(c).map(|c| c.fanout.clone()))
                .collect()
        };
        let mut told = HashSet::new();
        for fanout in fanouts {
            let subscribers = lock_fanout(&fanout).subscribers.clone();
            for sub in subscribers.iter() {
                let Sink::Client { outbox, mode } = &sub.sink else {
                    continue;
                };
                if !matches!(mode, Mode::Verbatim | Mode::Wrapped) {
                    continue;
                }
                if told.insert(Arc::as_ptr(outbox) as usize) {
                    outbox.push_frame(frame.clone());
                }
            }
        }
        told.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::outbox::{Limits, Outbox};
    use crate::keys::{Keys, PersonaId};
    use crate::metrics::Metrics;

    fn outbox() -> Arc<Outbox> {
        let limits = Limits {
            max_messages: 8,
            max_conflated: 8,
        };
        let o = Outbox::new(limits, Arc::new(Metrics::new()));
        o.release(Vec::new(), None);
        Arc::new(o)
    }

    #[test]
    fn only_the_channels_clients_are_told_once_each() {
        let (hub, _changes) = Hub::new(
            Keys::new("pulse"),
            Arc::new(Metrics::new()),
            crate::hub::message::Bounds {
                max_bytes: 1 << 20,
                max_depth: 64,
            },
            crate::hub::recent::Limits {
                entries: 0,
                bytes: 0,
            },
        );
        let persona = |id: &str| PersonaId::parse(id, 64).expect("persona id");
        let (a, b, c) = (persona("a"), persona("b"), persona("c"));
        let (both, only_b, other) = (outbox(), outbox(), outbox());
        let _subs = [
            hub.subscribe(&a, both.clone(), Mode::Wrapped),
            hub.subscribe(&b, both.clone(), Mode::Wrapped),
            hub.subscribe(&b, only_b.clone(), Mode::Verbatim),
            hub.subscribe(&b, outbox(), Mode::SseVerbatim),
            hub.subscribe(&c, other.clone(), Mode::Verbatim),
        ];
        let held: Vec<Arc<str>> = [&a, &b]
            .iter()
            .map(|p| Arc::from(hub.keys().channel(p).as_str()))
            .collect();
        let told = hub.notify(&held, &Bytes::from_static(b"notice"));
        assert_eq!(told, 2, "one notice per WebSocket connection, none for SSE");
        assert_eq!(both.depth(), 1);
        assert_eq!(only_b.depth(), 1);
        assert_eq!(other.depth(), 0, "another channel's client hears nothing");
    }
}
