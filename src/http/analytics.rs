//! `/api/analytics/{persona_id}/summary`, `/api/analytics/{persona_id}/histogram`
//! and `/api/snapshot/{persona_id}?at=`: reads of the audit trail
//! (`src/analytics/`, `src/pointintime/`). Every refusal is counted by
//! reason and answered with that reason as its error code (here and in
//! `channel_analytics.rs`, the namespace routes).

use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::response::{error, json, Body};
use crate::analytics::params::{self, BadParam, Metric, DAY_MS};
use crate::analytics::{persona as analytics, QueryError};
use crate::app::App;
use crate::audit::writer::PgPool;
use crate::keys::PersonaId;
use crate::metrics::AnalyticsRejection as Why;
use crate::pointintime;
use crate::query::query_param;
use crate::snapshot::dashboard_data;
use crate::time::{format_rfc3339_ms, now_ms, parse_rfc3339_ms};

pub(super) struct Refusal(pub(super) StatusCode, pub(super) Why, pub(super) String);

impl From<BadParam> for Refusal {
    fn from(b: BadParam) -> Self {
        Self(StatusCode::BAD_REQUEST, b.reason, b.message)
    }
}

impl From<QueryError> for Refusal {
    fn from(e: QueryError) -> Self {
        tracing::warn!(error = %e, "analytics query failed");
        Self(
            StatusCode::SERVICE_UNAVAILABLE,
            e.reason(),
            "the audit database did not answer (unreachable, failing or too slow)".into(),
        )
    }
}

pub(super) fn answer(app: &App, result: Result<Value, Refusal>) -> Response<Body> {
    match result {
        Ok(body) => json(StatusCode::OK, &body),
        Err(Refusal(status, why, message)) => {
            app.metrics.analytics_rejected(why);
            error(status, why.label(), &message)
        }
    }
}

/// The audit database, or 503 `audit_unavailable`.
pub(super) fn database(app: &App) -> Result<&PgPool, Refusal> {
    app.pg.as_ref().ok_or_else(|| {
        Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            Why::AuditUnavailable,
            "no database is configured (database.url): analytics read the audit trail".into(),
        )
    })
}

/// The database and the persona, or why not: without a database nothing
/// else is worth checking.
fn start<'a>(app: &'a App, raw: &str) -> Result<(&'a PgPool, PersonaId), Refusal> {
    let pool = database(app)?;
    let persona = PersonaId::parse(raw, app.config.ws.max_persona_id_len).map_err(|e| {
        Refusal(
            StatusCode::BAD_REQUEST,
            Why::InvalidPersonaId,
            e.to_string(),
        )
    })?;
    Ok((pool, persona))
}

pub(super) fn rfc(ms: i64) -> String {
    format_rfc3339_ms(ms).unwrap_or_default()
}

/// `GET /api/analytics/{persona_id}/summary?since=&until=`
pub async fn summary(app: &App, raw: &str, query: Option<&str>) -> Response<Body> {
    let result = async {
        let (pool, persona) = start(app, raw)?;
        let range = params::range(query, now_ms(), DAY_MS)?;
        let mut body = analytics::summary(pool, persona.as_str(), range).await?;
        if let Value::Object(m) = &mut body {
            m.insert("persona_id".into(), persona.as_str().into());
            m.insert("since".into(), rfc(range.since).into());
            m.insert("until".into(), rfc(range.until).into());
        }
        Ok(body)
    }
    .await;
    answer(app, result)
}

/// `GET /api/analytics/{persona_id}/histogram?metric=&bucket=&since=&until=`
pub async fn histogram(app: &App, raw: &str, query: Option<&str>) -> Response<Body> {
    let result = async {
        let (pool, persona) = start(app, raw)?;
        let metric = params::metric(query)?;
        let bucket = params::bucket(query)?;
        let range = params::range(query, now_ms(), params::default_span(bucket))?;
        if metric != Metric::Er {
            params::bounded_buckets(range, bucket)?;
        }
        let buckets = analytics::histogram(pool, persona.as_str(), range, metric, bucket).await?;
        Ok(json!({
            "persona_id": persona.as_str(),
            "metric": metric.as_str(),
            "bucket": (metric != Metric::Er).then(|| bucket.unit()),
            "since": rfc(range.since),
            "until": rfc(range.until),
            "buckets": buckets,
        }))
    }
    .await;
    answer(app, result)
}

/// `GET /api/snapshot/{persona_id}?at=<RFC 3339>`
pub async fn snapshot(app: &App, raw: &str, query: Option<&str>) -> Response<Body> {
    let result = async {
        let (pool, persona) = start(app, raw)?;
        let bad_at = |why, message: &str| Refusal(StatusCode::BAD_REQUEST, why, message.into());
        let at = query_param(query, "at")
            .and_then(|a| parse_rfc3339_ms(&a))
            .filter(|&ms| ms >= 0)
            .ok_or_else(|| {
                bad_at(
                    Why::InvalidAt,
                    "`at` must be an RFC 3339 time after 1970, such as 2026-11-22T03:00:00Z",
                )
            })?;
        if at > now_ms() {
            return Err(bad_at(
                Why::AtInFuture,
                "`at` is in the future: the live dashboard is the newest state",
            ));
        }
        let settings = pointintime::settings(&app.config.ingest);
        let Some(mut snap) =
            pointintime::snapshot_at(pool, persona.as_str(), at, &settings).await?
        else {
            return Err(Refusal(
                StatusCode::NOT_FOUND,
                Why::UnknownPersona,
                format!("the audit trail holds no event of persona `{persona}`"),
            ));
        };
        snap.enrich(&app.config.optimization);
        Ok(json!({
            "persona_id": persona.as_str(),
            "at": rfc(at),
            "offset": snap.offset,
            "data": dashboard_data(&snap, &app.config.optimization, &app.config.ingest),
        }))
    }
    .await;
    answer(app, result)
}
