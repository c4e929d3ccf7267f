//! Writes a batch of audit rows in one transaction: the rows are copied
//! (`COPY ... BINARY`) into a session-local staging table, then one
//! statement inserts the events (unique on the stream id, `(persona_id,
//! stream_ms, stream_seq)`, so an event is never written twice) and the
//! tables derived from them, each written so that replaying a batch changes
//! nothing.
//!
//! COPY rather than a JSON parameter: the messages go over as they are,
//! without being serialized again here nor parsed as a whole batch there.

use std::collections::HashMap;

use bb8::Pool;
use bb8_postgres::PostgresConnectionManager;
use bytes::{BufMut, BytesMut};
use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{accepts, to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::NoTls;

use super::channels;
use super::entry::AuditRow;
use crate::time::system_time_ms;

pub type PgPool = Pool<PostgresConnectionManager<NoTls>>;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("no Postgres connection: {0}")]
    Pool(String),
    #[error("Postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

/// Temporary, so private to the connection and never in the WAL;
/// `ON COMMIT DELETE ROWS` empties it at each commit (and a rollback takes
/// its rows away). Created on first use in a session, so any connection
/// will do, even one a pooler hands out per transaction. The notice of
/// `IF NOT EXISTS` is silenced, or it would be logged at every batch.
const STAGE: &str = r#"
SET LOCAL client_min_messages = warning;
CREATE TEMP TABLE IF NOT EXISTS audit_stage (
    persona_id text COLLATE "C", event_id text, ms bigint, seq bigint,
    event_type text COLLATE "C", variant_id text COLLATE "C", data jsonb,
    created_at timestamptz, first_of_type boolean, latest boolean
) ON COMMIT DELETE ROWS"#;

const COPY: &str = "COPY audit_stage FROM STDIN (FORMAT binary)";

const STAGE_TYPES: [Type; 10] = [
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::JSONB,
    Type::TIMESTAMPTZ,
    Type::BOOL,
    Type::BOOL,
];

/// The staged batch (`b`) is written by one statement: the events, and the
/// derived tables so that replaying a batch changes nothing. Sibling CTEs do
/// not see each other's rows, so a variant posted and killed in the same
/// batch gets its `killed` status on insert, and the UPDATE only reaches
/// variants inserted by earlier batches. Which row of a variant counts (its
/// first post and kill, its latest snapshot) is marked by `flags` before
/// the COPY, so Postgres sorts nothing.
///
/// The events insert comes in two forms (`$on_conflict`): idempotent, and
/// plain for batches read fresh from the group, which cannot be in
/// Postgres yet. `ON CONFLICT` costs every row a speculative insertion (an
/// extra index probe and WAL record); see [`write`] for the fallback.
macro_rules! write_batch {
    ($on_conflict:literal) => {
        concat!(
            "
WITH b AS MATERIALIZED (
    SELECT * FROM audit_stage
),
events AS (
    INSERT INTO dashboard_events (persona_id, event_id, stream_ms, stream_seq, event_type, variant_id, event_data, created_at)
    SELECT persona_id, event_id, ms, seq, event_type, variant_id, data, created_at FROM b
    ",
            $on_conflict,
            "
    RETURNING 1
),
kills AS (
    SELECT * FROM b WHERE event_type = 'early_kill' AND first_of_type
),
posted AS (
    INSERT INTO variants (persona_id, id, content, predicted_er, pattern_used, status, posted_at)
    SELECT p.persona_id, p.variant_id, coalesce(p.data->'data'->>'content', ''),
           coalesce((p.data->'data'->>'predicted_er')::float8, 0), p.data->'data'->>'pattern_used',
           CASE WHEN k.variant_id IS NOT NULL OR EXISTS (
                    SELECT 1 FROM variant_kills vk WHERE vk.persona_id = p.persona_id AND vk.variant_id = p.variant_id)
                THEN 'killed' ELSE 'active' END,
           coalesce(to_timestamp((p.data->'data'->>'posted_at')::float8 / 1000), p.created_at)
    FROM b p LEFT JOIN kills k ON k.persona_id = p.persona_id AND k.variant_id = p.variant_id
    WHERE p.event_type = 'variant_posted' AND p.first_of_type
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
    SELECT persona_id, variant_id, coalesce((data->'data'->>'current_er')::float8, 0),
           coalesce((data->'data'->>'interaction_count')::bigint, 0), coalesce((data->'data'->>'view_count')::bigint, 0),
           CASE WHEN event_type = 'early_kill' OR data->'data'->>'status' = 'killed' THEN 'killed' ELSE 'active' END,
           created_at, ms, seq
    FROM b
    WHERE latest
    ON CONFLICT (persona_id, variant_id) DO UPDATE SET
        current_er = EXCLUDED.current_er, interaction_count = EXCLUDED.interaction_count,
        view_count = EXCLUDED.view_count, status = EXCLUDED.status, last_updated = EXCLUDED.last_updated,
        last_ms = EXCLUDED.last_ms, last_seq = EXCLUDED.last_seq
    WHERE (variant_monitoring.last_ms, variant_monitoring.last_seq) < (EXCLUDED.last_ms, EXCLUDED.last_seq)
)
SELECT count(*) FROM events"
        )
    };
}

const WRITE_IDEMPOTENT: &str =
    write_batch!("ON CONFLICT (persona_id, stream_ms, stream_seq) DO NOTHING");
const WRITE_FRESH: &str = write_batch!("");

/// Writes `rows`; returns how many events were new (the rest were already
/// audited). `fresh`: every row was delivered for the first time (no
/// pending re-read, no claim), so none should be in Postgres. Should one be
/// anyway (another consumer group, a stream recreated under old ids), the
/// plain insert fails on the key and the batch is written again idempotently.
pub async fn write(pool: &PgPool, rows: &[AuditRow], fresh: bool) -> Result<u64, WriteError> {
    if fresh {
        match write_with(pool, rows, WRITE_FRESH).await {
            Err(WriteError::Postgres(e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                tracing::debug!(error = %e, "a fresh batch held audited events; writing it idempotently");
            }
            done => return done,
        }
    }
    write_with(pool, rows, WRITE_IDEMPOTENT).await
}

async fn write_with(pool: &PgPool, rows: &[AuditRow], statement: &str) -> Result<u64, WriteError> {
    let mut conn = pool
        .get()
        .await
        .map_err(|e| WriteError::Pool(e.to_string()))?;
    // Dropped without commit (any error below), it rolls back.
    let tx = conn.transaction().await?;
    // Channel entries go to their own table; a batch mixing both copies
    // its persona rows (batches are per worker, not per stream).
    let mixed;
    let (rows, channel_new) = if rows.iter().any(channels::is_channel) {
        let (chan, persona): (Vec<&AuditRow>, Vec<&AuditRow>) =
            rows.iter().partition(|r| channels::is_channel(r));
        let inserted = channels::insert(&tx, &chan).await?;
        mixed = persona.into_iter().cloned().collect::<Vec<_>>();
        (&mixed[..], inserted)
    } else {
        (rows, 0)
    };
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(channel_new);
    }
    tx.batch_execute(STAGE).await?;
    let sink = tx.copy_in(COPY).await?;
    let writer = BinaryCopyInWriter::new(sink, &STAGE_TYPES);
    pin_mut!(writer);
    let flags = flags(rows);
    for (r, f) in rows.iter().zip(&flags) {
        writer
            .as_mut()
            .write(&[
                &r.persona_id,
                &r.event_id,
                &r.ms,
                &r.seq,
                &r.event_type,
                &r.variant_id,
                &JsonText(&r.data),
                &system_time_ms(r.created_ms),
                &f.first_of_type,
                &f.latest,
            ])
            .await?;
    }
    writer.finish().await?;
    let row = tx.query_typed_one(statement, &[]).await?;
    tx.commit().await?;
    let inserted: i64 = row.get(0);
    Ok(inserted.max(0) as u64 + channel_new)
}

/// Which rows of a batch the derived tables take, per variant: its first
/// `variant_posted` and first `early_kill` (`first_of_type`), and the
/// latest of its events (`latest`, for `variant_monitoring`). By stream id,
/// not by position: a batch may mix a persona's redelivered entries.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Flags {
    pub first_of_type: bool,
    pub latest: bool,
}

pub(crate) fn flags(rows: &[AuditRow]) -> Vec<Flags> {
    let mut flags = vec![Flags::default(); rows.len()];
    let mut first: HashMap<(&str, &str, &str), usize> = HashMap::new();
    let mut latest: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        let Some(v) = r.variant_id.as_deref() else {
            continue;
        };
        let key = (r.persona_id.as_str(), v);
        let at = |j: usize| (rows[j].ms, rows[j].seq);
        match r.event_type.as_str() {
            "variant_posted" | "early_kill" => {
                let slot = first
                    .entry((key.0, key.1, r.event_type.as_str()))
                    .or_insert(i);
                if at(i) < at(*slot) {
                    *slot = i;
                }
            }
            "performance_update" => {}
            _ => continue,
        }
        let slot = latest.entry(key).or_insert(i);
        if at(i) > at(*slot) {
            *slot = i;
        }
    }
    for i in first.into_values() {
        flags[i].first_of_type = true;
    }
    for i in latest.into_values() {
        flags[i].latest = true;
    }
    flags
}

/// JSON text that is already known to be valid, sent as it is (`jsonb`'s
/// binary form is a version byte and the text).
#[derive(Debug)]
struct JsonText<'a>(&'a str);

impl ToSql for JsonText<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.put_u8(1);
        }
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    accepts!(JSON, JSONB);
    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(persona: &str, id: (i64, i64), event_type: &str, variant: Option<&str>) -> AuditRow {
        AuditRow {
            persona_id: persona.into(),
            event_id: format!("{}-{}", id.0, id.1),
            ms: id.0,
            seq: id.1,
            event_type: event_type.into(),
            variant_id: variant.map(Into::into),
            data: "{}".into(),
            created_ms: id.0,
        }
    }

    fn marked(rows: &[AuditRow]) -> Vec<(bool, bool)> {
        flags(rows)
            .into_iter()
            .map(|f| (f.first_of_type, f.latest))
            .collect()
    }

    #[test]
    fn each_variant_gets_its_first_post_and_kill_and_its_latest_event() {
        let rows = [
            row("p", (1, 0), "variant_posted", Some("a")),
            row("p", (2, 0), "performance_update", Some("a")),
            row("q", (2, 0), "performance_update", Some("a")),
            row("p", (3, 0), "early_kill", Some("a")),
            row("p", (3, 1), "pattern_fatigue", None),
            row("p", (4, 0), "variant_posted", Some("b")),
            row("p", (4, 1), "mystery", Some("b")),
        ];
        assert_eq!(
            marked(&rows),
            [
                (true, false),
                (false, false),
                (false, true),
                (true, true),
                (false, false),
                (true, true),
                (false, false),
            ]
        );
    }

    /// A batch can hold a persona's redelivered entries out of order.
    #[test]
    fn order_is_the_stream_id_not_the_position() {
        let rows = [
            row("p", (9, 0), "performance_update", Some("a")),
            row("p", (5, 0), "variant_posted", Some("a")),
            row("p", (7, 0), "early_kill", Some("a")),
            row("p", (6, 0), "early_kill", Some("a")),
            row("p", (5, 1), "variant_posted", Some("a")),
        ];
        assert_eq!(
            marked(&rows),
            [
                (false, true),
                (true, false),
                (false, false),
                (true, false),
                (false, false),
            ]
        );
    }
}
