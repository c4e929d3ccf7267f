//! HTTP routing: health, metrics, and the WebSocket upgrade endpoints.
//! Every request is counted by route and status, with its latency.

pub mod api;
pub mod body;
pub mod cache;
pub mod health;
pub mod history;
pub mod response;
pub mod ui;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};

use crate::app::App;
use crate::auth::{bearer_token, AuthError, Claims, Role};
use crate::hub::message::parse_offset;
use crate::keys::PersonaId;
use crate::metrics::{HttpLabels, RouteLabel};
use crate::ratelimit::{self, Limited};
use crate::ws::session::Endpoint;
use crate::ws::upgrade;
use response::{error, Body};

/// The TCP peer of a request, put in its extensions by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

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

async fn route(app: &Arc<App>, mut req: Request<Incoming>) -> (&'static str, Response<Body>) {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let Some(route) = route_name(&segments) else {
        let message = format!("no route for {path}");
        return (
            "not_found",
            error(StatusCode::NOT_FOUND, "not_found", &message),
        );
    };
    let wanted = if route.starts_with("/api/events/") && route != "/api/events/{persona_id}" {
        Method::POST
    } else {
        Method::GET
    };
    if method != wanted {
        let message = format!("{route} takes {wanted} only");
        return (
            route,
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &message,
            ),
        );
    }
    match guard(app, route, &segments, &req) {
        Ok(Some(claims)) => {
            req.extensions_mut().insert(claims);
        }
        Ok(None) => {}
        Err(res) => return (route, res),
    }
    let res = match segments.as_slice() {
        ["healthz"] => health::healthz(),
        ["readyz"] => health::readyz(app),
        ["metrics"] => response::with_type(
            StatusCode::OK,
            app.metrics.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        ["ws"] => upgrade::handle(app, req, Endpoint::Multiplex),
        ["dashboard", "ws", id] => match dashboard_endpoint(app, id, req.uri().query()) {
            Ok(endpoint) => upgrade::handle(app, req, endpoint),
            Err(res) => res,
        },
        ["api", "metrics", p] => api::metrics(app, p).await,
        ["api", "variants", p, "active"] => api::active_variants(app, p).await,
        ["api", "optimization", p] => api::optimization(app, p).await,
        ["api", "events", p] if route == "/api/events/{persona_id}" => {
            history::events(app, p, req.uri().query()).await
        }
        ["api", "kills", p] => history::kills(app, p, req.uri().query()).await,
        ["api", "variants", p, v, "history"] => {
            history::variant_history(app, p, v, req.uri().query()).await
        }
        ["api", "events", kind] => {
            let kind = kind.to_string();
            api::ingest_event(app, &kind, req).await
        }
        ["dashboard", id] => ui::dashboard(app, id, req.headers()),
        ["ui", name] => ui::asset(name, req.headers()),
        _ => ui::root(app, req.headers()).await,
    };
    (route, res)
}

/// The client's IP: the TCP peer, or the forwarded address when the peer is
/// a trusted proxy (`limits.trusted_proxies`).
pub fn client_ip<B>(app: &App, req: &Request<B>) -> IpAddr {
    match req.extensions().get::<Peer>() {
        Some(Peer(peer)) => {
            ratelimit::client_ip(*peer, req.headers(), &app.config.limits.trusted_proxies)
        }
        None => IpAddr::from([0, 0, 0, 0]),
    }
}

/// 429 with `Retry-After`.
pub fn too_many_requests(limited: &Limited) -> Response<Body> {
    let mut res = error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        &format!("rate limit `{}` exceeded; retry later", limited.limit),
    );
    res.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(limited.retry_after_secs()));
    res
}

/// 401 (with `WWW-Authenticate`) for a missing or bad token.
pub fn unauthorized(app: &App, e: &AuthError) -> Response<Body> {
    app.metrics.auth_failure(e.code());
    let mut res = error(StatusCode::UNAUTHORIZED, e.code(), &e.to_string());
    res.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    res
}

/// 403 for a valid token that does not grant the request.
pub fn forbidden(app: &App, message: &str) -> Response<Body> {
    app.metrics.auth_failure("forbidden");
    error(StatusCode::FORBIDDEN, "forbidden", message)
}

/// The token's claims when auth is on, or why the request is refused.
#[allow(clippy::result_large_err)]
pub fn authenticate<B>(app: &App, req: &Request<B>) -> Result<Option<Claims>, Response<Body>> {
    let Some(auth) = &app.auth else {
        return Ok(None);
    };
    let token = bearer_token(req.headers(), req.uri().query())
        .ok_or_else(|| unauthorized(app, &AuthError::Missing))?;
    auth.verify(&token)
        .map(Some)
        .map_err(|e| unauthorized(app, &e))
}

/// REST rate limits and authorization, before a route runs. WebSocket
/// routes are checked in `ws::upgrade`, which keeps the claims.
#[allow(clippy::result_large_err)]
fn guard<B>(
    app: &App,
    route: &'static str,
    segments: &[&str],
    req: &Request<B>,
) -> Result<Option<Claims>, Response<Body>> {
    let (role, persona) = match segments {
        ["metrics"] => (Role::Admin, None),
        ["api", "events", _] if route != "/api/events/{persona_id}" => (Role::Publisher, None),
        ["api", _, p, ..] => (Role::Viewer, Some(*p)),
        _ => return Ok(None),
    };
    let ip = client_ip(app, req);
    app.limits
        .check_rest(ip)
        .map_err(|l| too_many_requests(&l))?;
    let claims = authenticate(app, req)?;
    if let Some(c) = &claims {
        if !c.allows(role, persona) {
            return Err(forbidden(
                app,
                &format!("this token does not grant {role:?} access here"),
            ));
        }
    }
    if role == Role::Publisher {
        let key = match &claims {
            Some(c) => c.sub.clone(),
            None => req
                .headers()
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .unwrap_or_else(|| ip.to_string()),
        };
        app.limits
            .check_ingest(&key)
            .map_err(|l| too_many_requests(&l))?;
    }
    Ok(claims)
}

/// The route pattern a path matches (the `route` label of the metrics).
fn route_name(segments: &[&str]) -> Option<&'static str> {
    Some(match segments {
        [] | [""] => "/",
        ["healthz"] => "/healthz",
        ["readyz"] => "/readyz",
        ["metrics"] => "/metrics",
        ["ws"] => "/ws",
        ["dashboard", "ws", _] => "/dashboard/ws/{persona_id}",
        ["dashboard", _] => "/dashboard/{persona_id}",
        ["ui", _] => "/ui/{asset}",
        ["api", "metrics", _] => "/api/metrics/{persona_id}",
        ["api", "variants", _, "active"] => "/api/variants/{persona_id}/active",
        ["api", "optimization", _] => "/api/optimization/{persona_id}",
        ["api", "kills", _] => "/api/kills/{persona_id}",
        ["api", "variants", _, _, "history"] => "/api/variants/{persona_id}/{variant_id}/history",
        ["api", "events", "variant-posted"] => "/api/events/variant-posted",
        ["api", "events", "performance-update"] => "/api/events/performance-update",
        ["api", "events", "early-kill"] => "/api/events/early-kill",
        ["api", "events", _] => "/api/events/{persona_id}",
        _ => return None,
    })
}

/// The persona and `?since=` of a dashboard WebSocket, or the 400 to send.
#[allow(clippy::result_large_err)]
fn dashboard_endpoint(
    app: &App,
    id: &str,
    query: Option<&str>,
) -> Result<Endpoint, Response<Body>> {
    let persona = PersonaId::parse(id, app.config.ws.max_persona_id_len).map_err(|e| {
        app.metrics.rejected("bad_persona_id");
        error(
            StatusCode::BAD_REQUEST,
            "invalid_persona_id",
            &e.to_string(),
        )
    })?;
    let since = match query_param(query, "since") {
        None => None,
        Some(raw) => Some(parse_offset(&raw).ok_or_else(|| {
            app.metrics.rejected("bad_since");
            error(
                StatusCode::BAD_REQUEST,
                "invalid_since",
                "since must be a stream offset such as 1732240000000-0",
            )
        })?),
    };
    Ok(Endpoint::Dashboard { persona, since })
}

/// The first value of `name` in a query string, percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
