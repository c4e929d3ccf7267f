//! A short-lived cache of REST read responses, keyed by route and persona
//! and valid only while the persona's stream offset is unchanged: a read
//! after no new event costs one `XREVRANGE … COUNT 1` instead of a snapshot.
//! Entries also expire after `TTL`, since some fields are relative to now
//! (rolling windows, time since post, stale variants).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::keys::PersonaId;

/// How long an unchanged answer may be served.
pub const TTL: Duration = Duration::from_millis(1000);
/// Entries kept; past it the cache starts over (bounded memory).
const MAX_ENTRIES: usize = 10_000;

struct Entry {
    offset: String,
    at: Instant,
    body: Bytes,
}

#[derive(Default)]
pub struct ResponseCache {
    entries: Mutex<HashMap<(&'static str, PersonaId), Entry>>,
}

impl ResponseCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(&'static str, PersonaId), Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached body if it was built at `offset` less than `TTL` ago.
    pub fn get(&self, route: &'static str, persona: &PersonaId, offset: &str) -> Option<Bytes> {
        let map = self.lock();
        let e = map.get(&(route, persona.clone()))?;
        (e.offset == offset && e.at.elapsed() < TTL).then(|| e.body.clone())
    }

    pub fn put(&self, route: &'static str, persona: &PersonaId, offset: String, body: Bytes) {
        let mut map = self.lock();
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(
            (route, persona.clone()),
            Entry {
                offset,
                at: Instant::now(),
                body,
            },
        );
    }
}
