//! The dashboard REST API (docs/api.md): read routes built from the atomic
//! snapshot, and the ingest routes.

use std::sync::Arc;

use fred::prelude::*;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::cache::{Answer, Built, Route};
use super::response::{error, error_body, json, Body};
use crate::app::App;
use crate::dashboard::{human_duration, suggestions, RawSnapshot};
use crate::ingest::{self, IngestError};
use crate::keys::PersonaId;
use crate::metrics::{ReadPath, Repair};
use crate::redis::text;
use crate::snapshot::{self, SnapshotError};
use crate::stream::parse_offset;
use crate::undecodable;

/// Entries of the stream shown as `real_time_feed`.
const FEED_LEN: usize = 20;

/// An API failure: the status, a stable code and a message for people.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn into_response(self) -> Response<Body> {
        error(self.status, self.code, &self.message)
    }
}

fn persona(app: &App, raw: &str) -> Result<PersonaId, ApiError> {
    PersonaId::parse(raw, app.config.ws.max_persona_id_len)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_persona_id", e.to_string()))
}

/// The persona's snapshot; `None` when it has no data yet.
async fn load(app: &App, persona: &PersonaId) -> Result<Option<RawSnapshot>, ApiError> {
    let snap = snapshot::fetch_raw(app, persona).await.map_err(|e| {
        tracing::warn!(%persona, error = %e, "snapshot failed");
        match e {
            SnapshotError::Redis(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "redis_unavailable",
                e.to_string(),
            ),
            SnapshotError::Decode(_) | SnapshotError::NotText => {
                ApiError::new(StatusCode::BAD_GATEWAY, "bad_snapshot", e.to_string())
            }
        }
    })?;
    Ok((snap.offset.is_some() || snap.summary.total_variants > 0).then_some(snap))
}

/// `GET /api/metrics/{persona_id}`
pub async fn metrics(app: &Arc<App>, raw: &str) -> Response<Body> {
    read(app, Route::Metrics, raw).await
}

/// `GET /api/variants/{persona_id}/active`
pub async fn active_variants(app: &Arc<App>, raw: &str) -> Response<Body> {
    read(app, Route::ActiveVariants, raw).await
}

/// `GET /api/optimization/{persona_id}`
pub async fn optimization(app: &Arc<App>, raw: &str) -> Response<Body> {
    read(app, Route::Optimization, raw).await
}

/// A read route: from the cache when it has a current answer
/// (`src/http/cache.rs`), else built here.
async fn read(app: &Arc<App>, route: Route, raw: &str) -> Response<Body> {
    let persona = match persona(app, raw) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Some(answer) = app.api_cache.get(app, route, &persona).await {
        return answer.into_response();
    }
    super::cache::read_from(app, "built");
    match build(app, &persona, route.bit(), Instant::now()).await {
        Ok(built) => match built.answer(route) {
            Some(answer) => answer.clone().into_response(),
            None => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "no answer built",
            ),
        },
        Err(e) => e.into_response(),
    }
}

/// Builds the answers of the routes in `routes` (a route set) from one
/// snapshot. An unknown persona is an answer (404); Redis failing is an error.
pub async fn build(
    app: &App,
    persona: &PersonaId,
    routes: u8,
    started: Instant,
) -> Result<Built, ApiError> {
    let snap = load(app, persona).await?;
    let feed = match &snap {
        Some(_) if routes & Route::Metrics.bit() != 0 => real_time_feed(app, persona).await,
        _ => Value::Null,
    };
    let mut built = Built {
        offset: snap
            .as_ref()
            .and_then(|s| s.offset.as_deref())
            .and_then(parse_offset),
        at: started,
        answers: [None, None, None],
    };
    for route in Route::ALL.into_iter().filter(|r| routes & r.bit() != 0) {
        let (status, body) = match &snap {
            None => (
                StatusCode::NOT_FOUND,
                error_body(
                    "unknown_persona",
                    &format!("no events recorded for persona `{persona}`"),
                ),
            ),
            Some(snap) => (
                StatusCode::OK,
                serde_json::to_vec(&answer_body(app, route, persona, snap, &feed))
                    .unwrap_or_default(),
            ),
        };
        built.answers[route as usize] = Some(Answer {
            status,
            body: body.into(),
        });
    }
    Ok(built)
}

fn answer_body(
    app: &App,
    route: Route,
    persona: &PersonaId,
    snap: &RawSnapshot,
    feed: &Value,
) -> Value {
    match route {
        Route::Metrics => metrics_body(app, persona, snap, feed),
        Route::ActiveVariants => active_variants_body(persona, snap),
        Route::Optimization => json!({
            "persona_id": persona.as_str(),
            "suggestions": suggestions::suggest(snap, &app.config.optimization),
        }),
    }
}

fn metrics_body(app: &App, persona: &PersonaId, snap: &RawSnapshot, feed: &Value) -> Value {
    let cfg = &app.config.optimization;
    json!({
        "persona_id": persona.as_str(),
        "offset": snap.offset,
        "summary": {
            "total_variants": snap.summary.total_variants,
            "active_variants": snap.summary.active_variants,
            "avg_engagement_rate": snap.summary.avg_engagement_rate,
        },
        "active_variants": snap.active_variants,
        "performance_leaders": snap.leaders(cfg),
        "early_kills_today": {
            "kills_today": snap.summary.kills_today,
            "avg_time_to_kill_minutes": snap.summary.avg_time_to_kill_minutes,
            "kill_rate": snap.summary.kill_rate,
            "posted_in_window": snap.summary.posted_in_window,
            "killed_in_window": snap.summary.killed_in_window,
        },
        "pattern_fatigue_warnings": snapshot::fatigue_warnings(snap, app),
        "optimization_opportunities": suggestions::suggest(snap, cfg),
        "real_time_feed": feed,
    })
}

fn active_variants_body(persona: &PersonaId, snap: &RawSnapshot) -> Value {
    let variants: Vec<Value> = snap
        .active_variants
        .iter()
        .map(|v| {
            let since = v.posted_at.map(|p| snap.now - p);
            json!({
                "id": v.variant_id,
                "content": v.content,
                "predicted_er": v.predicted_er,
                "pattern_used": v.pattern_used,
                "live_metrics": {
                    "engagement_rate": v.current_er,
                    "interactions": v.interaction_count,
                    "views": v.view_count,
                    "er_interval": v.er_interval,
                    "er_5m": v.er_5m,
                    "er_15m": v.er_15m,
                    "er_60m": v.er_60m,
                },
                "time_since_post": since.map(human_duration),
                "time_since_post_seconds": since.map(|ms| ms / 1000),
                "performance_vs_prediction": v.performance_vs_prediction,
                "verdict": v.verdict,
                "status": v.status,
            })
        })
        .collect();
    json!({"persona_id": persona.as_str(), "offset": snap.offset, "variants": variants})
}

/// The newest stream entries, newest first (what a dashboard feed shows).
/// An entry that is not UTF-8 is shown replaced (U+FFFD); one whose message
/// is still no JSON is left out. Either is counted (`src/undecodable.rs`).
async fn real_time_feed(app: &App, persona: &PersonaId) -> Value {
    let key = app.hub.keys().stream(persona);
    let reply: Result<fred::types::Value, _> = app
        .redis
        .xrevrange(key, "+", "-", Some(FEED_LEN as u64))
        .await;
    match reply.and_then(text::entries) {
        Ok(entries) => Value::Array(
            entries
                .into_iter()
                .filter_map(|(id, fields)| {
                    let message = serde_json::from_str(fields.map.get("m")?).ok();
                    if fields.replaced {
                        let action = match message {
                            Some(_) => Repair::Replaced,
                            None => Repair::Skipped,
                        };
                        let (metrics, p) = (&app.metrics, persona.as_str());
                        undecodable::report(metrics, ReadPath::Feed, action, p, Some(&id));
                    }
                    message
                })
                .collect(),
        ),
        Err(e) => {
            tracing::warn!(%persona, error = %e, "cannot read the feed");
            Value::Array(Vec::new())
        }
    }
}

/// `POST /api/events/{variant-posted|performance-update|early-kill}`: an
/// event of `event_type` (the route table picks it).
pub async fn ingest_event(
    app: &Arc<App>,
    event_type: &'static str,
    req: Request<Incoming>,
) -> Response<Body> {
    let claims = req.extensions().get::<crate::auth::Claims>().cloned();
    let limit = app.config.ingest.max_body_bytes;
    let body = match super::body::read(req.into_body(), limit, app.config.http.body_timeout).await {
        Ok(b) => b,
        Err(e) => return e.response(),
    };
    let mut body = body.to_vec();
    match ingest::ingest(app, event_type, &mut body, claims.as_ref()).await {
        Ok(accepted) => {
            app.metrics.ingest_accepted.inc();
            app.api_cache
                .ingested(&accepted.persona, &accepted.event_id);
            json(
                StatusCode::ACCEPTED,
                &json!({"event_id": accepted.event_id, "persona_id": accepted.persona.as_str()}),
            )
        }
        Err(e) => {
            app.metrics.ingest_rejected(ingest_error_label(&e));
            match &e {
                IngestError::Invalid { field, message } => {
                    field_error(StatusCode::BAD_REQUEST, "invalid_field", field, message)
                }
                IngestError::UnknownVariant { field, message } => {
                    field_error(StatusCode::NOT_FOUND, "unknown_variant", field, message)
                }
                IngestError::Conflict {
                    code,
                    field,
                    message,
                } => field_error(StatusCode::CONFLICT, code, field, message),
                IngestError::Forbidden(m) => error(StatusCode::FORBIDDEN, "forbidden", m),
                IngestError::BacklogFull(m) => {
                    let mut res = error(StatusCode::SERVICE_UNAVAILABLE, "audit_backlog_full", m);
                    res.headers_mut().insert(
                        hyper::header::RETRY_AFTER,
                        hyper::header::HeaderValue::from_static("5"),
                    );
                    res
                }
                IngestError::Unavailable(m) => {
                    error(StatusCode::SERVICE_UNAVAILABLE, "ingest_unavailable", m)
                }
            }
        }
    }
}

fn ingest_error_label(e: &IngestError) -> &'static str {
    match e {
        IngestError::Invalid { .. } => "invalid",
        IngestError::UnknownVariant { .. } => "unknown_variant",
        IngestError::Conflict { .. } => "conflict",
        IngestError::BacklogFull(_) => "audit_backlog_full",
        IngestError::Forbidden(_) => "forbidden",
        IngestError::Unavailable(_) => "unavailable",
    }
}

fn field_error(status: StatusCode, code: &str, field: &str, message: &str) -> Response<Body> {
    json(
        status,
        &json!({"error": {"code": code, "field": field, "message": message}}),
    )
}
