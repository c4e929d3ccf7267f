//! HTTP routing: health, metrics, the WebSocket upgrade and SSE endpoints.
//! Every request is counted by route and status, with its latency.

pub mod admit;
pub mod analytics;
pub mod api;
pub mod body;
pub mod channel_analytics;
pub mod health;
pub mod history;
pub mod index;
pub mod publish;
pub mod response;
pub mod routes;
pub mod sse;
pub mod system_page;
pub mod ui;
pub mod upgrade;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};

use crate::app::App;
use crate::auth::{bearer_token, AuthError, Claims, Role};
use crate::keys::PersonaId;
use crate::metrics::Rejection;
use crate::metrics::{HttpLabels, RouteLabel};
use crate::query::query_param;
use crate::ratelimit::{self, Limited};
use crate::stream::parse_offset;
use crate::ws::session::Endpoint;

use response::{error, Body};
use routes::{Access, Handler, Lookup};

/// The TCP peer of a request, put in its extensions by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let (route, res) = route(&app, req).await;
    let status = res.status().as_u16();
    if status >= 400 {
        app.metrics.runtime.errors.inc();
    }
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
    let (route, params) = match routes::TABLE.lookup(req.method(), req.uri().path()) {
        Lookup::Found(route, params) => (route, params),
        Lookup::MethodNotAllowed { pattern, allow } => {
            return (pattern, method_not_allowed(pattern, &allow))
        }
        Lookup::NotFound => {
            let message = format!("no route for {}", req.uri().path());
            return (
                "not_found",
                error(StatusCode::NOT_FOUND, "not_found", &message),
            );
        }
    };
    if let Access::Rest(role) = route.access {
        match guard(app, role, params.persona(), &req) {
            Ok(Some(claims)) => {
                req.extensions_mut().insert(claims);
            }
            Ok(None) => {}
            Err(res) => return (route.pattern, res),
        }
    }
    let persona = params.persona().unwrap_or_default();
    let query = req.uri().query().map(str::to_owned);
    let query = query.as_deref();
    let res = match route.handler {
        Handler::Index => index::root(app, req.headers()).await,
        Handler::Healthz => health::healthz(),
        Handler::Readyz => health::readyz(app),
        Handler::Metrics => response::with_type(
            StatusCode::OK,
            app.metrics.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        Handler::Multiplex => upgrade::handle(app, req, Endpoint::Multiplex),
        Handler::DashboardWs => match dashboard_endpoint(app, persona, query) {
            Ok(endpoint) => upgrade::handle(app, req, endpoint),
            Err(res) => res,
        },
        Handler::SseMultiplex => sse::multiplex(app, &req, query),
        Handler::SseDashboard => sse::dashboard(app, &req, persona, query),
        Handler::DashboardPage => ui::dashboard(app, persona, req.headers()),
        Handler::UiAsset => ui::asset(params.get("asset").unwrap_or_default(), req.headers()),
        Handler::ClientLibrary => ui::client_library(req.headers()),
        Handler::SystemPage => system_page::page(req.headers()),
        Handler::SystemAsset => {
            system_page::asset(params.get("asset").unwrap_or_default(), req.headers())
        }
        Handler::ApiMetrics => api::metrics(app, persona).await,
        Handler::ActiveVariants => api::active_variants(app, persona).await,
        Handler::Optimization => api::optimization(app, persona).await,
        Handler::Events => history::events(app, persona, query).await,
        Handler::Kills => history::kills(app, persona, query).await,
        Handler::VariantHistory => {
            let variant = params.get("variant_id").unwrap_or_default();
            history::variant_history(app, persona, variant, query).await
        }
        Handler::AnalyticsSummary => analytics::summary(app, persona, query).await,
        Handler::AnalyticsHistogram => analytics::histogram(app, persona, query).await,
        Handler::PointInTime => analytics::snapshot(app, persona, query).await,
        Handler::ChannelNamespaces => {
            channel_analytics::namespaces(app, req.extensions().get::<Claims>())
        }
        Handler::ChannelSummary => {
            let ns = params.get("namespace").unwrap_or_default();
            channel_analytics::summary(app, ns, req.extensions().get::<Claims>(), query).await
        }
        Handler::ChannelHistogram => {
            let ns = params.get("namespace").unwrap_or_default();
            channel_analytics::histogram(app, ns, req.extensions().get::<Claims>(), query).await
        }
        Handler::Ingest(event_type) => api::ingest_event(app, event_type, req).await,
        Handler::Publish => {
            let channel = params.get("channel").unwrap_or_default().to_owned();
            publish::handle(app, &channel, req).await
        }
    };
    (route.pattern, res)
}

/// 405 naming the methods the path takes, in `Allow` and in the message.
fn method_not_allowed(pattern: &str, allow: &[Method]) -> Response<Body> {
    let methods: Vec<&str> = allow.iter().map(Method::as_str).collect();
    let methods = methods.join(", ");
    let mut res = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("{pattern} takes {methods} only"),
    );
    if let Ok(v) = HeaderValue::from_str(&methods) {
        res.headers_mut().insert(ALLOW, v);
    }
    res
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
/// routes are checked in `upgrade`, which keeps the claims.
#[allow(clippy::result_large_err)]
fn guard<B>(
    app: &App,
    role: Role,
    persona: Option<&str>,
    req: &Request<B>,
) -> Result<Option<Claims>, Response<Body>> {
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

/// The persona and `?since=` of a dashboard WebSocket, or the 400 to send.
#[allow(clippy::result_large_err)]
fn dashboard_endpoint(
    app: &App,
    id: &str,
    query: Option<&str>,
) -> Result<Endpoint, Response<Body>> {
    let persona = PersonaId::parse(id, app.config.ws.max_persona_id_len).map_err(|e| {
        app.metrics.rejected(Rejection::BadPersonaId);
        error(
            StatusCode::BAD_REQUEST,
            "invalid_persona_id",
            &e.to_string(),
        )
    })?;
    let since = match query_param(query, "since") {
        None => None,
        Some(raw) => Some(parse_offset(&raw).ok_or_else(|| {
            app.metrics.rejected(Rejection::BadSince);
            error(
                StatusCode::BAD_REQUEST,
                "invalid_since",
                "since must be a stream offset such as 1732240000000-0",
            )
        })?),
    };
    Ok(Endpoint::Dashboard { persona, since })
}
