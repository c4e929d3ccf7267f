//! State shared by every connection and request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fred::prelude::*;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::status::AuditStatus;
use crate::audit::writer::PgPool;
use crate::config::Config;
use crate::hub::outbox::Limits;
use crate::hub::registry::Connections;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::redis::health::RedisStatus;

pub struct App {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub hub: Arc<Hub>,
    /// Multiplexed client for commands (snapshots, ingest, probes).
    pub redis: Client,
    pub redis_status: Arc<RedisStatus>,
    pub connections: Arc<Connections>,
    /// Cancelled on SIGTERM/SIGINT: WebSockets close with 1001.
    pub shutdown: CancellationToken,
    /// Upgraded WebSockets leave hyper's graceful shutdown; this tracks them.
    pub tasks: TaskTracker,
    /// The audit consumer's state (disabled without a database).
    pub audit: Arc<AuditStatus>,
    /// Postgres, for the audit query API (`None` without a database).
    pub pg: Option<PgPool>,
    /// REST read answers, kept current by the hub's publications.
    pub api_cache: crate::http::cache::ApiCache,
    /// The `[ingest]` options as the JSON argument of every function call.
    pub function_options: String,
    /// Every rate limiter and the per-IP connection counts (`[limits]`).
    pub limits: Arc<crate::ratelimit::Limiters>,
    /// The token verifier; `None` when `auth.mode = "off"`.
    pub auth: Option<crate::auth::Authenticator>,
    draining: AtomicBool,
}

impl App {
    pub fn new(
        config: Config,
        metrics: Arc<Metrics>,
        hub: Arc<Hub>,
        redis: Client,
        redis_status: Arc<RedisStatus>,
        connections: Arc<Connections>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            function_options: crate::redis::functions::options_json(&config),
            limits: Arc::new(crate::ratelimit::Limiters::new(
                &config.limits,
                metrics.clone(),
            )),
            auth: None,
            api_cache: crate::http::cache::ApiCache::new(
                config.http.api_cache_max_lag,
                config.http.api_cache_personas,
            ),
            config,
            metrics,
            hub,
            redis,
            redis_status,
            connections,
            shutdown,
            tasks: TaskTracker::new(),
            audit: Arc::new(AuditStatus::default()),
            pg: None,
            draining: AtomicBool::new(false),
        }
    }

    pub fn queue_limits(&self) -> Limits {
        Limits {
            max_messages: self.config.ws.queue_max_messages,
            max_conflated: self.config.ws.queue_max_conflated,
        }
    }

    /// `/readyz` turns 503 from here on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}
