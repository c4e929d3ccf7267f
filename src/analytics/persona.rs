//! What only a persona's events have: posts, kills, engagement rates.
//! The summary of a range and the histograms, assembled from SQL that runs
//! in one read-only transaction (`docs/api.md`, "Analytics").
//!
//! Definitions (all by the event's own time, `created_at`, in `[since, until)`):
//! - kill rate: of the variants posted in the range, those whose kill event
//!   (after the post) is before `until`; with its 95% Wilson interval;
//! - ER: each variant's latest `performance_update` in the range with views
//!   (`current_er`, as published); mean ER is their mean;
//! - minutes to kill: `killed_at - posted_at` of the kills in the range.

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::params::{Bucket, Metric, Range};
use super::queries::{by_type_sql, num, time_histogram, TimeBucket};
use super::{run, QueryError, PERSONA_EVENTS};
use crate::audit::writer::PgPool;
use crate::dashboard::{round6, wilson};
use crate::time::system_time_ms;

/// ER value buckets: `ER_BUCKETS` of width `ER_MAX / ER_BUCKETS` from 0,
/// then one open bucket from `ER_MAX` up (interactions can outnumber views).
pub const ER_BUCKETS: i32 = 20;
pub const ER_MAX: f64 = 0.2;

fn kill_rate_sql() -> &'static str {
    // The kills are read once (a persona has far fewer kills than events)
    // and hash-joined to the posts: an EXISTS in the aggregate would be
    // probed once per post.
    "WITH posted AS (
         SELECT variant_id, stream_ms, stream_seq FROM dashboard_events
         WHERE persona_id = $1 AND event_type = 'variant_posted' AND created_at >= $2 AND created_at < $3
     ), killed AS (
         SELECT variant_id, stream_ms, stream_seq FROM dashboard_events
         WHERE persona_id = $1 AND event_type = 'early_kill' AND created_at < $3
     )
     SELECT count(*), count(*) FILTER (WHERE killed) FROM (
         SELECT bool_or(k.variant_id IS NOT NULL) AS killed
         FROM posted p LEFT JOIN killed k
           ON k.variant_id = p.variant_id AND (k.stream_ms, k.stream_seq) > (p.stream_ms, p.stream_seq)
         GROUP BY p.variant_id, p.stream_ms, p.stream_seq
     ) x"
}

/// Each variant's latest update in the range with views: its ER. The key
/// of each variant's latest update is found first, from the index alone
/// (`dashboard_events_persona_type_time_cover`, migration 7: the range's
/// entries, grouped by variant in a hash), and only that one row per variant
/// is read from the table for its `jsonb`; reading every update of the
/// range to keep one per variant took 0.8-2 s over 30 days
/// (`docs/benchmarks.md`). `max(ARRAY[ms, seq])` is the newest stream id.
fn latest_er_sql() -> String {
    let er = num("e.event_data->'data'->'current_er'");
    let views = num("e.event_data->'data'->'view_count'");
    format!(
        "SELECT er FROM (
             SELECT {er} AS er, {views} AS views
             FROM (
                 SELECT max(ARRAY[stream_ms, stream_seq]) AS id
                 FROM dashboard_events
                 WHERE persona_id = $1 AND event_type = 'performance_update'
                   AND created_at >= $2 AND created_at < $3 AND variant_id IS NOT NULL
                 GROUP BY variant_id
             ) k
             JOIN dashboard_events e
               ON e.persona_id = $1 AND e.stream_ms = k.id[1] AND e.stream_seq = k.id[2]
         ) latest WHERE views > 0 AND er IS NOT NULL"
    )
}

fn mean_er_sql() -> String {
    format!("SELECT avg(er), count(*) FROM ({}) e", latest_er_sql())
}

fn er_histogram_sql() -> String {
    format!(
        "SELECT g.b, coalesce(c.n, 0)::bigint
         FROM generate_series(1, {n}) AS g(b)
         LEFT JOIN (
             SELECT greatest(width_bucket(er, 0, {max}, {inner}), 1) AS b, count(*) AS n
             FROM ({latest}) e GROUP BY 1
         ) c ON c.b = g.b
         ORDER BY g.b",
        n = ER_BUCKETS + 1,
        max = ER_MAX,
        inner = ER_BUCKETS,
        latest = latest_er_sql(),
    )
}

fn minutes_to_kill_sql() -> String {
    let killed = num("event_data->'data'->'killed_at'");
    let posted = num("event_data->'data'->'posted_at'");
    format!(
        "SELECT count(m), avg(m), percentile_cont(0.5) WITHIN GROUP (ORDER BY m) FROM (
             SELECT greatest(0, {killed} - {posted}) / 60000.0 AS m
             FROM dashboard_events
             WHERE persona_id = $1 AND event_type = 'early_kill' AND created_at >= $2 AND created_at < $3
         ) k"
    )
}

/// The summary of `persona`'s events in `range` (without the range itself).
pub async fn summary(pool: &PgPool, persona: &str, range: Range) -> Result<Value, QueryError> {
    let (since, until) = (system_time_ms(range.since), system_time_ms(range.until));
    let (by_type, mean_er, ttk) = (
        by_type_sql(&PERSONA_EVENTS),
        mean_er_sql(),
        minutes_to_kill_sql(),
    );
    let p: &[&(dyn tokio_postgres::types::ToSql + Sync)] = &[&persona, &since, &until];
    let rows = run(
        pool,
        &[
            (by_type.as_str(), p),
            (kill_rate_sql(), p),
            (mean_er.as_str(), p),
            (ttk.as_str(), p),
        ],
    )
    .await?;
    let [by_type, kills, er, ttk] = rows.as_slice() else {
        return Ok(Value::Null);
    };
    let mut types = Map::new();
    let mut total = 0i64;
    for r in by_type {
        let n: i64 = r.get(1);
        total += n;
        types.insert(r.get::<_, String>(0), n.into());
    }
    let count = |t: &str| types.get(t).and_then(Value::as_i64).unwrap_or(0);
    let (posted, killed): (i64, i64) = kills
        .first()
        .map(|r| (r.get(0), r.get(1)))
        .unwrap_or((0, 0));
    let interval =
        wilson::interval(killed as u64, posted as u64).map(|(lo, hi)| [round6(lo), round6(hi)]);
    let (mean_er, er_variants): (Option<f64>, i64) = er
        .first()
        .map(|r| (r.get(0), r.get(1)))
        .unwrap_or((None, 0));
    let (kills_n, ttk_mean, ttk_median): (i64, Option<f64>, Option<f64>) = ttk
        .first()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .unwrap_or((0, None, None));
    Ok(json!({
        "events": { "total": total, "by_type": types },
        "variants_posted": count("variant_posted"),
        "kills": count("early_kill"),
        "kill_rate": {
            "posted": posted,
            "killed": killed,
            "rate": (posted > 0).then(|| round6(killed as f64 / posted as f64)),
            "interval": interval,
            "confidence": 0.95,
        },
        "mean_er": mean_er.map(round6),
        "er_variants": er_variants,
        "minutes_to_kill": {
            "count": kills_n,
            "mean": ttk_mean.map(round6),
            "median": ttk_median.map(round6),
        },
    }))
}

/// One ER value bucket: `[lower, upper)`, `upper` null for the last.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ValueBucket {
    pub lower: f64,
    pub upper: Option<f64>,
    pub count: i64,
}

/// The histogram's buckets: time buckets, or ER value buckets.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Buckets {
    Time(Vec<TimeBucket>),
    Value(Vec<ValueBucket>),
}

pub async fn histogram(
    pool: &PgPool,
    persona: &str,
    range: Range,
    metric: Metric,
    bucket: Bucket,
) -> Result<Buckets, QueryError> {
    let only = match metric {
        Metric::Events => None,
        Metric::Posts => Some("variant_posted"),
        Metric::Kills => Some("early_kill"),
        Metric::Er => return er_histogram(pool, persona, range).await.map(Buckets::Value),
    };
    time_histogram(pool, &PERSONA_EVENTS, persona, range, bucket, only)
        .await
        .map(Buckets::Time)
}

async fn er_histogram(
    pool: &PgPool,
    persona: &str,
    range: Range,
) -> Result<Vec<ValueBucket>, QueryError> {
    let (since, until) = (system_time_ms(range.since), system_time_ms(range.until));
    let sql = er_histogram_sql();
    let p: &[&(dyn tokio_postgres::types::ToSql + Sync)] = &[&persona, &since, &until];
    let rows = run(pool, &[(sql.as_str(), p)]).await?;
    let width = ER_MAX / f64::from(ER_BUCKETS);
    Ok(rows
        .into_iter()
        .flatten()
        .map(|r| {
            let b: i32 = r.get(0);
            ValueBucket {
                lower: round6(f64::from(b - 1) * width),
                upper: (b <= ER_BUCKETS).then(|| round6(f64::from(b) * width)),
                count: r.get(1),
            }
        })
        .collect())
}

/// The persona statements, named, for the benchmark (`bench_sql.rs`).
#[cfg(test)]
pub(crate) fn bench_statements() -> Vec<(&'static str, String)> {
    vec![
        ("kill_rate", kill_rate_sql().to_owned()),
        ("mean_er", mean_er_sql()),
        ("er_histogram", er_histogram_sql()),
        ("minutes_to_kill", minutes_to_kill_sql()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn er_buckets_have_fixed_edges() {
        let sql = er_histogram_sql();
        assert!(sql.contains("generate_series(1, 21)"), "{sql}");
        assert!(sql.contains("width_bucket(er, 0, 0.2, 20)"), "{sql}");
    }
}
