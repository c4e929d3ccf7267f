//! What every connection and request shares, built once at start
//! (`server::start`) and never changed after: the handles to Redis, the hub,
//! the limiters, the audit and the REST answers, and the shutdown signals.
//! Pure code takes the part it uses (`snapshot::Source`, a config section),
//! not this.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fred::prelude::*;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::answers::cache::ApiCache;
use crate::audit::status::AuditStatus;
use crate::audit::writer::PgPool;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::hub::outbox::Limits;
use crate::hub::registry::Connections;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::ratelimit::Limiters;
use crate::redis::health::RedisStatus;
use crate::redis::replay::Replays;
use crate::runtime::Runtime;
use crate::snapshot::Source;

pub struct App {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub hub: Arc<Hub>,
    /// Multiplexed client for commands (snapshots, ingest, probes).
    pub redis: Client,
    pub redis_status: Arc<RedisStatus>,
    pub connections: Arc<Connections>,
    /// Cancelled on SIGTERM/SIGINT: the accept loop stops, HTTP connections
    /// finish their request, the REST watchers stop. WebSockets are not
    /// watching it: the paced drain closes them (`shutdown::drain`).
    pub shutdown: CancellationToken,
    /// Upgraded WebSockets leave hyper's graceful shutdown; this tracks them,
    /// and every task a connection or request starts.
    pub tasks: TaskTracker,
    /// The audit consumer's state (disabled without a database).
    pub audit: Arc<AuditStatus>,
    /// Postgres, for the audit query API (`None` without a database).
    pub pg: Option<PgPool>,
    /// REST read answers, kept current by the hub's publications.
    pub api_cache: Arc<ApiCache>,
    /// Where snapshots come from; its `options` go with every function call.
    pub source: Source,
    /// `?since=` replays in flight, shared by resumes from the same offset.
    pub replays: Replays,
    /// Every rate limiter and the per-IP connection counts (`[limits]`).
    pub limits: Arc<Limiters>,
    /// The token verifier; `None` when `auth.mode = "off"`.
    pub auth: Option<Authenticator>,
    /// Set once when draining starts: `/readyz` turns 503.
    pub draining: Draining,
    /// The `system:runtime` sampler (it samples only while watched).
    pub runtime: Arc<Runtime>,
}

/// Whether the instance is draining; starts false.
#[derive(Default)]
pub struct Draining(AtomicBool);

impl App {
    pub fn queue_limits(&self) -> Limits {
        Limits {
            max_messages: self.config.ws.queue_max_messages,
            max_conflated: self.config.ws.queue_max_conflated,
        }
    }

    /// `/readyz` turns 503 from here on.
    pub fn start_draining(&self) {
        self.draining.0.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.0.load(Ordering::Acquire)
    }
}
