//! Single-flight: callers asking for the same key at the same time share one
//! call and its result, errors included, so a thousand clients joining one
//! persona cost one Redis read instead of a thousand.
//!
//! The rule that keeps a shared result as good as a caller's own: **a
//! caller joins only a call that has not been sent yet.** Whatever the
//! caller did before asking (a dashboard subscribed to its persona's
//! channel and saw the subscription confirmed) happened before the call
//! went out, exactly as if it had made the call itself. A caller that finds
//! the key's call already sent queues the next one, which is sent when the
//! one under way ends; later callers join that. So per key one call runs
//! and one waits, however many callers there are: a burst of callers costs
//! about one call per call's duration. (If every caller of the waiting call
//! leaves before it is sent, its entry goes with it, and the next caller's
//! call is sent without waiting for the one under way.)
//!
//! No task is spawned. A call is a shared future polled by every caller
//! waiting on it: it goes on when the caller that queued it leaves, and is
//! dropped, with its entry, when the last one leaves. Entries are removed
//! when their call ends or is dropped; past `capacity` keys in flight a
//! caller makes its own call, unshared.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::future::{BoxFuture, FutureExt, Shared, WeakShared};

/// Where a caller's result came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A call this caller queued (or made alone, past `capacity`).
    Queued,
    /// A call another caller queued, not yet sent when this one joined.
    Joined,
}

type Call<V> = Shared<BoxFuture<'static, V>>;

/// Calls in flight by key.
pub struct Flights<K, V> {
    inner: Arc<Inner<K, V>>,
}

struct Inner<K, V> {
    calls: Mutex<HashMap<K, Entry<V>>>,
    /// Most keys with a call in flight; past it callers are not shared.
    capacity: usize,
    /// Tells an entry from the one that replaced it under the same key.
    next_id: AtomicU64,
}

struct Entry<V> {
    id: u64,
    /// Set under the map's lock just before the call is sent: from then on
    /// nobody joins it (they queue the next one).
    sent: bool,
    /// Weak, so the map never keeps alive a call nobody waits for.
    call: WeakShared<BoxFuture<'static, V>>,
}

impl<K, V> Flights<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// At most `capacity` keys in flight at once are shared.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                calls: Mutex::new(HashMap::new()),
                capacity,
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// The result of a call for `key` sent after this was called: one not
    /// yet sent that another caller queued, or `call()`, queued behind the
    /// key's call under way if there is one. `call` is called only to queue
    /// a call, under the map's lock: it must build the future and do
    /// nothing else (above all, not use these flights).
    pub async fn run<F, Fut>(&self, key: K, call: F) -> (V, Role)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let (shared, role) = self.join_or_queue(key, call);
        (shared.await, role)
    }

    /// Keys with a call in flight or queued.
    pub fn in_flight(&self) -> usize {
        self.inner.lock().len()
    }

    fn join_or_queue<F, Fut>(&self, key: K, call: F) -> (Call<V>, Role)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let mut calls = self.inner.lock();
        // A strong handle taken out of the map is never dropped while the
        // lock is held: dropping the last one drops the call, whose entry
        // guard takes the lock.
        let under_way = match calls.get(&key) {
            Some(e) => match e.call.upgrade() {
                Some(c) if !e.sent => return (c, Role::Joined),
                Some(c) => Some(c),
                None => None,
            },
            None if calls.len() >= self.inner.capacity => {
                drop(calls);
                return (call().boxed().shared(), Role::Queued);
            }
            None => None,
        };
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let guard = EntryGuard {
            inner: self.inner.clone(),
            key: key.clone(),
            id,
        };
        let fut = call();
        // The guard is moved in, not created inside: it must go with the
        // future even if the future is dropped before its first poll.
        let shared = async move {
            let guard = guard;
            if let Some(under_way) = under_way {
                under_way.await;
            }
            guard.sent();
            fut.await
        }
        .boxed()
        .shared();
        if let Some(call) = shared.downgrade() {
            let entry = Entry {
                id,
                sent: false,
                call,
            };
            calls.insert(key, entry);
        }
        (shared, Role::Queued)
    }
}

impl<K, V> Inner<K, V> {
    fn lock(&self) -> MutexGuard<'_, HashMap<K, Entry<V>>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Owned by a queued call: marks its entry sent, and removes it when the
/// call ends or is dropped (unless a newer call's entry replaced it).
struct EntryGuard<K: Hash + Eq, V> {
    inner: Arc<Inner<K, V>>,
    key: K,
    id: u64,
}

impl<K: Hash + Eq, V> EntryGuard<K, V> {
    fn sent(&self) {
        if let Some(e) = self.inner.lock().get_mut(&self.key) {
            if e.id == self.id {
                e.sent = true;
            }
        }
    }
}

impl<K: Hash + Eq, V> Drop for EntryGuard<K, V> {
    fn drop(&mut self) {
        let mut calls = self.inner.lock();
        if calls.get(&self.key).is_some_and(|e| e.id == self.id) {
            calls.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests;
