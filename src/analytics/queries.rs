//! The SQL every event source answers: events by type, and counts per UTC
//! time bucket with every bucket present (`generate_series` left-joined to
//! the counts, so empty buckets are zeros). Parameters: `$1` the subject,
//! `$2`/`$3` the range `[since, until)` as `timestamptz`.

use serde::Serialize;

use super::params::{Bucket, Range};
use super::{run, EventSource, QueryError};
use crate::audit::writer::PgPool;
use crate::time::{format_rfc3339_ms, system_time_ms};

/// One time bucket: its start (UTC) and its count.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TimeBucket {
    pub start: String,
    pub count: i64,
}

/// Events by type over the range: `SELECT event_type, count(*) ... GROUP BY`.
pub fn by_type_sql(src: &EventSource) -> String {
    let EventSource {
        table,
        key,
        event_type,
        time,
    } = src;
    format!(
        "SELECT {event_type}, count(*) FROM {table}
         WHERE {key} = $1 AND {time} >= $2 AND {time} < $3
         GROUP BY 1 ORDER BY 1"
    )
}

/// Counts per bucket; `only_type`: one event type (a fixed literal, never a
/// request's text).
pub fn time_histogram_sql(src: &EventSource, bucket: Bucket, only_type: Option<&str>) -> String {
    let EventSource {
        table,
        key,
        event_type,
        time,
    } = src;
    let unit = bucket.unit();
    let filter = only_type
        .map(|t| format!("AND {event_type} = '{t}'"))
        .unwrap_or_default();
    // Truncated in UTC whatever the session's TimeZone: `AT TIME ZONE 'UTC'`
    // makes a plain timestamp of the UTC wall clock.
    format!(
        "WITH counts AS (
             SELECT date_trunc('{unit}', {time} AT TIME ZONE 'UTC') AS b, count(*) AS n
             FROM {table}
             WHERE {key} = $1 AND {time} >= $2 AND {time} < $3 {filter}
             GROUP BY 1
         )
         SELECT (extract(epoch FROM g.b) * 1000)::bigint, coalesce(c.n, 0)::bigint
         FROM generate_series(date_trunc('{unit}', $2 AT TIME ZONE 'UTC'),
                              ($3 AT TIME ZONE 'UTC') - interval '1 microsecond',
                              interval '1 {unit}') AS g(b)
         LEFT JOIN counts c ON c.b = g.b
         ORDER BY g.b"
    )
}

/// Runs [`time_histogram_sql`].
pub async fn time_histogram(
    pool: &PgPool,
    src: &EventSource,
    subject: &str,
    range: Range,
    bucket: Bucket,
    only_type: Option<&str>,
) -> Result<Vec<TimeBucket>, QueryError> {
    let sql = time_histogram_sql(src, bucket, only_type);
    let (since, until) = (system_time_ms(range.since), system_time_ms(range.until));
    let p: &[&(dyn tokio_postgres::types::ToSql + Sync)] = &[&subject, &since, &until];
    let rows = run(pool, &[(sql.as_str(), p)]).await?;
    Ok(rows
        .into_iter()
        .flatten()
        .map(|r| {
            let start: i64 = r.get(0);
            TimeBucket {
                start: format_rfc3339_ms(start).unwrap_or_default(),
                count: r.get(1),
            }
        })
        .collect())
}

/// A JSON number at `path` (a `jsonb` expression) as `float8`, or NULL when
/// it is not a number or too large to be one of ours: a row that is not
/// what the functions library writes must not fail the whole query.
pub fn num(path: &str) -> String {
    format!(
        "(CASE WHEN jsonb_typeof({path}) = 'number' AND abs(({path})::numeric) < 1e15 \
         THEN ({path})::float8 END)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::PERSONA_EVENTS;

    #[test]
    fn the_sql_names_only_fixed_columns() {
        let sql = time_histogram_sql(&PERSONA_EVENTS, Bucket::Day, Some("early_kill"));
        assert!(sql.contains("date_trunc('day', created_at AT TIME ZONE 'UTC')"));
        assert!(sql.contains("AND event_type = 'early_kill'"));
        assert!(sql.contains("interval '1 day'"));
        let sql = by_type_sql(&PERSONA_EVENTS);
        assert!(sql.contains("FROM dashboard_events"));
        assert!(num("d->'x'").contains("jsonb_typeof(d->'x') = 'number'"));
    }
}
