//! The set of open WebSocket connections: counts them against the limit, and
//! reaches all of them for status notices and shutdown (the paced drain
//! takes them from here, and waits here for the last one to go).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::watch;

use super::outbox::Outbox;

pub struct Connections {
    open: Mutex<HashMap<u64, Arc<Outbox>>>,
    next_id: AtomicU64,
    /// How many are open, updated under the `open` lock: lets the shutdown
    /// drain wait for the last connection to end without polling.
    count: watch::Sender<usize>,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            open: Mutex::default(),
            next_id: AtomicU64::new(0),
            count: watch::Sender::new(0),
        }
    }
}

/// A registered connection; dropping it deregisters.
pub struct Registration {
    connections: Arc<Connections>,
    pub id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut open = self.connections.lock();
        open.remove(&self.id);
        self.connections.count.send_replace(open.len());
    }
}

impl Connections {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Outbox>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection unless `max` are already open.
    pub fn register(self: &Arc<Self>, outbox: Arc<Outbox>, max: usize) -> Option<Registration> {
        let mut open = self.lock();
        if open.len() >= max {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        open.insert(id, outbox);
        self.count.send_replace(open.len());
        Some(Registration {
            connections: self.clone(),
            id,
        })
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns once no connection is registered (at once if none is).
    pub async fn wait_empty(&self) {
        let mut count = self.count.subscribe();
        // The sender lives as long as `self`: this cannot fail.
        let _ = count.wait_for(|n| *n == 0).await;
    }

    fn snapshot(&self) -> Vec<Arc<Outbox>> {
        self.lock().values().cloned().collect()
    }

    /// The connections not yet closing, oldest first: what the shutdown
    /// drain has still to close.
    pub fn not_closing(&self) -> Vec<Arc<Outbox>> {
        let open = self.lock();
        let mut ids: Vec<(u64, Arc<Outbox>)> = open
            .iter()
            .filter(|(_, o)| !o.is_closing())
            .map(|(id, o)| (*id, o.clone()))
            .collect();
        drop(open);
        ids.sort_unstable_by_key(|(id, _)| *id);
        ids.into_iter().map(|(_, o)| o).collect()
    }

    /// The largest and the mean outbox depth over the open connections
    /// (both 0 with none): one short lock per connection, at most one walk
    /// per runtime sample.
    pub fn depths(&self) -> (usize, f64) {
        let outboxes = self.snapshot();
        let (max, sum) = outboxes.iter().fold((0, 0), |(max, sum), o| {
            let d = o.depth();
            (usize::max(max, d), sum + d)
        });
        let mean = if outboxes.is_empty() {
            0.0
        } else {
            sum as f64 / outboxes.len() as f64
        };
        (max, mean)
    }

    /// Queues `frame` for every connection (status notices).
    pub fn broadcast(&self, frame: Bytes) {
        for outbox in self.snapshot() {
            // A connection still waiting for its first frames hears it now.
            outbox.push_ahead(frame.clone());
        }
    }

    /// Asks every connection to close with `code`; returns how many were not
    /// closing already (the closes actually sent).
    pub fn close_all(&self, code: u16, reason: &str) -> usize {
        self.snapshot()
            .iter()
            .filter(|outbox| outbox.close(code, reason))
            .count()
    }
}
