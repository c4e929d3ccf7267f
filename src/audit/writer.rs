//! Writes a batch of audit rows in one transaction: the events (idempotent on
//! `(persona_id, event_id)`), then the tables derived from them, each written
//! so that replaying a batch changes nothing.

use std::sync::LazyLock;

use bb8::Pool;
use bb8_postgres::PostgresConnectionManager;
use tokio_postgres::types::Json;
use tokio_postgres::NoTls;

use super::entry::AuditRow;

pub type PgPool = Pool<PostgresConnectionManager<NoTls>>;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("no Postgres connection: {0}")]
    Pool(String),
    #[error("Postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

/// The batch as a record set: every statement reads it from `$1`.
const BATCH: &str =
    "jsonb_to_recordset($1::jsonb) AS b(persona_id text, event_id text, ms bigint, seq bigint, \
                     event_type text, variant_id text, data jsonb, created_at timestamptz)";

static STATEMENTS: LazyLock<[String; 5]> = LazyLock::new(statements);

fn statements() -> [String; 5] {
    [
        format!(
            "INSERT INTO dashboard_events (persona_id, event_id, stream_ms, stream_seq, event_type, variant_id, event_data, created_at)
             SELECT persona_id, event_id, ms, seq, event_type, variant_id, data, created_at FROM {BATCH}
             ON CONFLICT (persona_id, event_id) DO NOTHING"
        ),
        format!(
            "INSERT INTO variants (persona_id, id, content, predicted_er, pattern_used, status, posted_at)
             SELECT persona_id, variant_id, coalesce(data->'data'->>'content', ''),
                    coalesce((data->'data'->>'predicted_er')::float8, 0), data->'data'->>'pattern_used', 'active',
                    coalesce(to_timestamp((data->'data'->>'posted_at')::float8 / 1000), created_at)
             FROM {BATCH} WHERE event_type = 'variant_posted' AND variant_id IS NOT NULL
             ORDER BY ms, seq
             ON CONFLICT (persona_id, id) DO NOTHING"
        ),
        format!(
            "INSERT INTO variant_kills (persona_id, variant_id, reason, final_engagement_rate, sample_size, posted_at, killed_at, event_id)
             SELECT persona_id, variant_id, coalesce(data->'data'->>'kill_reason', ''),
                    coalesce((data->'data'->>'final_er')::float8, 0), coalesce((data->'data'->>'sample_size')::bigint, 0),
                    to_timestamp((data->'data'->>'posted_at')::float8 / 1000), created_at, event_id
             FROM {BATCH} WHERE event_type = 'early_kill' AND variant_id IS NOT NULL
             ON CONFLICT (persona_id, variant_id) DO NOTHING"
        ),
        format!(
            "UPDATE variants v SET status = 'killed' FROM {BATCH}
             WHERE b.event_type = 'early_kill' AND v.persona_id = b.persona_id AND v.id = b.variant_id AND v.status <> 'killed'"
        ),
        format!(
            "INSERT INTO variant_monitoring (persona_id, variant_id, current_er, interaction_count, view_count, status, last_updated, last_ms, last_seq)
             SELECT DISTINCT ON (persona_id, variant_id)
                    persona_id, variant_id, coalesce((data->'data'->>'current_er')::float8, 0),
                    coalesce((data->'data'->>'interaction_count')::bigint, 0), coalesce((data->'data'->>'view_count')::bigint, 0),
                    CASE WHEN event_type = 'early_kill' OR data->'data'->>'status' = 'killed' THEN 'killed' ELSE 'active' END,
                    created_at, ms, seq
             FROM {BATCH}
             WHERE event_type IN ('variant_posted', 'performance_update', 'early_kill') AND variant_id IS NOT NULL
             ORDER BY persona_id, variant_id, ms DESC, seq DESC
             ON CONFLICT (persona_id, variant_id) DO UPDATE SET
                 current_er = EXCLUDED.current_er, interaction_count = EXCLUDED.interaction_count,
                 view_count = EXCLUDED.view_count, status = EXCLUDED.status, last_updated = EXCLUDED.last_updated,
                 last_ms = EXCLUDED.last_ms, last_seq = EXCLUDED.last_seq
             WHERE (variant_monitoring.last_ms, variant_monitoring.last_seq) < (EXCLUDED.last_ms, EXCLUDED.last_seq)"
        ),
    ]
}

/// Writes `rows`; returns how many events were new (the rest were already audited).
pub async fn write(pool: &PgPool, rows: &[AuditRow]) -> Result<u64, WriteError> {
    let mut conn = pool
        .get()
        .await
        .map_err(|e| WriteError::Pool(e.to_string()))?;
    let batch = serde_json::to_value(rows).unwrap_or_default();
    let param = Json(&batch);
    let tx = conn.transaction().await?;
    let mut inserted = 0;
    for (i, sql) in STATEMENTS.iter().enumerate() {
        let n = tx.execute(sql.as_str(), &[&param]).await?;
        if i == 0 {
            inserted = n;
        }
    }
    tx.commit().await?;
    Ok(inserted)
}
