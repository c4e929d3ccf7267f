//! The audit trail: every ingested event lands in Postgres exactly once.
//!
//! Redis streams → [`consumer`] (consumer group, claims, batching) →
//! [`writer`] (one transaction per batch, replayable) → XACK. [`migrate`]
//! owns the schema, [`status`] the lag figures. docs/audit.md states the
//! guarantees and how they are tested.

pub mod channels;
pub mod consumer;
pub mod discover;
pub mod entry;
pub mod losses;
pub mod migrate;
pub mod status;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use bb8_postgres::PostgresConnectionManager;
use fred::prelude::*;
use tokio::sync::{mpsc, watch};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics::Metrics;
use status::AuditStatus;
use writer::PgPool;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("invalid database URL: {0}")]
    Url(#[source] tokio_postgres::Error),
    #[error("cannot connect to Postgres: {0}")]
    Connect(String),
    #[error(transparent)]
    Migrate(#[from] migrate::MigrateError),
}

/// A pool for `url` (connections are made lazily, with a timeout).
pub fn pool(url: &str, size: u32, timeout: Duration) -> Result<PgPool, AuditError> {
    let manager =
        PostgresConnectionManager::new_from_stringlike(url, NoTls).map_err(AuditError::Url)?;
    Ok(bb8::Pool::builder()
        .max_size(size)
        .connection_timeout(timeout)
        .build_unchecked(manager))
}

/// Applies the migrations (`pulsegate migrate`, and at `serve` start-up).
pub async fn migrate(url: &str) -> Result<Vec<i32>, AuditError> {
    let (mut client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| AuditError::Connect(e.to_string()))?;
    let driver = tokio::spawn(connection);
    let applied = migrate::run(&mut client).await;
    drop(client);
    let _ = driver.await;
    Ok(applied?)
}

/// The consumer name: configured, else `<hostname>-<listen port>`. Stable
/// across restarts of an instance, so a restarted instance re-reads its own
/// pending entries at once instead of waiting for another to claim them;
/// distinct between instances of one host, which cannot share a port. Only
/// an ephemeral port (0, as in tests) falls back to the process id.
pub fn consumer_name(config: &Config, port: u16) -> String {
    config.audit.consumer.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "gateway".into());
        let configured = config.listen_addr().map(|a| a.port()).unwrap_or(0);
        if configured != 0 {
            format!("{host}-{port}")
        } else {
            format!("{host}-pid{}", std::process::id())
        }
    })
}

/// Starts the audit consumer if a database is configured and audit is on:
/// migrations are retried until Postgres answers, then the consumer runs.
/// Returns the status handle (`enabled: false` when off), the pool, and
/// where the gap repair sends the ranges a failover lost (when consuming).
pub type Started = (
    Arc<AuditStatus>,
    Option<PgPool>,
    Option<crate::redis::gap::Losses>,
);

pub fn start(
    config: &Config,
    port: u16,
    redis: Client,
    metrics: Arc<Metrics>,
    tasks: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<Started> {
    let Some(url) = config.database.url.clone() else {
        return Ok((Arc::new(AuditStatus::default()), None, None));
    };
    let pool = pool(&url, config.audit.pool_size, config.redis.command_timeout)?;
    if !config.audit.enabled {
        // The query API still reads Postgres; this instance just does not consume.
        return Ok((Arc::new(AuditStatus::default()), Some(pool), None));
    }
    let status = Arc::new(AuditStatus::enabled());
    let name = consumer_name(config, port);
    let (lost_tx, lost_rx) = mpsc::unbounded_channel();
    let mut senders = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..config.audit.workers {
        let (tx, rx) = watch::channel(discover::Streams::default());
        senders.push(tx);
        workers.push(consumer::Consumer {
            redis: redis.clone(),
            pool: pool.clone(),
            cfg: config.audit.clone(),
            consumer: name.clone(),
            metrics: metrics.clone(),
            status: status.clone(),
            streams: rx,
            lost: lost_tx.clone(),
        });
    }
    let discovery = discover::Discovery {
        redis: redis.clone(),
        prefix: config.redis.key_prefix.clone(),
        group: config.audit.group.clone(),
        interval: config.audit.discover_interval,
        workers: senders,
        lost: lost_rx,
        metrics: metrics.clone(),
        status: status.clone(),
    };
    let (losses, lost_ranges) = mpsc::channel(losses::CAPACITY);
    tasks.spawn(losses::run(
        pool.clone(),
        lost_ranges,
        metrics.clone(),
        cancel.clone(),
    ));
    let shards = config.audit.workers;
    let st = status.clone();
    let c = cancel.clone();
    tasks.spawn(async move {
        let mut delay = Duration::from_millis(200);
        loop {
            match migrate(&url).await {
                Ok(applied) => {
                    st.set_postgres(true, None);
                    tracing::info!(?applied, consumer = %name, workers = shards, "audit schema ready; consuming streams");
                    break;
                }
                Err(e) => {
                    st.set_postgres(false, Some(e.to_string()));
                    tracing::warn!(error = %e, retry_in = ?delay, "audit: cannot migrate yet");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = c.cancelled() => return,
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        let mut tasks: Vec<_> = workers
            .into_iter()
            .map(|w| tokio::spawn(w.run(c.clone())))
            .collect();
        tasks.push(tokio::spawn(discovery.run(c.clone())));
        for t in tasks {
            let _ = t.await;
        }
    });
    tasks.spawn(status::run(
        redis,
        config.audit.group.clone(),
        status.clone(),
        metrics,
        Duration::from_secs(1),
        cancel,
    ));
    Ok((status, Some(pool), Some(losses)))
}

/// Counts and logs a failed Redis command of the audit (`stage` names it).
fn redis_failed(
    metrics: &Metrics,
    status: &AuditStatus,
    stage: &'static str,
    e: &fred::error::Error,
) {
    status.failed();
    metrics
        .audit_failures
        .get_or_create(&crate::metrics::ReasonLabel { reason: stage })
        .inc();
    tracing::warn!(stage, error = %e, "audit: Redis command failed");
}
