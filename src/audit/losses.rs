//! Ranges of stream entries a failover lost, recorded in
//! `audit_lost_ranges` (`docs/audit.md`, "Entries a failover lost"). The
//! gap repair detects them (`redis/gap.rs`); the rows audited before the
//! loss stay, and the `dashboard_events_lost` view names them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::writer::PgPool;
use crate::metrics::Metrics;
use crate::redis::gap::LostRange;

/// Ranges waiting for Postgres; a failover loses a few, one per persona.
pub const CAPACITY: usize = 1024;
/// Pause before writing a range again (Postgres down or not migrated yet).
const RETRY_DELAY: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
enum RecordError {
    #[error("no Postgres connection: {0}")]
    Pool(String),
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
}

/// Writes each range until it is in; stops with `cancel`.
pub async fn run(
    pool: PgPool,
    mut ranges: mpsc::Receiver<LostRange>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    loop {
        let range = tokio::select! {
            _ = cancel.cancelled() => return,
            r = ranges.recv() => match r { Some(r) => r, None => return },
        };
        loop {
            match record(&pool, &range).await {
                Ok(new) => {
                    if new {
                        metrics.continuity.lost_ranges.inc();
                        tracing::warn!(
                            stream = %range.stream,
                            after = ?range.after,
                            through = ?range.through,
                            "a failover lost stream entries; recorded in audit_lost_ranges"
                        );
                    }
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot record a lost range yet; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(RETRY_DELAY) => {}
                    }
                }
            }
        }
    }
}

/// Inserts the range; false when another instance (or a retried repair)
/// recorded it already.
async fn record(pool: &PgPool, range: &LostRange) -> Result<bool, RecordError> {
    let conn = pool
        .get()
        .await
        .map_err(|e| RecordError::Pool(e.to_string()))?;
    let big = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let (after_ms, after_seq) = match range.after {
        Some((ms, seq)) => (Some(big(ms)), Some(big(seq))),
        None => (None, None),
    };
    let (through_ms, through_seq) = (big(range.through.0), big(range.through.1));
    let n = conn
        .execute(
            "INSERT INTO audit_lost_ranges
                (stream_key, persona_id, after_ms, after_seq, through_ms, through_seq, reason)
             VALUES ($1, $2, $3, $4, $5, $6, 'failover')
             ON CONFLICT DO NOTHING",
            &[
                &range.stream,
                &range.persona,
                &after_ms,
                &after_seq,
                &through_ms,
                &through_seq,
            ],
        )
        .await?;
    Ok(n == 1)
}
