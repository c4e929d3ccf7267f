//! The set of open WebSocket connections: counts them against the limit, and
//! reaches all of them for status notices and shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::outbox::Outbox;

#[derive(Default)]
pub struct Connections {
    open: Mutex<HashMap<u64, Arc<Outbox>>>,
    next_id: AtomicU64,
}

/// A registered connection; dropping it deregisters.
pub struct Registration {
    connections: Arc<Connections>,
    pub id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
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

    fn snapshot(&self) -> Vec<Arc<Outbox>> {
        self.lock().values().cloned().collect()
    }

    /// Queues `frame` for every connection (status notices).
    pub fn broadcast(&self, frame: Bytes) {
        for outbox in self.snapshot() {
            outbox.push_frame(frame.clone());
        }
    }

    /// Asks every connection to close with `code`.
    pub fn close_all(&self, code: u16, reason: &str) -> usize {
        let all = self.snapshot();
        for outbox in &all {
            outbox.close(code, reason);
        }
        all.len()
    }
}
