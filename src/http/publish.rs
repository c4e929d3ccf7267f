//! `POST /api/channels/{channel}/publish`: a message on a `[[channels]]`
//! channel (`src/publish.rs`), answered 202 with its offset.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use super::response::{error, json, Body};
use crate::app::App;
use crate::ingest::IngestError;
use crate::publish::{publish, PublishError};

pub async fn handle(app: &Arc<App>, channel: &str, req: Request<Incoming>) -> Response<Body> {
    let claims = req.extensions().get::<crate::auth::Claims>().cloned();
    let limit = app.config.ingest.max_body_bytes;
    let body = match super::body::read(req.into_body(), limit, app.config.http.body_timeout).await {
        Ok(b) => b,
        Err(e) => return e.response(),
    };
    match publish(app, channel, &body, claims.as_ref()).await {
        Ok(p) => {
            app.metrics.publish.accepted.inc();
            json(
                StatusCode::ACCEPTED,
                &json!({"channel": p.channel, "offset": p.offset}),
            )
        }
        Err(e) => {
            app.metrics.publish.rejected(e.label());
            let field = |status, code: &str, field: &str, message: &str| {
                json(
                    status,
                    &json!({"error": {"code": code, "field": field, "message": message}}),
                )
            };
            match &e {
                PublishError::InvalidChannel(m) => {
                    error(StatusCode::BAD_REQUEST, "invalid_channel", m)
                }
                PublishError::UnknownNamespace(m) => {
                    error(StatusCode::NOT_FOUND, "unknown_namespace", m)
                }
                PublishError::Function(IngestError::Forbidden(m)) => {
                    error(StatusCode::FORBIDDEN, "forbidden", m)
                }
                PublishError::Function(IngestError::BacklogFull(m)) => {
                    let mut res = error(StatusCode::SERVICE_UNAVAILABLE, "audit_backlog_full", m);
                    res.headers_mut().insert(
                        hyper::header::RETRY_AFTER,
                        hyper::header::HeaderValue::from_static("5"),
                    );
                    res
                }
                PublishError::Function(IngestError::Unavailable(m)) => {
                    error(StatusCode::SERVICE_UNAVAILABLE, "publish_unavailable", m)
                }
                PublishError::Function(
                    IngestError::Invalid { field: f, message }
                    | IngestError::UnknownVariant { field: f, message }
                    | IngestError::Conflict {
                        field: f, message, ..
                    },
                ) => field(StatusCode::BAD_REQUEST, "invalid_field", f, message),
            }
        }
    }
}
