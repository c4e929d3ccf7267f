//! The gateway's own runtime metrics, live on the `/ws` channel
//! `system:runtime` (`docs/protocol.md`): CPU, memory, threads, connections,
//! rates, queue depths, errors, Redis and Postgres status.
//!
//! Nothing runs while nobody watches: the sampler task sleeps on the
//! channel's watcher count (a `watch`, no timer), starts its interval when
//! the first watcher arrives and stops it when the last leaves. Each sample
//! is encoded once and pushed through the hub's local channel into every
//! watcher's outbox, as a publication is (`hub/local.rs`); it is conflated
//! there, so a watcher that lags gets the newest sample, never a 4008.

mod procfs;
mod sample;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::hub::outbox::{Delivery, Outbox};
use crate::hub::{Hub, Subscription};
pub use sample::{Sample, Sources};

/// The reserved channel name.
pub const CHANNEL: &str = "system:runtime";

pub struct Runtime {
    interval: Duration,
    hub: Arc<Hub>,
    sources: Sources,
    /// The totals at the last `request_metrics` (or at start): its rates are
    /// over the time since, apart from the interval's.
    last_request: Mutex<sample::Totals>,
}

impl Runtime {
    pub fn new(interval: Duration, hub: Arc<Hub>, mut sources: Sources) -> Self {
        sources.mem_total = sources.mem_total.or_else(|| procfs::mem_total().ok());
        let start = sources.totals();
        Self {
            interval,
            hub,
            sources,
            last_request: Mutex::new(start),
        }
    }

    /// Makes `outbox` a watcher of [`CHANNEL`] until the subscription drops.
    pub fn watch(&self, outbox: Arc<Outbox>) -> Subscription {
        self.hub.subscribe_local(CHANNEL, outbox)
    }

    /// One sample now (`request_metrics`, and the first sample of a new
    /// watcher): its rates cover the time since the previous one asked for.
    pub fn sample_now(&self) -> Bytes {
        let mut last = self.last_request.lock().unwrap_or_else(|e| e.into_inner());
        let (sample, now) = self.sources.sample(&last);
        *last = now;
        Bytes::from(sample.encode())
    }

    /// The sampler task, until `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let metrics = self.sources.metrics.clone();
        let mut watchers = self.hub.local_subscribers(CHANNEL);
        loop {
            // Idle: waiting on the count costs nothing.
            let waited = tokio::select! {
                _ = cancel.cancelled() => return,
                n = watchers.wait_for(|n| *n > 0) => n.map(|n| *n),
            };
            let Ok(n) = waited else { return };
            metrics.runtime.watchers.set(n as i64);
            tracing::debug!(watchers = n, "runtime sampling starts");
            let mut before = self.sources.totals();
            let mut tick = interval_at(Instant::now() + self.interval, self.interval);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    changed = watchers.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let n = *watchers.borrow_and_update();
                        metrics.runtime.watchers.set(n as i64);
                        if n == 0 {
                            tracing::debug!("runtime sampling stops: nobody watches");
                            break;
                        }
                    }
                    _ = tick.tick() => {
                        let (sample, now) = self.sources.sample(&before);
                        before = now;
                        self.hub.publish_local(CHANNEL, &delivery(Bytes::from(sample.encode())));
                    }
                }
            }
        }
    }
}

/// A sample as the outbox takes it: conflated under one key per
/// connection, so only the newest waits for a slow watcher.
pub fn delivery(json: Bytes) -> Delivery {
    static KEY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    Delivery {
        frame: crate::protocol::frame::text(&json),
        conflation_key: Some(KEY.get_or_init(|| format!("{CHANNEL}\0").into()).clone()),
        offset: None,
        channel: None,
    }
}
