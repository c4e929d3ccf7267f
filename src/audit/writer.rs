//! Writes a batch of audit rows in one transaction: the events (idempotent on
//! `(persona_id, event_id)`), then the tables derived from them, each written
//! so that replaying a batch changes nothing.

use bb8::Pool;
use bb8_postgres::PostgresConnectionManager;
use tokio_postgres::types::{Json, Type};
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

/// One statement, so one round trip and atomic without BEGIN/COMMIT: the
/// batch is parsed once (`b`), the events are inserted idempotently, and the
/// derived tables are written so that replaying a batch changes nothing.
/// Sibling CTEs do not see each other's rows, so a variant posted and killed
/// in the same batch gets its `killed` status on insert, and the UPDATE only
/// reaches variants inserted by earlier batches.
const WRITE_BATCH: &str = "
WITH b AS MATERIALIZED (
    SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(persona_id text, event_id text, ms bigint, seq bigint,
        event_type text, variant_id text, data jsonb, created_at timestamptz)
),
events AS (
    INSERT INTO dashboard_events (persona_id, event_id, stream_ms, stream_seq, event_type, variant_id, event_data, created_at)
    SELECT persona_id, event_id, ms, seq, event_type, variant_id, data, created_at FROM b
    ON CONFLICT (persona_id, event_id) DO NOTHING
    RETURNING 1
),
kills AS (
    SELECT DISTINCT ON (persona_id, variant_id) * FROM b
    WHERE event_type = 'early_kill' AND variant_id IS NOT NULL
    ORDER BY persona_id, variant_id, ms, seq
),
posted AS (
    INSERT INTO variants (persona_id, id, content, predicted_er, pattern_used, status, posted_at)
    SELECT DISTINCT ON (p.persona_id, p.variant_id)
           p.persona_id, p.variant_id, coalesce(p.data->'data'->>'content', ''),
           coalesce((p.data->'data'->>'predicted_er')::float8, 0), p.data->'data'->>'pattern_used',
           CASE WHEN k.variant_id IS NOT NULL OR EXISTS (
                    SELECT 1 FROM variant_kills vk WHERE vk.persona_id = p.persona_id AND vk.variant_id = p.variant_id)
                THEN 'killed' ELSE 'active' END,
           coalesce(to_timestamp((p.data->'data'->>'posted_at')::float8 / 1000), p.created_at)
    FROM b p LEFT JOIN kills k ON k.persona_id = p.persona_id AND k.variant_id = p.variant_id
    WHERE p.event_type = 'variant_posted' AND p.variant_id IS NOT NULL
    ORDER BY p.persona_id, p.variant_id, p.ms, p.seq
    ON CONFLICT (persona_id, id) DO NOTHING
),
killed AS (
    INSERT INTO variant_kills (persona_id, variant_id, reason, final_engagement_rate, sample_size, posted_at, killed_at, event_id)
    SELECT persona_id, variant_id, coalesce(data->'data'->>'kill_reason', ''),
           coalesce((data->'data'->>'final_er')::float8, 0), coalesce((data->'data'->>'sample_size')::bigint, 0),
           to_timestamp((data->'data'->>'posted_at')::float8 / 1000), created_at, event_id
    FROM kills
    ON CONFLICT (persona_id, variant_id) DO NOTHING
),
status AS (
    UPDATE variants v SET status = 'killed' FROM kills k
    WHERE v.persona_id = k.persona_id AND v.id = k.variant_id AND v.status <> 'killed'
),
monitoring AS (
    INSERT INTO variant_monitoring (persona_id, variant_id, current_er, interaction_count, view_count, status, last_updated, last_ms, last_seq)
    SELECT DISTINCT ON (persona_id, variant_id)
           persona_id, variant_id, coalesce((data->'data'->>'current_er')::float8, 0),
           coalesce((data->'data'->>'interaction_count')::bigint, 0), coalesce((data->'data'->>'view_count')::bigint, 0),
           CASE WHEN event_type = 'early_kill' OR data->'data'->>'status' = 'killed' THEN 'killed' ELSE 'active' END,
           created_at, ms, seq
    FROM b
    WHERE event_type IN ('variant_posted', 'performance_update', 'early_kill') AND variant_id IS NOT NULL
    ORDER BY persona_id, variant_id, ms DESC, seq DESC
    ON CONFLICT (persona_id, variant_id) DO UPDATE SET
        current_er = EXCLUDED.current_er, interaction_count = EXCLUDED.interaction_count,
        view_count = EXCLUDED.view_count, status = EXCLUDED.status, last_updated = EXCLUDED.last_updated,
        last_ms = EXCLUDED.last_ms, last_seq = EXCLUDED.last_seq
    WHERE (variant_monitoring.last_ms, variant_monitoring.last_seq) < (EXCLUDED.last_ms, EXCLUDED.last_seq)
)
SELECT count(*) FROM events";

/// Writes `rows`; returns how many events were new (the rest were already audited).
pub async fn write(pool: &PgPool, rows: &[AuditRow]) -> Result<u64, WriteError> {
    let conn = pool
        .get()
        .await
        .map_err(|e| WriteError::Pool(e.to_string()))?;
    let batch = serde_json::to_value(rows).unwrap_or_default();
    let row = conn
        .query_typed_one(WRITE_BATCH, &[(&Json(&batch), Type::JSONB)])
        .await?;
    let inserted: i64 = row.get(0);
    Ok(inserted.max(0) as u64)
}
