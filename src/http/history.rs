//! The audit query API (docs/api.md), read from Postgres: a persona's events
//! (filtered, keyset-paginated in stream order), its kills, and one
//! variant's history.

use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use tokio_postgres::types::{Json, ToSql};

use super::response::{error, json, Body};
use crate::app::App;
use crate::audit::writer::PgPool;
use crate::keys::PersonaId;
use crate::query::query_param;
use crate::stream::parse_offset;

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

/// A refused query: status, code, message.
struct Refusal(StatusCode, &'static str, String);

impl Refusal {
    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, code, message.into())
    }
    fn into_response(self) -> Response<Body> {
        error(self.0, self.1, &self.2)
    }
}

fn pool(app: &App) -> Result<&PgPool, Refusal> {
    app.pg.as_ref().ok_or_else(|| {
        Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            "no database is configured (database.url)".into(),
        )
    })
}

fn persona(app: &App, raw: &str) -> Result<PersonaId, Refusal> {
    PersonaId::parse(raw, app.config.ws.max_persona_id_len)
        .map_err(|e| Refusal::bad("invalid_persona_id", e.to_string()))
}

/// `since`/`until`: epoch milliseconds or RFC 3339 (`2026-11-22T03:00:00Z`).
fn time_param(query: Option<&str>, name: &'static str) -> Result<Option<i64>, Refusal> {
    let Some(raw) = query_param(query, name) else {
        return Ok(None);
    };
    if let Ok(ms) = raw.parse::<i64>() {
        return Ok(Some(ms));
    }
    crate::time::parse_rfc3339_ms(&raw)
        .map(Some)
        .ok_or_else(|| {
            Refusal::bad(
                "invalid_parameter",
                format!("`{name}` must be epoch milliseconds or an RFC 3339 time"),
            )
        })
}

fn limit_param(query: Option<&str>) -> Result<i64, Refusal> {
    match query_param(query, "limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(Refusal::bad(
                "invalid_parameter",
                format!("`limit` must be 1-{MAX_LIMIT}"),
            )),
        },
    }
}

/// `since`, `until`, `limit` and `cursor` of a paginated query.
struct Paging {
    since: Option<i64>,
    until: Option<i64>,
    limit: i64,
    /// The stream id after which the page starts; `(-1, -1)` for the first page.
    cursor: (i64, i64),
}

fn paging(query: Option<&str>) -> Result<Paging, Refusal> {
    let cursor = match query_param(query, "cursor") {
        None => (-1, -1),
        Some(c) => parse_offset(&c)
            .map(|(a, b)| (a as i64, b as i64))
            .ok_or_else(|| {
                Refusal::bad(
                    "invalid_parameter",
                    "`cursor` is not a cursor from this API",
                )
            })?,
    };
    Ok(Paging {
        since: time_param(query, "since")?,
        until: time_param(query, "until")?,
        limit: limit_param(query)?,
        cursor,
    })
}

async fn query_json(
    pool: &PgPool,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Value>, Refusal> {
    let conn = pool.get().await.map_err(|e| {
        Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            format!("Postgres is unreachable: {e}"),
        )
    })?;
    let rows = conn.query(sql, params).await.map_err(|e| {
        tracing::warn!(error = %e, "audit query failed");
        Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the audit query failed".into(),
        )
    })?;
    Ok(rows.iter().map(|r| r.get::<_, Json<Value>>(0).0).collect())
}

const EVENT_JSON: &str =
    "jsonb_build_object('event_id', event_id, 'event_type', event_type, 'variant_id', variant_id, \
     'created_at', created_at, 'data', event_data)";

/// `GET /api/events/{persona_id}?since=&until=&event_type=&variant_id=&limit=&cursor=`
pub async fn events(app: &App, raw: &str, query: Option<&str>) -> Response<Body> {
    async {
        let pool = pool(app)?;
        let persona = persona(app, raw)?;
        let Paging { since, until, limit, cursor: (cms, cseq) } = paging(query)?;
        let event_type = query_param(query, "event_type");
        let variant_id = query_param(query, "variant_id");
        let sql = format!(
            "SELECT {EVENT_JSON} FROM dashboard_events
             WHERE persona_id = $1 AND ($2::bigint IS NULL OR stream_ms >= $2) AND ($3::bigint IS NULL OR stream_ms <= $3)
               AND ($4::text IS NULL OR event_type = $4) AND ($5::text IS NULL OR variant_id = $5)
               AND (stream_ms, stream_seq) > ($6, $7)
             ORDER BY stream_ms, stream_seq LIMIT $8"
        );
        let rows = query_json(
            pool,
            &sql,
            &[&persona.as_str(), &since, &until, &event_type, &variant_id, &cms, &cseq, &(limit + 1)],
        )
        .await?;
        Ok(page(rows, limit as usize, "events"))
    }
    .await
    .unwrap_or_else(Refusal::into_response)
}

/// Cuts one extra row into `next_cursor` (the stream id of the last row shown).
fn page(mut rows: Vec<Value>, limit: usize, field: &str) -> Response<Body> {
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = if more {
        rows.last()
            .and_then(|r| r["event_id"].as_str())
            .map(str::to_owned)
    } else {
        None
    };
    json(StatusCode::OK, &json!({ field: rows, "next_cursor": next }))
}

/// `GET /api/kills/{persona_id}?since=&until=&limit=&cursor=` (ordered by kill event)
pub async fn kills(app: &App, raw: &str, query: Option<&str>) -> Response<Body> {
    async {
        let pool = pool(app)?;
        let persona = persona(app, raw)?;
        let Paging { since, until, limit, cursor: (cms, cseq) } = paging(query)?;
        let sql = "SELECT jsonb_build_object('event_id', event_id, 'variant_id', variant_id, 'reason', reason,
                     'final_engagement_rate', final_engagement_rate, 'sample_size', sample_size,
                     'posted_at', posted_at, 'killed_at', killed_at)
             FROM (SELECT *, split_part(event_id, '-', 1)::bigint AS ms, split_part(event_id, '-', 2)::bigint AS seq
                   FROM variant_kills WHERE persona_id = $1) k
             WHERE ($2::bigint IS NULL OR killed_at >= to_timestamp($2::float8 / 1000))
               AND ($3::bigint IS NULL OR killed_at <= to_timestamp($3::float8 / 1000))
               AND (ms, seq) > ($4, $5)
             ORDER BY ms, seq LIMIT $6";
        let rows = query_json(pool, sql, &[&persona.as_str(), &since, &until, &cms, &cseq, &(limit + 1)]).await?;
        Ok(page(rows, limit as usize, "kills"))
    }
    .await
    .unwrap_or_else(Refusal::into_response)
}

/// `GET /api/variants/{persona_id}/{variant_id}/history`
pub async fn variant_history(
    app: &App,
    raw: &str,
    variant: &str,
    query: Option<&str>,
) -> Response<Body> {
    async {
        let pool = pool(app)?;
        let persona = persona(app, raw)?;
        let limit = if query_param(query, "limit").is_some() { limit_param(query)? } else { MAX_LIMIT };
        let variant_row = query_json(
            pool,
            "SELECT to_jsonb(v) - 'persona_id' FROM variants v WHERE persona_id = $1 AND id = $2",
            &[&persona.as_str(), &variant],
        )
        .await?;
        let monitoring = query_json(
            pool,
            "SELECT to_jsonb(m) - 'persona_id' - 'last_ms' - 'last_seq' FROM variant_monitoring m WHERE persona_id = $1 AND variant_id = $2",
            &[&persona.as_str(), &variant],
        )
        .await?;
        let events = query_json(
            pool,
            &format!(
                "SELECT {EVENT_JSON} FROM dashboard_events WHERE persona_id = $1 AND variant_id = $2
                 ORDER BY stream_ms, stream_seq LIMIT $3"
            ),
            &[&persona.as_str(), &variant, &limit],
        )
        .await?;
        if events.is_empty() && variant_row.is_empty() {
            return Err(Refusal(
                StatusCode::NOT_FOUND,
                "unknown_variant",
                format!("no audited events for variant `{variant}` of persona `{persona}`"),
            ));
        }
        Ok(json(
            StatusCode::OK,
            &json!({
                "persona_id": persona.as_str(),
                "variant_id": variant,
                "variant": variant_row.into_iter().next(),
                "monitoring": monitoring.into_iter().next(),
                "events": events,
            }),
        ))
    }
    .await
    .unwrap_or_else(Refusal::into_response)
}
