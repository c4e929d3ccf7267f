//! The paced drain: after SIGTERM, once `shutdown.lb_grace` has given the
//! load balancer time to see `/readyz` fail, the WebSockets are closed with
//! 1012 in batches spread evenly over `shutdown.drain_window`, each close
//! carrying a reconnect hint `{"reconnect_ms":<n>}` (decisions.md D7).
//!
//! The hint sends every client back one window after it left, plus a random
//! part of the gap between two batches: the reconnects start once this
//! instance has let go of its last client, arrive in the order and at the
//! pace of the closes (clients drained early come back early, not all at the
//! window's end), and a batch is smeared over the gap instead of coming back
//! at one instant. `docs/protocol.md`, "Shutdown", tells clients what to do.
//!
//! [`Schedule`] is the arithmetic (pure, unit-tested); [`run`] applies it to
//! the registry. It sits above `hub/` and is run by `server.rs`.

use std::ops::Range;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use crate::config::ShutdownConfig;
use crate::hub::outbox::Outbox;
use crate::hub::registry::Connections;
use crate::metrics::Metrics;
use crate::protocol::close;

/// About how far apart two batches go out. Half a second keeps every batch
/// small next to the window (20 batches over the default 10 s), while any
/// one-second span holds at most two batches: never more than
/// `clients / window` closes in any second, with time to spare (0.11 s for
/// a 5 s window). Finer batches would not smooth the reconnects further (the
/// hints' jitter already spreads each batch over the gap) and would lose
/// that margin.
const BATCH_SPACING: Duration = Duration::from_millis(500);

/// When each batch goes out, which connections it takes, and the hint
/// each of them gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    window: Duration,
    batches: u32,
}

impl Schedule {
    /// One batch per [`BATCH_SPACING`] of `window`, rounded up, the first at
    /// its start and the last at its end: so batches are a little more than
    /// half a second apart, and any one second holds at most two of them.
    /// One batch when the window is that short.
    pub fn new(window: Duration) -> Self {
        let n = window.as_nanos().div_ceil(BATCH_SPACING.as_nanos());
        let batches = u32::try_from(n).unwrap_or(u32::MAX).max(1);
        Self { window, batches }
    }

    pub fn batches(&self) -> u32 {
        self.batches
    }

    /// The time between two batches (the whole window for a single batch:
    /// its clients' reconnects are spread over one window).
    pub fn spacing(&self) -> Duration {
        if self.batches > 1 {
            self.window / (self.batches - 1)
        } else {
            self.window
        }
    }

    /// When batch `k` goes out, from the window's start.
    pub fn offset(&self, k: u32) -> Duration {
        if self.batches > 1 {
            let nanos = self.window.as_nanos() * u128::from(k) / u128::from(self.batches - 1);
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        } else {
            Duration::ZERO
        }
    }

    /// The positions in a list of `total` connections that batch `k` closes:
    /// batches differ by at most one, and together take every position once.
    pub fn range(&self, k: u32, total: usize) -> Range<usize> {
        let at = |k: u32| (total as u128 * u128::from(k) / u128::from(self.batches)) as usize;
        at(k)..at(k + 1)
    }

    /// The hint for a client of batch `k` closed `elapsed` after the window
    /// started, `jitter` drawn from [0, 1): what remains of the window, then
    /// the batch's place in it, then a random part of the gap to the next
    /// batch. A late batch gets a shorter hint, so the return stays on time.
    pub fn reconnect_in(&self, k: u32, elapsed: Duration, jitter: f64) -> Duration {
        let back_at = self.window + self.offset(k) + self.spacing().mul_f64(jitter.clamp(0.0, 1.0));
        back_at.saturating_sub(elapsed)
    }
}

/// Closes every WebSocket in `connections` as `config` says, counting the
/// closes in `metrics`; `began` is when the signal came. Returns early once
/// no connection is left (at once when none was open); otherwise after the
/// last batch, with every connection asked to close. The caller bounds it
/// by `drain_timeout` and waits for the sessions to end.
pub async fn run(
    connections: &Connections,
    metrics: &Metrics,
    config: &ShutdownConfig,
    began: Instant,
) {
    // The load balancer's turn: clients closed now would be sent back here.
    tokio::select! {
        _ = sleep_until(began + config.lb_grace) => {}
        _ = connections.wait_empty() => return,
    }
    let start = Instant::now();
    let schedule = Schedule::new(config.drain_window);
    let open = connections.not_closing();
    tracing::info!(
        websockets = open.len(),
        batches = schedule.batches(),
        window = ?config.drain_window,
        "closing WebSockets (1012) in batches"
    );
    for k in 0..schedule.batches() {
        tokio::select! {
            _ = sleep_until(start + schedule.offset(k)) => {}
            _ = connections.wait_empty() => return,
        }
        let batch = &open[schedule.range(k, open.len())];
        close_batch(batch, &schedule, k, start, metrics);
    }
    // Connections registered after the list was taken (an upgrade that
    // passed the draining check just before it was set) go with the last batch.
    let late = connections.not_closing();
    if !late.is_empty() {
        close_batch(&late, &schedule, schedule.batches() - 1, start, metrics);
    }
    tracing::info!(
        remaining = connections.len(),
        "every WebSocket asked to close"
    );
}

/// Closes `batch` as batch `k` of `schedule`, each with its own hint.
fn close_batch(
    batch: &[std::sync::Arc<Outbox>],
    schedule: &Schedule,
    k: u32,
    start: Instant,
    metrics: &Metrics,
) {
    let elapsed = start.elapsed();
    let closed = batch
        .iter()
        .filter(|outbox| {
            let wait = schedule.reconnect_in(k, elapsed, fastrand::f64());
            outbox.close(close::SERVICE_RESTART, &close::reconnect_reason(wait))
        })
        .count();
    metrics.closes_sent(close::SERVICE_RESTART, closed);
}

#[cfg(test)]
mod tests;
