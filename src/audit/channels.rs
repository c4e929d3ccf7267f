//! Audit rows of `[[channels]]` channels (`pulse_publish` entries): their
//! own table, `channel_events` (`docs/audit.md`), written in the batch's
//! transaction beside the persona events. A channel stream's key carries
//! `{<ns>:<id>}`, so its rows' `persona_id` holds a colon, which no persona
//! id may (`keys.rs`).

use tokio_postgres::Transaction;

use super::entry::AuditRow;
use crate::time::system_time_ms;

/// Idempotent: a redelivered entry is skipped on the key. Arrays, not a
/// COPY: channel batches are small beside persona ones, and they need no
/// staging for derived tables.
const INSERT: &str = "
INSERT INTO channel_events
    (namespace, channel_id, event_id, stream_ms, stream_seq, event_type, event_data, created_at)
SELECT ns, id, eid, ms, seq, t, d::jsonb, at
FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::text[], $7::text[], $8::timestamptz[])
    AS b(ns, id, eid, ms, seq, t, d, at)
ON CONFLICT DO NOTHING";

/// Whether `row` is a channel's (its stream key's tag is `<ns>:<id>`).
pub fn is_channel(row: &AuditRow) -> bool {
    row.persona_id.contains(':')
}

/// Inserts the channel rows; returns how many were new.
pub async fn insert(
    tx: &Transaction<'_>,
    rows: &[&AuditRow],
) -> Result<u64, tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut ns = Vec::with_capacity(rows.len());
    let mut id = Vec::with_capacity(rows.len());
    for r in rows {
        let (n, i) = r.persona_id.split_once(':').unwrap_or(("", &r.persona_id));
        ns.push(n);
        id.push(i);
    }
    let eid: Vec<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
    let ms: Vec<i64> = rows.iter().map(|r| r.ms).collect();
    let seq: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    let t: Vec<&str> = rows.iter().map(|r| r.event_type.as_str()).collect();
    let d: Vec<&str> = rows.iter().map(|r| r.data.as_str()).collect();
    let at: Vec<std::time::SystemTime> =
        rows.iter().map(|r| system_time_ms(r.created_ms)).collect();
    tx.execute(INSERT, &[&ns, &id, &eid, &ms, &seq, &t, &d, &at])
        .await
}
