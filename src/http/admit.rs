//! Admission of a streaming client, the same for both transports (the
//! WebSocket upgrade, `upgrade.rs`, and Server-Sent Events, `sse.rs`):
//! Origin, token and personas, the per-IP and process connection limits,
//! draining. What it admits holds a connection slot until dropped.

use std::sync::Arc;

use hyper::{Request, Response, StatusCode};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::auth::Claims;
use crate::http::response::{error, Body};
use crate::hub::outbox::Outbox;
use crate::hub::registry::Registration;
use crate::keys::PersonaId;
use crate::metrics::{Rejection, Transport};
use crate::protocol::extension::Deflate;
use crate::ratelimit::IpSlot;

/// A client let in: its claims (auth on), its outbox, and the slots it
/// holds (dropping them frees them).
pub struct Admitted {
    pub claims: Option<Claims>,
    pub outbox: Arc<Outbox>,
    pub registration: Registration,
    pub ip_slot: IpSlot,
}

/// Checks a streaming request for `personas` (those it names up front; a
/// `/ws` client names its channels later, each checked then), or the
/// response refusing it (counted in `connections_rejected`). The outbox's
/// close is signalled on `closing`.
#[allow(clippy::result_large_err)]
pub fn admit<B>(
    app: &Arc<App>,
    req: &Request<B>,
    personas: &[PersonaId],
    transport: Transport,
    closing: CancellationToken,
    deflate: Option<Deflate>,
) -> Result<Admitted, Response<Body>> {
    let origin = req
        .headers()
        .get(hyper::header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    if !app.config.auth.origin_allowed(origin) {
        app.metrics.rejected(Rejection::Origin);
        app.metrics.auth_failure("origin");
        let message = match transport {
            Transport::WebSocket => "this Origin may not open WebSockets here",
            Transport::Sse => "this Origin may not open event streams here",
        };
        return Err(error(StatusCode::FORBIDDEN, "origin_not_allowed", message));
    }
    let claims = match crate::http::authenticate(app, req) {
        Ok(c) => c,
        Err(res) => {
            app.metrics.rejected(Rejection::Unauthorized);
            return Err(res);
        }
    };
    if let Some(c) = &claims {
        if let Some(p) = personas.iter().find(|p| !c.allows_persona(p.as_str())) {
            app.metrics.rejected(Rejection::Forbidden);
            let message = match transport {
                Transport::WebSocket => "this token does not grant this persona".to_owned(),
                Transport::Sse => format!("this token does not grant persona:{p}"),
            };
            return Err(crate::http::forbidden(app, &message));
        }
    }
    let ip = crate::http::client_ip(app, req);
    if app.limits.is_trusted_proxy(
        req.extensions()
            .get::<crate::http::Peer>()
            .map_or(ip, |p| p.0.ip()),
    ) {
        // Behind a proxy the accept loop saw the proxy; the client's own
        // connection rate is checked here.
        if let Err(l) = app.limits.check_connection_ip(ip) {
            app.metrics.rejected(Rejection::RateLimited);
            return Err(crate::http::too_many_requests(&l));
        }
    }
    let Some(ip_slot) = app.limits.open_connection(ip) else {
        app.metrics.rejected(Rejection::MaxConnectionsPerIp);
        return Err(crate::http::too_many_requests(&crate::ratelimit::Limited {
            limit: "max_connections_per_ip",
            retry_after: std::time::Duration::from_secs(1),
        }));
    };
    if app.is_draining() {
        app.metrics.rejected(Rejection::Draining);
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "server is shutting down",
        ));
    }
    let outbox = Arc::new(
        Outbox::with_closing(app.queue_limits(), app.metrics.clone(), closing)
            .with_deflate(deflate),
    );
    let Some(registration) = app
        .connections
        .register(outbox.clone(), app.config.ws.max_connections)
    else {
        app.metrics.rejected(Rejection::MaxConnections);
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "connection limit reached; retry later",
        ));
    };
    Ok(Admitted {
        claims,
        outbox,
        registration,
        ip_slot,
    })
}
