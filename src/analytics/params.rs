//! The query parameters of the analytics routes, read and bounded before any
//! SQL runs: the time range (`since`, `until`), the metric and the bucket
//! width. Pure; every refusal names its reason (`AnalyticsRejection`).

use crate::metrics::AnalyticsRejection;
use crate::query::query_param;
use crate::time::parse_rfc3339_ms;

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;
/// The longest range a query may cover.
pub const MAX_SPAN_MS: i64 = 400 * DAY_MS;
/// The most time buckets one histogram holds (hour buckets: about 41 days).
pub const MAX_BUCKETS: i64 = 1000;

/// A refused parameter: why (the metric label and the error code) and what
/// to send instead.
#[derive(Debug, Clone, PartialEq)]
pub struct BadParam {
    pub reason: AnalyticsRejection,
    pub message: String,
}

fn bad(reason: AnalyticsRejection, message: impl Into<String>) -> BadParam {
    BadParam {
        reason,
        message: message.into(),
    }
}

/// `[since, until)` in epoch milliseconds, event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub since: i64,
    pub until: i64,
}

/// A time bucket of a histogram: UTC hours or UTC days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    Day,
}

impl Bucket {
    /// The `date_trunc` field and `interval` unit.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }

    pub fn ms(self) -> i64 {
        match self {
            Self::Hour => HOUR_MS,
            Self::Day => DAY_MS,
        }
    }
}

/// What a histogram counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Every audited event.
    Events,
    /// `variant_posted` events.
    Posts,
    /// `early_kill` events.
    Kills,
    /// Each variant's latest engagement rate in the range, in value buckets.
    Er,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Events => "events",
            Self::Posts => "posts",
            Self::Kills => "kills",
            Self::Er => "er",
        }
    }
}

fn instant(
    query: Option<&str>,
    name: &str,
    reason: AnalyticsRejection,
) -> Result<Option<i64>, BadParam> {
    let Some(raw) = query_param(query, name) else {
        return Ok(None);
    };
    match parse_rfc3339_ms(&raw) {
        Some(ms) if ms >= 0 => Ok(Some(ms)),
        _ => Err(bad(
            reason,
            format!("`{name}` must be an RFC 3339 time after 1970, such as 2026-11-22T03:00:00Z"),
        )),
    }
}

/// `since` and `until`: `until` defaults to `now`, `since` to `until -
/// default_span`; `since < until`, at most [`MAX_SPAN_MS`] apart.
pub fn range(query: Option<&str>, now: i64, default_span: i64) -> Result<Range, BadParam> {
    let until = instant(query, "until", AnalyticsRejection::InvalidUntil)?.unwrap_or(now);
    let since = instant(query, "since", AnalyticsRejection::InvalidSince)?
        .unwrap_or_else(|| (until - default_span).max(0));
    if since >= until {
        return Err(bad(
            AnalyticsRejection::InvalidRange,
            "`since` must be before `until`",
        ));
    }
    if until - since > MAX_SPAN_MS {
        return Err(bad(
            AnalyticsRejection::SpanTooLong,
            format!(
                "`since` to `until` may span at most {} days",
                MAX_SPAN_MS / DAY_MS
            ),
        ));
    }
    Ok(Range { since, until })
}

pub fn metric(query: Option<&str>) -> Result<Metric, BadParam> {
    match query_param(query, "metric").as_deref() {
        None | Some("events") => Ok(Metric::Events),
        Some("posts") => Ok(Metric::Posts),
        Some("kills") => Ok(Metric::Kills),
        Some("er") => Ok(Metric::Er),
        Some(_) => Err(bad(
            AnalyticsRejection::InvalidMetric,
            "`metric` must be events, posts, kills or er",
        )),
    }
}

pub fn bucket(query: Option<&str>) -> Result<Bucket, BadParam> {
    match query_param(query, "bucket").as_deref() {
        None | Some("hour") => Ok(Bucket::Hour),
        Some("day") => Ok(Bucket::Day),
        Some(_) => Err(bad(
            AnalyticsRejection::InvalidBucket,
            "`bucket` must be hour or day",
        )),
    }
}

/// The range's buckets: the first starts at `since` truncated to the unit
/// (UTC; epoch time has no leap seconds, so a UTC day is 86,400,000 ms),
/// the last is the one holding `until - 1 ms`.
pub fn bucket_count(range: Range, bucket: Bucket) -> i64 {
    let unit = bucket.ms();
    let first = range.since.div_euclid(unit) * unit;
    (range.until - first + unit - 1).div_euclid(unit)
}

/// `bucket_count`, refused past [`MAX_BUCKETS`].
pub fn bounded_buckets(range: Range, bucket: Bucket) -> Result<i64, BadParam> {
    let n = bucket_count(range, bucket);
    if n > MAX_BUCKETS {
        return Err(bad(
            AnalyticsRejection::TooManyBuckets,
            format!(
                "{n} {} buckets asked for; at most {MAX_BUCKETS} (narrow the range or use day buckets)",
                bucket.unit()
            ),
        ));
    }
    Ok(n)
}

/// The default range of a histogram: a day of hours, or 30 days.
pub fn default_span(bucket: Bucket) -> i64 {
    match bucket {
        Bucket::Hour => DAY_MS,
        Bucket::Day => 30 * DAY_MS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_318_000_123; // 2026-11-22T03:26:40.123Z

    #[test]
    fn defaults_and_bounds() {
        assert_eq!(
            range(None, NOW, DAY_MS),
            Ok(Range {
                since: NOW - DAY_MS,
                until: NOW
            })
        );
        let r = range(
            Some("since=2026-11-20T00:00:00Z&until=2026-11-22T00:00:00%2B00:00"),
            NOW,
            DAY_MS,
        )
        .unwrap();
        assert_eq!(r.until - r.since, 2 * DAY_MS);
        let reason = |q: &str| range(Some(q), NOW, DAY_MS).unwrap_err().reason;
        assert_eq!(reason("since=yesterday"), AnalyticsRejection::InvalidSince);
        assert_eq!(
            reason("until=1795318000123"),
            AnalyticsRejection::InvalidUntil
        );
        assert_eq!(
            reason("since=1969-12-31T00:00:00Z"),
            AnalyticsRejection::InvalidSince
        );
        assert_eq!(
            reason("since=2026-11-22T00:00:00Z&until=2026-11-22T00:00:00Z"),
            AnalyticsRejection::InvalidRange
        );
        assert_eq!(
            reason("since=2020-01-01T00:00:00Z&until=2026-01-01T00:00:00Z"),
            AnalyticsRejection::SpanTooLong
        );
    }

    #[test]
    fn buckets_cover_the_range_from_its_truncated_start() {
        let r = Range {
            since: 10 * HOUR_MS + 1,
            until: 13 * HOUR_MS,
        };
        assert_eq!(bucket_count(r, Bucket::Hour), 3);
        let r = Range {
            since: 10 * HOUR_MS + 1,
            until: 13 * HOUR_MS + 1,
        };
        assert_eq!(bucket_count(r, Bucket::Hour), 4);
        assert_eq!(bucket_count(r, Bucket::Day), 1);
        let long = Range {
            since: 0,
            until: 42 * DAY_MS,
        };
        assert_eq!(
            bounded_buckets(long, Bucket::Hour).unwrap_err().reason,
            AnalyticsRejection::TooManyBuckets
        );
        assert_eq!(bounded_buckets(long, Bucket::Day), Ok(42));
        assert_eq!(
            metric(Some("metric=views")).unwrap_err().reason,
            AnalyticsRejection::InvalidMetric
        );
        assert_eq!(
            bucket(Some("bucket=week")).unwrap_err().reason,
            AnalyticsRejection::InvalidBucket
        );
        assert_eq!(metric(Some("metric=er")), Ok(Metric::Er));
    }
}
