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
