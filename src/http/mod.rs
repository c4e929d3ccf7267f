//! HTTP routing: health, metrics, and the WebSocket upgrade endpoints.
//! Every request is counted by route and status, with its latency.

pub mod health;
pub mod response;

use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use crate::app::App;
use crate::keys::PersonaId;
use crate::metrics::{HttpLabels, RouteLabel};
use crate::ws::session::Endpoint;
use crate::ws::upgrade;
use response::{error, Body};

pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let (route, res) = route(&app, req).await;
    let status = res.status().as_u16();
    app.metrics
        .http_requests
        .get_or_create(&HttpLabels { route, status })
        .inc();
    app.metrics
        .http_latency
        .get_or_create(&RouteLabel { route })
        .observe(started.elapsed().as_secs_f64());
    res
}

async fn route(app: &Arc<App>, req: Request<Incoming>) -> (&'static str, Response<Body>) {
    let path = req.uri().path().to_owned();
    let get = req.method() == Method::GET;
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match segments.as_slice() {
        [""] | [] if get => ("/", health::root()),
        ["healthz"] if get => ("/healthz", health::healthz()),
        ["readyz"] if get => ("/readyz", health::readyz(app)),
        ["metrics"] if get => (
            "/metrics",
            response::with_type(
                StatusCode::OK,
                app.metrics.encode(),
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
        ),
        ["ws"] if get => ("/ws", upgrade::handle(app, req, Endpoint::Multiplex)),
        ["dashboard", "ws", id] if get => {
            let route = "/dashboard/ws/{persona_id}";
            match PersonaId::parse(id, app.config.ws.max_persona_id_len) {
                Ok(p) => (route, upgrade::handle(app, req, Endpoint::Dashboard(p))),
                Err(e) => {
                    app.metrics.rejected("bad_persona_id");
                    (
                        route,
                        error(
                            StatusCode::BAD_REQUEST,
                            "invalid_persona_id",
                            &e.to_string(),
                        ),
                    )
                }
            }
        }
        [""] | [] | ["healthz"] | ["readyz"] | ["metrics"] | ["ws"] | ["dashboard", "ws", _] => (
            "method_not_allowed",
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "only GET is allowed here",
            ),
        ),
        _ => (
            "not_found",
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no route for {path}"),
            ),
        ),
    }
}
