//! Analytics from the audit trail (Postgres): summaries and histograms of
//! a subject's events over a time range, computed in SQL.
//!
//! A subject's events come from an [`EventSource`]: the table, the column
//! naming the subject, the type and time columns. Two sources: a persona's
//! audit (`dashboard_events`) and a `[[channels]]` namespace's messages
//! (`channel_events`); the generic queries (events by type, time histograms
//! of events) serve both. What only personas have (posts, kills, ER, kill
//! rate) lives in `persona.rs`; what only namespaces have (messages by type
//! per bucket, channels) in `channels.rs`.

pub mod channels;
pub mod params;
pub mod persona;
pub mod queries;

use std::time::Duration;

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::audit::writer::PgPool;
use crate::metrics::AnalyticsRejection;

/// The longest an analytics query may run before Postgres cancels it: the
/// ranges are bounded, but a persona can hold millions of rows.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a subject's events are and what their columns are called. The
/// names are fixed here, never taken from a request.
#[derive(Debug, Clone, Copy)]
pub struct EventSource {
    pub table: &'static str,
    /// The column that names the subject (`$1` of every query).
    pub key: &'static str,
    pub event_type: &'static str,
    /// The event's own time (`timestamptz`).
    pub time: &'static str,
}

/// A persona's audited events.
pub const PERSONA_EVENTS: EventSource = EventSource {
    table: "dashboard_events",
    key: "persona_id",
    event_type: "event_type",
    time: "created_at",
};

/// A `[[channels]]` namespace's audited messages, by their `type`.
pub const CHANNEL_EVENTS: EventSource = EventSource {
    table: "channel_events",
    key: "namespace",
    event_type: "event_type",
    time: "created_at",
};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("no Postgres connection: {0}")]
    Pool(String),
    #[error("Postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

impl QueryError {
    pub fn reason(&self) -> AnalyticsRejection {
        AnalyticsRejection::DatabaseUnavailable
    }
}

/// Runs `statements` (each SQL text with its parameters) in one read-only
/// transaction under [`STATEMENT_TIMEOUT`]; their rows in order.
pub async fn run(
    pool: &PgPool,
    statements: &[(&str, &[&(dyn ToSql + Sync)])],
) -> Result<Vec<Vec<Row>>, QueryError> {
    let mut conn = pool
        .get()
        .await
        .map_err(|e| QueryError::Pool(e.to_string()))?;
    let tx = conn.build_transaction().read_only(true).start().await?;
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = {}",
        STATEMENT_TIMEOUT.as_millis()
    ))
    .await?;
    let mut out = Vec::with_capacity(statements.len());
    for (sql, params) in statements {
        out.push(tx.query(*sql, params).await?);
    }
    tx.commit().await?;
    Ok(out)
}
