//! `/`, `/healthz`, `/readyz`.

use hyper::{Response, StatusCode};
use serde_json::json;

use super::response::{json, Body};
use crate::app::App;

pub fn root() -> Response<Body> {
    json(
        StatusCode::OK,
        &json!({"status": "healthy", "service": "pulsegate"}),
    )
}

/// The process is alive and serving HTTP.
pub fn healthz() -> Response<Body> {
    json(StatusCode::OK, &json!({"status": "ok"}))
}

/// Ready to take traffic: Redis answers and no shutdown is under way.
pub fn readyz(app: &App) -> Response<Body> {
    let redis_up = app.redis_status.is_up();
    let draining = app.is_draining();
    let library = app.redis_status.library_loaded();
    let ready = redis_up && library && !draining;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        status,
        &json!({
            "status": if ready { "ready" } else { "not_ready" },
            "redis": if redis_up { "up" } else { "down" },
            "functions_loaded": library,
            "redis_topology": app.config.redis.topology(),
            "redis_nodes": app.redis_status.nodes.snapshot(),
            "audit": app.audit.snapshot(),
            "draining": draining,
            "connections": app.connections.len(),
        }),
    )
}
