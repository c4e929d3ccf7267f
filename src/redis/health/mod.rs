//! Redis health: whether the gateway can serve what Redis gives it, shown on
//! `/readyz`, in `pulsegate_redis_up`, and sent to every client as
//! `{"type":"status","redis":"down"}` and, once everything is back,
//! `{"type":"status","redis":"up","resync":true}`.
//!
//! One task, the [`Monitor`], owns the state (`state.rs`). Its inputs come
//! from fred's connection events (a drop is seen on the socket's EOF, at
//! once), from the functions loader and the subscription reconciler (each
//! reports the connection epoch it finished for), and from the probe's PINGs
//! (the only way to notice a frozen Redis). Every input goes through one
//! `select!`, so the order of events is the order the monitor applies them.

mod monitor;
mod node_probe;
pub mod nodes;
pub mod probe;
pub mod state;

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, watch};

pub use monitor::Monitor;
pub use state::{Link, Links};

/// What `/readyz` and new WebSocket sessions read; written by the monitor only.
#[derive(Default)]
pub struct RedisStatus {
    /// Up as last announced to clients (see `state.rs` for what it needs).
    up: AtomicBool,
    /// The functions library is loaded on the current command connection.
    library: AtomicBool,
    /// Each node reached and whether it answered (written by the probe).
    pub nodes: nodes::RedisNodes,
}

impl RedisStatus {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn library_loaded(&self) -> bool {
        self.library.load(Ordering::Acquire)
    }

    /// Only the monitor calls this, after each input; `/readyz` needs both
    /// flags, and `up` is never true without `library`.
    fn set(&self, up: bool, library: bool) {
        self.library.store(library, Ordering::Release);
        self.up.store(up, Ordering::Release);
    }
}

/// A report to the monitor from the task that did the work.
#[derive(Clone, Copy, Debug)]
pub enum Signal {
    /// `FUNCTION LOAD` succeeded after the command connection of `epoch`
    /// was opened.
    LibraryLoaded { epoch: u64 },
    /// Every wanted channel is subscribed, and confirmed, on the subscriber
    /// connection of `epoch`.
    Resubscribed { epoch: u64 },
    /// A probe round: the links when the PINGs were sent, and which answered.
    Probe {
        at: Links,
        command_ok: bool,
        subscriber_ok: bool,
    },
}

/// The monitor is gone (the gateway is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the Redis health monitor has stopped")]
pub struct MonitorGone;

/// What the loader, the reconciler and the probe hold: the current links,
/// to act on each new connection, and the way to report back.
#[derive(Clone)]
pub struct Health {
    links: watch::Receiver<Links>,
    signals: mpsc::Sender<Signal>,
}

impl Health {
    /// The links as published by the monitor; `changed()` wakes on each
    /// drop and reconnect.
    pub fn links(&self) -> watch::Receiver<Links> {
        self.links.clone()
    }

    pub async fn report(&self, signal: Signal) -> Result<(), MonitorGone> {
        self.signals.send(signal).await.map_err(|_| MonitorGone)
    }
}
