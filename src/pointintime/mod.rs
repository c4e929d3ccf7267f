//! Point-in-time view: a persona's dashboard as it stood at a past instant,
//! rebuilt from the audit trail (`GET /api/snapshot/{persona_id}?at=`).
//!
//! "As it stood at `at`": the events whose stream id (Redis time at ingest)
//! is at or before `at`, read as `pulse_snapshot` would have read them with
//! its clock at `at`. Only the rows that can change the answer are read,
//! so the cost follows the persona's variants and its last hour of updates,
//! not its whole history:
//! - every `variant_posted` and `early_kill` (the counters, sets and kills),
//!   each post with its incarnation's newest non-stale update (totals);
//! - the non-stale updates whose event time is in the last 60 minutes
//!   before `at` or up to an hour after it (the minute buckets: an update
//!   older than that can neither be in a window nor move a bucket that is).
//!   An update ingested before `at` but timestamped more than an hour after
//!   it (a publisher's clock far ahead) would have moved Redis' buckets and
//!   is left out: reading every later row to find such updates would make
//!   an old `at` cost the whole history after it.
//!
//! The replay itself is `model.rs`; it assumes the current `[ingest]`
//! settings were those in force when the events were ingested.

pub mod model;
pub mod zset;

use tokio_postgres::Row;

use crate::analytics::queries::num;
use crate::analytics::{run, QueryError};
use crate::audit::writer::PgPool;
use crate::dashboard::RawSnapshot;
use crate::time::system_time_ms;
use model::{Event, KillEvent, Post, Settings, Tick, Totals};

fn events_sql() -> String {
    let d = "pk.d";
    let u = "u.d";
    format!(
        "WITH pk AS (
             SELECT stream_ms, stream_seq, event_type, variant_id,
                    (extract(epoch FROM created_at) * 1000)::bigint AS ts, event_data->'data' AS d,
                    lead(stream_ms) OVER w AS next_ms, lead(stream_seq) OVER w AS next_seq
             FROM dashboard_events
             WHERE persona_id = $1 AND event_type IN ('variant_posted', 'early_kill')
               AND stream_ms <= $2 AND variant_id IS NOT NULL
             WINDOW w AS (PARTITION BY variant_id, event_type ORDER BY stream_ms, stream_seq)
         )
         SELECT pk.stream_ms, pk.stream_seq, pk.event_type, pk.variant_id, pk.ts,
                CASE WHEN jsonb_typeof({d}->'content') = 'string' THEN {d}->>'content' END,
                {pred}, CASE WHEN jsonb_typeof({d}->'pattern_used') = 'string' THEN {d}->>'pattern_used' END,
                {posted_at},
                CASE WHEN jsonb_typeof({d}->'kill_reason') = 'string' THEN {d}->>'kill_reason' END,
                {final_er}, {sample}, {killed_at},
                {views}, {inters}, {lu}
         FROM pk LEFT JOIN LATERAL (
             SELECT e.event_data->'data' AS d FROM dashboard_events e
             WHERE pk.event_type = 'variant_posted' AND e.persona_id = $1 AND e.variant_id = pk.variant_id
               AND (e.stream_ms, e.stream_seq) > (pk.stream_ms, pk.stream_seq)
               AND (pk.next_ms IS NULL OR (e.stream_ms, e.stream_seq) < (pk.next_ms, pk.next_seq))
               AND e.stream_ms <= $2 AND e.event_type = 'performance_update'
               AND (e.event_data->'data'->'stale') IS DISTINCT FROM 'true'::jsonb
             ORDER BY e.stream_ms DESC, e.stream_seq DESC LIMIT 1
         ) u ON true
         ORDER BY pk.stream_ms, pk.stream_seq",
        pred = num(&format!("{d}->'predicted_er'")),
        posted_at = num(&format!("{d}->'posted_at'")),
        final_er = num(&format!("{d}->'final_er'")),
        sample = num(&format!("{d}->'sample_size'")),
        killed_at = num(&format!("{d}->'killed_at'")),
        views = num(&format!("{u}->'view_count'")),
        inters = num(&format!("{u}->'interaction_count'")),
        lu = num(&format!("{u}->'last_updated'")),
    )
}

fn ticks_sql() -> String {
    format!(
        "SELECT stream_ms, stream_seq, variant_id, (extract(epoch FROM created_at) * 1000)::bigint,
                {dv}, {di}
         FROM dashboard_events
         WHERE persona_id = $1 AND event_type = 'performance_update' AND created_at >= $3
           AND created_at < $4 AND stream_ms <= $2 AND variant_id IS NOT NULL
           AND (event_data->'data'->'stale') IS DISTINCT FROM 'true'::jsonb
         ORDER BY stream_ms, stream_seq",
        dv = num("event_data->'data'->'view_delta'"),
        di = num("event_data->'data'->'interaction_delta'"),
    )
}

/// How far past `at` an update's own time may be and still be replayed.
const FUTURE_SLACK_MS: i64 = 3_600_000;

const OFFSET_SQL: &str = "SELECT stream_ms, stream_seq FROM dashboard_events
     WHERE persona_id = $1 AND stream_ms <= $2 ORDER BY stream_ms DESC, stream_seq DESC LIMIT 1";

const KNOWN_SQL: &str = "SELECT 1 FROM dashboard_events WHERE persona_id = $1 LIMIT 1";

fn int(r: &Row, i: usize) -> Option<i64> {
    r.get::<_, Option<f64>>(i).map(|x| x as i64)
}

fn event(r: &Row) -> Option<Event> {
    let id = (r.get(0), r.get(1));
    let kind: String = r.get(2);
    let variant: String = r.get(3);
    let ts: i64 = r.get(4);
    if kind == "variant_posted" {
        let latest = match (int(r, 13), int(r, 14)) {
            (Some(views), Some(interactions)) => Some(Totals {
                views: views.max(0) as u64,
                interactions: interactions.max(0) as u64,
                last_updated: int(r, 15).unwrap_or(ts),
            }),
            _ => None,
        };
        return Some(Event::Post(Post {
            id,
            ts,
            variant,
            content: r.get::<_, Option<String>>(5).unwrap_or_default(),
            predicted_er: r.get::<_, Option<f64>>(6).unwrap_or(0.0),
            pattern: r.get(7),
            posted_at: int(r, 8).unwrap_or(ts),
            latest,
        }));
    }
    Some(Event::Kill(KillEvent {
        id,
        variant,
        reason: r.get(9),
        final_er: r.get(10),
        sample_size: int(r, 11).map(|n| n.max(0) as u64),
        killed_at: int(r, 12).unwrap_or(ts),
        posted_at: int(r, 8).unwrap_or(ts),
    }))
}

fn tick(r: &Row) -> Tick {
    Tick {
        id: (r.get(0), r.get(1)),
        variant: r.get(2),
        ts: r.get(3),
        view_delta: int(r, 4).unwrap_or(0).max(0) as u64,
        interaction_delta: int(r, 5).unwrap_or(0).max(0) as u64,
    }
}

/// The snapshot of `persona` at `at` (epoch ms), or `None` when the audit
/// holds no event of the persona at all.
pub async fn snapshot_at(
    pool: &PgPool,
    persona: &str,
    at: i64,
    settings: &Settings,
) -> Result<Option<RawSnapshot>, QueryError> {
    // Buckets of minutes (nm - 60, nm] are in a window at `at`.
    let first_minute = (at.div_euclid(60_000) - 59) * 60_000;
    let bucket_from = system_time_ms(first_minute);
    // Event times more than an hour after `at` are left out (see the module
    // comment), so the index range ends near `at` however old `at` is.
    let bucket_to = system_time_ms(at.saturating_add(FUTURE_SLACK_MS));
    let (events, ticks) = (events_sql(), ticks_sql());
    type Params<'a> = &'a [&'a (dyn tokio_postgres::types::ToSql + Sync)];
    let one: Params = &[&persona];
    let two: Params = &[&persona, &at];
    let four: Params = &[&persona, &at, &bucket_from, &bucket_to];
    let rows = run(
        pool,
        &[
            (KNOWN_SQL, one),
            (OFFSET_SQL, two),
            (events.as_str(), two),
            (ticks.as_str(), four),
        ],
    )
    .await?;
    let [known, offset, events, ticks] = rows.as_slice() else {
        return Ok(None);
    };
    if known.is_empty() {
        return Ok(None);
    }
    let offset = offset
        .first()
        .map(|r| format!("{}-{}", r.get::<_, i64>(0), r.get::<_, i64>(1)));
    let events = events.iter().filter_map(event).collect();
    let ticks: Vec<Tick> = ticks.iter().map(tick).collect();
    Ok(Some(model::rebuild(events, &ticks, offset, at, settings)))
}

/// The rebuild's statements, named with their parameter types, for the
/// benchmark (`src/bench_sql.rs`).
#[cfg(test)]
pub(crate) fn bench_statements() -> Vec<(&'static str, &'static str, String)> {
    vec![
        ("pit_offset", "text, bigint", OFFSET_SQL.to_owned()),
        ("pit_events", "text, bigint", events_sql()),
        (
            "pit_ticks",
            "text, bigint, timestamptz, timestamptz",
            ticks_sql(),
        ),
    ]
}

/// The settings the gateway gives the functions library (`[ingest]`, and
/// the library's own default of 20 recent kills, which it does not set).
pub fn settings(ingest: &crate::config::IngestConfig) -> Settings {
    Settings {
        pattern_window_ms: ingest.pattern_window.as_millis() as i64,
        fatigue_threshold: ingest.pattern_fatigue_threshold,
        kill_rate_window_ms: ingest.kill_rate_window.as_millis() as i64,
        killed_ttl_ms: ingest.killed_ttl.as_secs() as i64 * 1000,
        max_variants: ingest.max_variants as usize,
        recent_kills: 20,
    }
}
