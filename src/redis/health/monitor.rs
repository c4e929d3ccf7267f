//! The task that owns the health state: applies fred's connection events
//! and the workers' reports in one order, publishes the links, and tells
//! `/readyz`, the metrics and every client about each transition.

use std::sync::Arc;
use std::time::Instant;

use fred::prelude::*;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::state::{Conn, Input, State, Transition};
use super::{Health, Links, RedisStatus, Signal};
use crate::hub::registry::Connections;
use crate::metrics::Metrics;
use crate::protocol::frame;
use crate::protocol::ServerMessage;

/// Reports waiting for the monitor. Each worker sends at most one per
/// connection epoch or probe round, so this is never close to full.
const SIGNAL_CAPACITY: usize = 64;

/// fred's event streams of one connection.
struct Events {
    conn: Conn,
    /// A connection closed (fred saw EOF or an I/O error, or its
    /// unresponsive check gave up on it), or a reconnect attempt failed.
    errors: broadcast::Receiver<(Error, Option<Server>)>,
    /// A connection was opened (the first one too).
    reconnects: broadcast::Receiver<Server>,
}

impl Events {
    fn of<C: EventInterface>(client: &C, conn: Conn) -> Self {
        Self {
            conn,
            errors: client.error_rx(),
            reconnects: client.reconnect_rx(),
        }
    }
}

/// Owns the Redis health state; see the module header of `health`.
pub struct Monitor {
    command: Events,
    subscriber: Events,
    signals: mpsc::Receiver<Signal>,
    /// The links as of the last input, for the loader, reconciler and probe.
    links: watch::Sender<Links>,
    state: State,
    status: Arc<RedisStatus>,
    connections: Arc<Connections>,
    metrics: Arc<Metrics>,
    /// When the current outage began, for the log line that ends it.
    down_since: Instant,
}

impl Monitor {
    /// Takes fred's event streams of both clients. Call it before either
    /// client connects: the first connection's event must not be missed.
    pub fn new(
        command: &Client,
        subscriber: &fred::clients::SubscriberClient,
        status: Arc<RedisStatus>,
        connections: Arc<Connections>,
        metrics: Arc<Metrics>,
    ) -> (Self, Health) {
        let (signals_tx, signals) = mpsc::channel(SIGNAL_CAPACITY);
        let (links, links_rx) = watch::channel(Links::default());
        let monitor = Self {
            command: Events::of(command, Conn::Command),
            subscriber: Events::of(subscriber, Conn::Subscriber),
            signals,
            links,
            state: if command.is_clustered() {
                State::cluster()
            } else {
                State::default()
            },
            status,
            connections,
            metrics,
            down_since: Instant::now(),
        };
        let health = Health {
            links: links_rx,
            signals: signals_tx,
        };
        (monitor, health)
    }

    pub async fn run(mut self, cancel: CancellationToken) {
        loop {
            // Biased: fred's events before the reports, and each
            // connection's drops before its reconnects. fred broadcasts a
            // drop before the reconnect that follows it, and a new
            // connection's reconnect before any reply read on it, so a
            // report never overtakes the event that makes it stale.
            let input = tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                r = self.command.errors.recv() => dropped(&self.command, r),
                r = self.subscriber.errors.recv() => dropped(&self.subscriber, r),
                r = self.command.reconnects.recv() => reconnected(&self.command, r),
                r = self.subscriber.reconnects.recv() => reconnected(&self.subscriber, r),
                Some(signal) = self.signals.recv() => Some(from_signal(signal)),
            };
            let Some(input) = input else {
                // fred closes its event streams only when the client quits.
                tracing::debug!("Redis client closed; health monitor stops");
                return;
            };
            if matches!(input, Input::Reconnected(_)) {
                self.metrics.redis_reconnects.inc();
            }
            let transition = self.state.apply(input);
            self.status
                .set(self.state.is_up(), self.state.library_loaded());
            self.links.send_if_modified(|links| {
                let now = self.state.links();
                std::mem::replace(links, now) != now
            });
            if let Some(t) = transition {
                self.announce(t, input);
            }
        }
    }

    fn announce(&mut self, transition: Transition, cause: Input) {
        let up = transition == Transition::Up;
        self.metrics.redis_up.set(i64::from(up));
        let notice = if up {
            tracing::info!(
                outage_ms = self.down_since.elapsed().as_millis() as u64,
                "Redis is back: functions loaded, subscriptions confirmed"
            );
            // Publications made while the gateway was cut off are lost (and
            // it cannot tell which channels had any): every client resyncs.
            ServerMessage::Status {
                redis: Some("up"),
                resync: Some(true),
            }
        } else {
            self.down_since = Instant::now();
            tracing::warn!(?cause, "Redis is unavailable; keeping clients and retrying");
            ServerMessage::Status {
                redis: Some("down"),
                resync: None,
            }
        };
        self.connections.broadcast(frame::text(&notice.to_json()));
    }
}

fn dropped(events: &Events, r: Result<(Error, Option<Server>), RecvError>) -> Option<Input> {
    match r {
        Ok((error, server)) => {
            tracing::debug!(conn = ?events.conn, %error, ?server, "Redis connection error");
            Some(Input::Dropped(events.conn))
        }
        // Missed errors: assume the worst; a reconnect will follow if any.
        Err(RecvError::Lagged(_)) => Some(Input::Dropped(events.conn)),
        Err(RecvError::Closed) => None,
    }
}

fn reconnected(events: &Events, r: Result<Server, RecvError>) -> Option<Input> {
    match r {
        Ok(_) | Err(RecvError::Lagged(_)) => Some(Input::Reconnected(events.conn)),
        Err(RecvError::Closed) => None,
    }
}

fn from_signal(signal: Signal) -> Input {
    match signal {
        Signal::LibraryLoaded { epoch } => Input::LibraryLoaded { epoch },
        Signal::Resubscribed { epoch } => Input::Resubscribed { epoch },
        Signal::Probe {
            at,
            command_ok,
            subscriber_ok,
        } => Input::Probe {
            at,
            command_ok,
            subscriber_ok,
        },
    }
}
