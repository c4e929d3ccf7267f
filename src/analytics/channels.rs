//! A `[[channels]]` namespace's audited messages (`channel_events`): the
//! summary of a range (messages by their `type`, channels that spoke) and
//! messages per UTC time bucket, split by `type` (`docs/api.md`,
//! "Analytics of a channel namespace").
//!
//! A message's `type` is whatever its publisher wrote (up to 64 characters,
//! `message` when absent), so a namespace can hold any number of them: an
//! answer names at most [`MAX_TYPES`], the most frequent in the range, and
//! counts the rest only in the totals.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio_postgres::types::ToSql;

use super::params::{bucket_count, BadParam, Bucket, Range};
use super::queries::by_type_sql;
use super::{run, QueryError, CHANNEL_EVENTS};
use crate::audit::writer::PgPool;
use crate::metrics::AnalyticsRejection;
use crate::query::query_param;
use crate::time::{format_rfc3339_ms, system_time_ms};

/// The most types an answer names (bounds its size whatever the publishers
/// wrote: a histogram holds at most `MAX_BUCKETS × MAX_TYPES` counts).
pub const MAX_TYPES: usize = 20;

/// `metric`: a namespace's histogram counts messages, nothing else.
pub fn metric(query: Option<&str>) -> Result<&'static str, BadParam> {
    match query_param(query, "metric").as_deref() {
        None | Some("messages") => Ok("messages"),
        Some(_) => Err(BadParam {
            reason: AnalyticsRejection::InvalidMetric,
            message: "`metric` must be messages (a namespace's histogram counts its messages)"
                .into(),
        }),
    }
}

/// The types by count (most first, then by name), with the range's total
/// and how many types there are, named or not.
fn types_sql() -> String {
    format!(
        "SELECT ty, n, (sum(n) OVER ())::bigint, count(*) OVER ()
         FROM ({}) AS t(ty, n)
         ORDER BY n DESC, ty LIMIT {MAX_TYPES}",
        by_type_sql(&CHANNEL_EVENTS)
    )
}

fn channels_sql() -> &'static str {
    "SELECT count(DISTINCT channel_id) FROM channel_events
     WHERE namespace = $1 AND created_at >= $2 AND created_at < $3"
}

/// Counts per (bucket start in epoch ms, type); the types past the
/// [`MAX_TYPES`] most frequent of the range are folded into a NULL type.
fn histogram_sql(bucket: Bucket) -> String {
    let unit = bucket.unit();
    // Truncated in UTC whatever the session's TimeZone (as in queries.rs).
    format!(
        "WITH counts AS (
             SELECT (extract(epoch FROM date_trunc('{unit}', created_at AT TIME ZONE 'UTC')) * 1000)::bigint AS b,
                    event_type AS t, count(*) AS n
             FROM channel_events
             WHERE namespace = $1 AND created_at >= $2 AND created_at < $3
             GROUP BY 1, 2
         ), top AS (
             SELECT t FROM counts GROUP BY t ORDER BY sum(n) DESC, t LIMIT {MAX_TYPES}
         )
         SELECT b, CASE WHEN t IN (SELECT t FROM top) THEN t END AS ty, sum(n)::bigint
         FROM counts GROUP BY b, ty"
    )
}

/// The summary of `namespace`'s messages in `range` (without the range).
pub async fn summary(pool: &PgPool, namespace: &str, range: Range) -> Result<Value, QueryError> {
    let (since, until) = (system_time_ms(range.since), system_time_ms(range.until));
    let types = types_sql();
    let p: &[&(dyn ToSql + Sync)] = &[&namespace, &since, &until];
    let rows = run(pool, &[(types.as_str(), p), (channels_sql(), p)]).await?;
    let [types, channels] = rows.as_slice() else {
        return Ok(Value::Null);
    };
    let mut by_type = Map::new();
    let (mut total, mut kinds) = (0i64, 0i64);
    for r in types {
        by_type.insert(r.get::<_, String>(0), r.get::<_, i64>(1).into());
        total = r.get(2);
        kinds = r.get(3);
    }
    let channels: i64 = channels.first().map(|r| r.get(0)).unwrap_or(0);
    Ok(json!({
        "messages": { "total": total, "by_type": by_type, "types": kinds },
        "channels": channels,
    }))
}

/// One time bucket: its start (UTC), every message in it, and the named
/// types' share of them (zeros included).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TypedBucket {
    pub start: String,
    pub count: i64,
    pub by_type: Map<String, Value>,
}

/// Messages per bucket: the named types (most frequent first) and the
/// buckets, every one from the truncated `since` to `until`.
pub async fn histogram(
    pool: &PgPool,
    namespace: &str,
    range: Range,
    bucket: Bucket,
) -> Result<(Vec<String>, Vec<TypedBucket>), QueryError> {
    let (since, until) = (system_time_ms(range.since), system_time_ms(range.until));
    let sql = histogram_sql(bucket);
    let p: &[&(dyn ToSql + Sync)] = &[&namespace, &since, &until];
    let rows = run(pool, &[(sql.as_str(), p)]).await?;
    let counts: Vec<(i64, Option<String>, i64)> = rows
        .into_iter()
        .flatten()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    Ok(fill(range, bucket, &counts))
}

/// Every bucket of the range, from the (bucket start, type, count) rows.
fn fill(
    range: Range,
    bucket: Bucket,
    counts: &[(i64, Option<String>, i64)],
) -> (Vec<String>, Vec<TypedBucket>) {
    let mut totals: HashMap<&str, i64> = HashMap::new();
    for (_, t, n) in counts {
        if let Some(t) = t {
            *totals.entry(t).or_default() += n;
        }
    }
    let mut types: Vec<(&str, i64)> = totals.into_iter().collect();
    types.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let types: Vec<String> = types.into_iter().map(|(t, _)| t.to_owned()).collect();
    let unit = bucket.ms();
    let first = range.since.div_euclid(unit) * unit;
    let mut buckets: Vec<TypedBucket> = (0..bucket_count(range, bucket))
        .map(|i| TypedBucket {
            start: format_rfc3339_ms(first + i * unit).unwrap_or_default(),
            count: 0,
            by_type: types.iter().map(|t| (t.clone(), 0.into())).collect(),
        })
        .collect();
    for (start, t, n) in counts {
        let i = (start - first).div_euclid(unit);
        let Some(b) = usize::try_from(i).ok().and_then(|i| buckets.get_mut(i)) else {
            continue;
        };
        b.count += n;
        if let Some(t) = t {
            b.by_type.insert(t.clone(), (*n).into());
        }
    }
    (types, buckets)
}

/// The namespace statements, named, for the benchmark (`bench_sql.rs`).
#[cfg(test)]
pub(crate) fn bench_statements() -> Vec<(&'static str, String)> {
    vec![
        ("channel_types", types_sql()),
        ("channel_count", channels_sql().to_owned()),
        ("channel_histogram_hour", histogram_sql(Bucket::Hour)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::params::HOUR_MS;

    #[test]
    fn buckets_are_filled_with_zeros_and_types_ranked() {
        let range = Range {
            since: 10 * HOUR_MS + 5,
            until: 13 * HOUR_MS,
        };
        let rows = vec![
            (10 * HOUR_MS, Some("out".to_owned()), 2),
            (12 * HOUR_MS, Some("out".to_owned()), 1),
            (12 * HOUR_MS, Some("status".to_owned()), 4),
            (12 * HOUR_MS, None, 3),
        ];
        let (types, buckets) = fill(range, Bucket::Hour, &rows);
        assert_eq!(types, ["status", "out"]);
        let counts: Vec<i64> = buckets.iter().map(|b| b.count).collect();
        assert_eq!(counts, [2, 0, 8]);
        assert_eq!(
            buckets[1].by_type,
            json!({"out": 0, "status": 0}).as_object().cloned().unwrap()
        );
        assert_eq!(buckets[2].by_type["status"], 4);
        assert_eq!(buckets[0].start, "1970-01-01T10:00:00Z");
        assert!(histogram_sql(Bucket::Day).contains("date_trunc('day'"));
        assert!(types_sql().contains(&format!("LIMIT {MAX_TYPES}")));
        assert_eq!(
            metric(Some("metric=posts")).unwrap_err().reason,
            AnalyticsRejection::InvalidMetric
        );
    }
}
