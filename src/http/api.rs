//! The dashboard REST API (docs/api.md): the read routes, answered from
//! `answers/` (kept current in the background), and the ingest routes.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tokio::time::Instant;

use super::response::{error, json, with_type, Body};
use crate::answers::{self, cache::read_from, Answer, ApiError, Route};
use crate::app::App;
use crate::ingest::{self, IngestError};
use crate::keys::PersonaId;
use crate::metrics::IngestRejection;

fn persona(app: &App, raw: &str) -> Result<PersonaId, ApiError> {
    PersonaId::parse(raw, app.config.ws.max_persona_id_len)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_persona_id", e.to_string()))
}

fn answer_response(a: Answer) -> Response<Body> {
    with_type(a.status, a.body, "application/json")
}

fn error_response(e: ApiError) -> Response<Body> {
    error(e.status, e.code, &e.message)
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
/// (`answers/cache.rs`), else built here.
async fn read(app: &Arc<App>, route: Route, raw: &str) -> Response<Body> {
    let persona = match persona(app, raw) {
        Ok(p) => p,
        Err(e) => return error_response(e),
    };
    if let Some(answer) = app.api_cache.get(route, &persona).await {
        return answer_response(answer);
    }
    read_from(&app.metrics, "built");
    match answers::build(
        app.api_cache.source(),
        &persona,
        route.bit(),
        Instant::now(),
    )
    .await
    {
        Ok(built) => match built.answer(route) {
            Some(answer) => answer_response(answer.clone()),
            None => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "no answer built",
            ),
        },
        Err(e) => error_response(e),
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

fn ingest_error_label(e: &IngestError) -> IngestRejection {
    match e {
        IngestError::Invalid { .. } => IngestRejection::Invalid,
        IngestError::UnknownVariant { .. } => IngestRejection::UnknownVariant,
        IngestError::Conflict { .. } => IngestRejection::Conflict,
        IngestError::BacklogFull(_) => IngestRejection::AuditBacklogFull,
        IngestError::Forbidden(_) => IngestRejection::Forbidden,
        IngestError::Unavailable(_) => IngestRejection::Unavailable,
    }
}

fn field_error(status: StatusCode, code: &str, field: &str, message: &str) -> Response<Body> {
    json(
        status,
        &json!({"error": {"code": code, "field": field, "message": message}}),
    )
}
