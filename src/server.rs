//! Startup and shutdown; the accept loop is `server/accept.rs`.
//!
//! [`start`] takes an already bound listener, so tests run the real server on
//! port 0; [`serve`] is what the binary runs: bind, start, wait for a signal,
//! drain under a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::answers::{self, cache::ApiCache};
use crate::app::App;
use crate::auth::Authenticator;
use crate::config::{AuthMode, Config};
use crate::hub::registry::Connections;
use crate::hub::Hub;
use crate::keys::Keys;
use crate::metrics::Metrics;
use crate::protocol::close;
use crate::ratelimit::Limiters;
use crate::redis::health::{probe, Monitor, RedisStatus};
use crate::redis::replay::Replays;
use crate::redis::{self as redis_conn, functions, subscriber};
use crate::snapshot::Source;
use accept::{accept_loop, bind};

mod accept;

/// A started gateway.
pub struct Running {
    pub app: Arc<App>,
    pub local_addr: SocketAddr,
    accept: JoinHandle<()>,
    background: CancellationToken,
    /// Every background task (Redis workers, the audit, the pruner); joined
    /// at shutdown, so the audit commits the batch in hand.
    workers: TaskTracker,
    subscriber: SubscriberClient,
}

/// Builds the gateway on `listener` and starts serving. Redis need not be up:
/// the gateway reports not-ready and connects when it can.
pub fn start(config: Config, listener: TcpListener) -> anyhow::Result<Running> {
    let local_addr = listener.local_addr()?;
    let metrics = Arc::new(Metrics::new());
    let command = redis_conn::command_client(&config.redis)?;
    let sub_client = redis_conn::subscriber_client(&config.redis)?;
    let connections = Arc::new(Connections::default());
    let status = Arc::new(RedisStatus::default());
    // Before connecting: the monitor must see the first connection's event.
    let (monitor, health) = Monitor::new(
        &command,
        &sub_client,
        status.clone(),
        connections.clone(),
        metrics.clone(),
    );
    command.connect();
    sub_client.connect();

    let bounds = crate::hub::message::Bounds {
        max_bytes: config.redis.max_message_bytes,
        max_depth: config.limits.max_json_depth,
    };
    let recent = crate::hub::recent::Limits {
        entries: config.ws.recent_entries,
        bytes: config.ws.recent_bytes,
    };
    let (hub, changes) = Hub::new(
        Keys::new(&config.redis.key_prefix),
        metrics.clone(),
        bounds,
        recent,
    );
    let shutdown = CancellationToken::new();
    let background = CancellationToken::new();
    let workers = TaskTracker::new();
    let (audit, pg, losses) = crate::audit::start(
        &config,
        local_addr.port(),
        command.clone(),
        metrics.clone(),
        &workers,
        background.clone(),
    )?;
    let auth = match config.auth.mode {
        AuthMode::Jwt => Some(Authenticator::from_config(&config.auth)?),
        AuthMode::Off => {
            if !local_addr.ip().is_loopback() {
                tracing::warn!(
                    %local_addr,
                    "AUTHENTICATION IS OFF on a non-loopback address: anyone who can reach this port \
                     can read every persona and ingest events; set [auth] mode = \"jwt\" (docs/security.md)"
                );
            }
            None
        }
    };
    let source = Source {
        redis: command.clone(),
        keys: hub.keys().clone(),
        options: functions::options_json(&config).into(),
        optimization: config.optimization.clone(),
        ingest: config.ingest.clone(),
        metrics: metrics.clone(),
        flights: Source::flights(),
    };
    // Connection and request tasks, and the REST watchers: drained first.
    let tasks = TaskTracker::new();
    let api_cache = Arc::new(ApiCache::new(
        config.http.api_cache_max_lag,
        config.http.api_cache_personas,
        answers::cache::Context {
            source: source.clone(),
            hub: hub.clone(),
            metrics: metrics.clone(),
            tasks: tasks.clone(),
            shutdown: shutdown.clone(),
        },
    ));
    let library = functions::configured_library(&config);
    let replays = Replays::new(
        hub.keys().clone(),
        config.ws.max_replay,
        bounds,
        metrics.clone(),
    );
    let runtime = Arc::new(crate::runtime::Runtime::new(
        config.runtime.interval,
        hub.clone(),
        crate::runtime::Sources {
            metrics: metrics.clone(),
            connections: connections.clone(),
            redis_status: status.clone(),
            audit: audit.clone(),
            mem_total: None,
        },
    ));
    let app = Arc::new(App {
        limits: Arc::new(Limiters::new(&config.limits, metrics.clone())),
        config,
        metrics: metrics.clone(),
        hub: hub.clone(),
        redis: command.clone(),
        redis_status: status,
        connections: connections.clone(),
        shutdown,
        tasks,
        audit,
        pg,
        api_cache,
        source,
        replays,
        auth,
        draining: Default::default(),
        runtime,
    });

    // Background work, stopped by `background` and joined at shutdown.
    workers.spawn(app.limits.clone().run_pruner(background.clone()));
    let (repairs, repair_requests) = tokio::sync::mpsc::unbounded_channel();
    let gap_repair = crate::redis::gap::GapRepair {
        hub: hub.clone(),
        source: app.source.clone(),
        max: app.config.ws.max_replay,
        bounds,
        losses,
    };
    workers.spawn(gap_repair.run(repair_requests, background.clone()));
    workers.spawn(subscriber::run_receiver(
        sub_client.clone(),
        hub.clone(),
        repairs.clone(),
        metrics,
        background.clone(),
    ));
    workers.spawn(subscriber::run_reconciler(
        sub_client.clone(),
        hub,
        changes,
        repairs,
        health.clone(),
        crate::redis::reconcile::Options {
            interval: app.config.redis.subscribe_batch_interval,
            // Cancelled on SIGTERM: the drain has begun.
            draining: app.shutdown.clone(),
            metrics: app.metrics.clone(),
        },
        background.clone(),
    ));
    workers.spawn(functions::keep_loaded(
        command.clone(),
        library,
        health.clone(),
        background.clone(),
    ));
    let probe_cfg = probe::Probe {
        health,
        status: app.redis_status.clone(),
        metrics: app.metrics.clone(),
        interval: app.config.redis.probe_interval,
        timeout: app.config.redis.command_timeout,
    };
    workers.spawn(probe::run(
        command,
        sub_client.clone(),
        probe_cfg,
        background.clone(),
    ));
    workers.spawn(monitor.run(background.clone()));
    workers.spawn(app.runtime.clone().run(background.clone()));
    workers.close();

    let accept = tokio::spawn(accept_loop(listener, app.clone()));
    tracing::info!(%local_addr, "pulsegate listening");
    Ok(Running {
        app,
        local_addr,
        accept,
        background,
        workers,
        subscriber: sub_client,
    })
}

impl Running {
    /// Drains (`docs/architecture.md`, "Shutdown"): `/readyz` turns 503 and
    /// the listener closes at once, HTTP connections finish their request;
    /// after `lb_grace` the WebSockets are closed with 1012 and a reconnect
    /// hint in batches over `drain_window`. Returns when the last connection
    /// has ended, or at `drain_timeout`.
    pub async fn shutdown(self) {
        let began = tokio::time::Instant::now();
        let app = self.app;
        let config = &app.config.shutdown;
        let deadline = began + config.drain_timeout;
        app.start_draining();
        app.shutdown.cancel();
        let _ = self.accept.await;
        app.tasks.close();
        let paced = crate::shutdown::drain::run(&app.connections, &app.metrics, config, began);
        let _ = tokio::time::timeout_at(deadline, paced).await;
        if tokio::time::timeout_at(deadline, app.tasks.wait())
            .await
            .is_err()
        {
            // Only what the drain never reached goes away without a hint.
            let unasked = app
                .connections
                .close_all(close::GOING_AWAY, "server shutting down");
            app.metrics.closes_sent(close::GOING_AWAY, unasked);
            tracing::warn!(
                remaining = app.tasks.len(),
                websockets = app.connections.len(),
                closed_with_1001 = unasked,
                "drain timeout reached; dropping the remaining connections"
            );
        }
        self.background.cancel();
        // The audit consumer finishes (commits and acks) the batch in hand.
        if tokio::time::timeout(config.drain_timeout, self.workers.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.workers.len(),
                "background tasks did not stop in time; an audit batch may stay pending in Redis"
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = self.subscriber.quit().await;
            let _ = app.redis.quit().await;
        })
        .await;
        tracing::info!("shutdown complete");
    }
}

/// The binary's `serve`: bind, run until SIGTERM/SIGINT, drain.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let addr = config.listen_addr()?;
    let listener = bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let running = start(config, listener)?;
    crate::shutdown::signal().await;
    running.shutdown().await;
    Ok(())
}
