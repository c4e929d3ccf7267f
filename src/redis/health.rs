//! Redis health: a probe that PINGs both connections, so a Redis that dies
//! or freezes (SIGSTOP) is noticed within `probe_interval + command_timeout`.
//! Transitions are shown on `/readyz`, in `pulsegate_redis_up`, and sent to
//! every client as `{"type":"status","redis":"down"|"up"}`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::protocol::ServerMessage;
use crate::ws::frame;
use crate::ws::registry::Connections;

#[derive(Default)]
pub struct RedisStatus {
    up: AtomicBool,
    /// The functions library is loaded on the current connection.
    library: AtomicBool,
}

impl RedisStatus {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn library_loaded(&self) -> bool {
        self.library.load(Ordering::Acquire)
    }

    pub fn set_library_loaded(&self, loaded: bool) {
        self.library.store(loaded, Ordering::Release);
    }
}

pub struct Probe {
    pub command: Client,
    pub subscriber: SubscriberClient,
    pub status: Arc<RedisStatus>,
    pub connections: Arc<Connections>,
    pub metrics: Arc<Metrics>,
    pub interval: Duration,
    pub timeout: Duration,
}

async fn ping<C: ClientLike>(client: &C, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, client.ping::<Value>(None)).await,
        Ok(Ok(_))
    )
}

impl Probe {
    pub async fn run(self, cancel: CancellationToken) {
        let mut reconnects_cmd = self.command.reconnect_rx();
        let mut reconnects_sub = self.subscriber.reconnect_rx();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                Ok(_) = reconnects_cmd.recv() => { self.metrics.redis_reconnects.inc(); continue; }
                Ok(_) = reconnects_sub.recv() => { self.metrics.redis_reconnects.inc(); continue; }
                _ = tick.tick() => {}
            }
            let (a, b) = tokio::join!(
                ping(&self.command, self.timeout),
                ping(&self.subscriber, self.timeout)
            );
            self.set(a && b);
        }
    }

    fn set(&self, up: bool) {
        if self.status.up.swap(up, Ordering::AcqRel) == up {
            return;
        }
        self.metrics.redis_up.set(i64::from(up));
        let word = if up { "up" } else { "down" };
        if up {
            tracing::info!("Redis is reachable");
        } else {
            tracing::warn!("Redis is unreachable; keeping clients and retrying");
        }
        let notice = ServerMessage::Status {
            redis: Some(word),
            resync: None,
        }
        .to_json();
        self.connections.broadcast(frame::text(&notice));
    }
}
