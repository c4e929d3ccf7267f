//! REST read answers kept current in the background, so a read never waits
//! on Redis: the first read of a persona starts a watcher that observes the
//! persona's channel through the hub (one shared subscription) and rebuilds
//! the answers that were asked for whenever an event is published, and
//! before they expire (some fields move with the clock: rolling windows,
//! time since post). Readers get the newest built answer while it is no
//! more than `http.api_cache_max_lag` behind the newest event; past that,
//! or while the subscription is not confirmed (Redis unreachable, events
//! may be missed), they wait for a rebuild or build the answer themselves.
//! A watcher nobody reads for `IDLE` stops and releases its subscription.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{build, Answer, Built, Route};
use crate::hub::{Hub, Observer, Subscription};
use crate::keys::PersonaId;
use crate::metrics::{Metrics, SourceLabel};
use crate::snapshot::Source;
use crate::stream::{parse_offset, Offset};

/// How long a built answer may be served. A read of an answer older than
/// half of it asks for a rebuild, so steadily read answers never expire.
pub const TTL: Duration = Duration::from_millis(1000);
/// A watcher with no reads for this long stops.
const IDLE: Duration = Duration::from_secs(30);
/// Longest a reader waits for the watcher's rebuild before building itself.
const WAIT: Duration = Duration::from_secs(2);

/// What the watchers need besides the cache: where answers come from, the
/// hub they observe personas through, and the tracker they run on.
pub struct Context {
    pub source: Source,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    /// Every watcher runs here, so shutdown waits for it.
    pub tasks: TaskTracker,
    /// Cancelled at shutdown: watchers stop.
    pub shutdown: CancellationToken,
}

pub struct ApiCache {
    watched: Mutex<HashMap<PersonaId, Arc<Watched>>>,
    /// `http.api_cache_max_lag`.
    max_lag: Duration,
    /// `http.api_cache_personas`.
    max_personas: usize,
    cx: Context,
}

impl ApiCache {
    pub fn new(max_lag: Duration, max_personas: usize, cx: Context) -> Self {
        Self {
            watched: Mutex::new(HashMap::new()),
            max_lag,
            max_personas,
            cx,
        }
    }

    /// Where answers come from (a reader building its own uses the same).
    pub fn source(&self) -> &Source {
        &self.cx.source
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<PersonaId, Arc<Watched>>> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Personas currently watched (for tests and metrics).
    pub fn watched(&self) -> usize {
        self.lock().len()
    }

    /// A current answer for `route`, or `None` when the caller must build
    /// it itself (watcher not live yet, rebuild failing, cache full).
    pub async fn get(self: &Arc<Self>, route: Route, persona: &PersonaId) -> Option<Answer> {
        let watched = self.watch(persona)?;
        watched.read(route);
        let mut built = watched.built.subscribe();
        let current = built.borrow_and_update().clone();
        if let Some(a) = watched.servable(&current, route, self.max_lag) {
            if current.is_some_and(|b| b.at.elapsed() >= TTL / 2) {
                watched.wake.notify_one();
            }
            read_from(&self.cx.metrics, "cached");
            return Some(a);
        }
        if !watched.is_live() {
            return None;
        }
        watched.wake.notify_one();
        let deadline = Instant::now() + WAIT;
        while tokio::time::timeout_at(deadline, built.changed())
            .await
            .ok()?
            .is_ok()
        {
            let current = built.borrow_and_update().clone();
            // Nothing built after a change: the rebuild failed.
            current.as_ref()?;
            if let Some(a) = watched.servable(&current, route, self.max_lag) {
                read_from(&self.cx.metrics, "waited");
                return Some(a);
            }
        }
        None
    }

    /// An event this instance ingested: its answers are behind from now on,
    /// before the publication comes back from Redis (reads after a write on
    /// the same instance see the write when `max_lag` is zero).
    pub fn ingested(&self, persona: &PersonaId, offset: &str) {
        let watched = self.lock().get(persona).cloned();
        if let (Some(w), Some(offset)) = (watched, parse_offset(offset)) {
            w.published(offset);
        }
    }

    /// The persona's watcher, started on first use.
    fn watch(self: &Arc<Self>, persona: &PersonaId) -> Option<Arc<Watched>> {
        let mut map = self.lock();
        if let Some(w) = map.get(persona) {
            return Some(w.clone());
        }
        if map.len() >= self.max_personas {
            return None;
        }
        let watched = Arc::new(Watched::new());
        let subscription = self.cx.hub.observe(persona, watched.clone());
        // Readers check the same confirmation the watcher follows.
        let _ = watched.live.set(subscription.live());
        map.insert(persona.clone(), watched.clone());
        drop(map);
        self.cx.metrics.api_cache_personas.inc();
        self.cx.tasks.spawn(refresh(
            self.clone(),
            persona.clone(),
            watched.clone(),
            subscription,
        ));
        Some(watched)
    }

    fn forget(&self, persona: &PersonaId, watched: &Arc<Watched>) {
        let mut map = self.lock();
        if map.get(persona).is_some_and(|w| Arc::ptr_eq(w, watched)) {
            map.remove(persona);
            self.cx.metrics.api_cache_personas.dec();
        }
    }
}

/// What the watcher knows of the persona's offsets.
#[derive(Default)]
struct Seen {
    /// The offset the current answers were built at.
    built: Option<Offset>,
    /// The newest offset published.
    newest: Option<Offset>,
    /// Since when the answers trail a published event.
    behind_since: Option<Instant>,
}

struct Watched {
    seen: Mutex<Seen>,
    /// Routes asked for, as a route set: the ones rebuilt.
    routes: AtomicU8,
    last_read: Mutex<Instant>,
    wake: Notify,
    built: watch::Sender<Option<Arc<Built>>>,
    /// Whether the hub subscription is confirmed.
    live: OnceLock<watch::Receiver<bool>>,
}

impl Watched {
    fn new() -> Self {
        Self {
            seen: Mutex::default(),
            routes: AtomicU8::new(0),
            last_read: Mutex::new(Instant::now()),
            wake: Notify::new(),
            built: watch::channel(None).0,
            live: OnceLock::new(),
        }
    }

    fn is_live(&self) -> bool {
        self.live.get().is_some_and(|l| *l.borrow())
    }

    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self, route: Route) {
        let before = self.routes.fetch_or(route.bit(), Ordering::Relaxed);
        *self.last_read.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        if before & route.bit() == 0 {
            self.wake.notify_one();
        }
    }

    fn servable(
        &self,
        built: &Option<Arc<Built>>,
        route: Route,
        max_lag: Duration,
    ) -> Option<Answer> {
        let built = built.as_ref()?;
        if !self.is_live() || built.at.elapsed() >= TTL {
            return None;
        }
        let behind = self.seen().behind_since;
        if behind.is_some_and(|since| since.elapsed() >= max_lag) {
            return None;
        }
        built.answer(route).cloned()
    }

    /// Records the offset of answers whose build started at `started`.
    /// Events newer than it were published after its snapshot was taken,
    /// so after `started`: the answers trail the newest event since then.
    fn built_at(&self, offset: Option<Offset>, started: Instant) {
        let mut seen = self.seen();
        seen.built = offset;
        seen.behind_since = (seen.newest > offset).then_some(started);
    }

    /// Whether the answers are missing, trail an event, lack an asked-for
    /// route, or are half-way to expiry.
    fn needs_build(&self) -> bool {
        let routes = self.routes.load(Ordering::Relaxed);
        let stale = match &*self.built.borrow() {
            None => true,
            Some(b) => {
                b.at.elapsed() >= TTL / 2
                    || Route::ALL
                        .iter()
                        .any(|r| routes & r.bit() != 0 && b.answer(*r).is_none())
            }
        };
        stale || self.seen().behind_since.is_some()
    }

    fn idle_for(&self) -> Duration {
        self.last_read
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }
}

impl Observer for Watched {
    fn published(&self, offset: Offset) {
        let mut seen = self.seen();
        if Some(offset) <= seen.built {
            return;
        }
        seen.newest = seen.newest.max(Some(offset));
        seen.behind_since.get_or_insert_with(Instant::now);
        drop(seen);
        self.wake.notify_one();
    }
}

/// The watcher: rebuilds the asked-for answers when woken (a new event, a
/// read of an ageing answer, a newly asked route) and after the
/// subscription comes back; stops when nobody reads.
async fn refresh(
    cache: Arc<ApiCache>,
    persona: PersonaId,
    watched: Arc<Watched>,
    subscription: Subscription,
) {
    let mut live = subscription.live();
    loop {
        let idle_at = Instant::now() + IDLE.saturating_sub(watched.idle_for());
        tokio::select! {
            _ = watched.wake.notified() => {}
            _ = tokio::time::sleep_until(idle_at) => {}
            changed = live.changed() => {
                if changed.is_err() {
                    break;
                }
                if !*live.borrow_and_update() {
                    // Publications may be missed from here on.
                    watched.built.send_replace(None);
                    continue;
                }
            }
            _ = cache.cx.shutdown.cancelled() => break,
        }
        if watched.idle_for() >= IDLE {
            break;
        }
        if !*live.borrow() || !watched.needs_build() {
            continue;
        }
        let routes = watched.routes.load(Ordering::Relaxed);
        let started = Instant::now();
        cache.cx.metrics.api_cache_rebuilds.inc();
        match build(&cache.cx.source, &persona, routes, started).await {
            Ok(built) => {
                watched.built_at(built.offset, started);
                watched.built.send_replace(Some(Arc::new(built)));
            }
            Err(e) => {
                tracing::debug!(%persona, error = %e, "cannot rebuild the REST answers");
                watched.built.send_replace(None);
            }
        }
    }
    cache.forget(&persona, &watched);
    // A reader that found this watcher just before it stopped builds its
    // answer itself instead of waiting for a rebuild that will not come.
    watched.built.send_replace(None);
    drop(subscription);
}

/// Counts a REST read by the source of its answer.
pub fn read_from(metrics: &Metrics, source: &'static str) {
    metrics
        .api_reads
        .get_or_create(&SourceLabel { source })
        .inc();
}
