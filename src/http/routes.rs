//! The route table: every HTTP route once, with its method, who may call it
//! and what answers it. Routing is per method, so one path can mean two
//! things (`GET /api/events/early-kill` is the history of persona
//! `early-kill`, `POST /api/events/early-kill` ingests an event), and a 405's
//! `Allow` header is computed from the table.

use std::sync::LazyLock;

use hyper::Method;

use crate::auth::Role;

/// What answers a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// `/`: the health JSON, or the index page for a browser.
    Index,
    Healthz,
    Readyz,
    Metrics,
    /// `/ws`: the multiplexed WebSocket.
    Multiplex,
    /// `/dashboard/ws/{persona_id}`: one persona's WebSocket.
    DashboardWs,
    /// `/sse?channel=…`: the multiplexed Server-Sent Events stream.
    SseMultiplex,
    /// `/sse/{persona_id}`: one persona's Server-Sent Events stream.
    SseDashboard,
    /// `/dashboard/{persona_id}`: the dashboard page.
    DashboardPage,
    UiAsset,
    /// `/client/pulsegate.js`: the JavaScript client library (`clients/js/`).
    ClientLibrary,
    /// `/system`: the gateway's runtime page, and its assets.
    SystemPage,
    SystemAsset,
    ApiMetrics,
    ActiveVariants,
    Optimization,
    /// The audit's event history of a persona.
    Events,
    Kills,
    VariantHistory,
    /// Analytics of a persona's audited events.
    AnalyticsSummary,
    AnalyticsHistogram,
    /// Analytics of a `[[channels]]` namespace's audited messages, and the
    /// list of namespaces a token may read.
    ChannelNamespaces,
    ChannelSummary,
    ChannelHistogram,
    /// A persona's dashboard at a past instant, rebuilt from the audit.
    PointInTime,
    /// HTTP ingest of one event type.
    Ingest(&'static str),
    /// `POST /api/channels/{channel}/publish`: a `[[channels]]` message.
    Publish,
}

/// Who may call a route, checked before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: health checks, the page and its assets.
    Public,
    /// Checked at the upgrade (`http/upgrade.rs`), which keeps the claims.
    WebSocket,
    /// A Server-Sent Events stream: checked as a WebSocket upgrade is
    /// (`http/admit.rs`), in `http/sse.rs`.
    EventStream,
    /// A REST call: the REST rate applies, and with auth on a token holding
    /// at least this role (and the route's `persona_id`, when it has one).
    Rest(Role),
}

pub struct Route {
    pub method: Method,
    /// The pattern, also the `route` label of the HTTP metrics.
    pub pattern: &'static str,
    pub access: Access,
    pub handler: Handler,
}

const fn route(method: Method, pattern: &'static str, access: Access, handler: Handler) -> Route {
    Route {
        method,
        pattern,
        access,
        handler,
    }
}

use Access::{EventStream, Public, Rest, WebSocket};

/// Every route. `docs/api.md` and `docs/protocol.md` describe them.
pub static ROUTES: [Route; 29] = [
    route(Method::GET, "/", Public, Handler::Index),
    route(Method::GET, "/healthz", Public, Handler::Healthz),
    route(Method::GET, "/readyz", Public, Handler::Readyz),
    route(Method::GET, "/metrics", Rest(Role::Admin), Handler::Metrics),
    route(Method::GET, "/ws", WebSocket, Handler::Multiplex),
    route(
        Method::GET,
        "/dashboard/ws/{persona_id}",
        WebSocket,
        Handler::DashboardWs,
    ),
    route(Method::GET, "/sse", EventStream, Handler::SseMultiplex),
    route(
        Method::GET,
        "/sse/{persona_id}",
        EventStream,
        Handler::SseDashboard,
    ),
    route(
        Method::GET,
        "/dashboard/{persona_id}",
        Public,
        Handler::DashboardPage,
    ),
    route(Method::GET, "/ui/{asset}", Public, Handler::UiAsset),
    route(
        Method::GET,
        "/client/pulsegate.js",
        Public,
        Handler::ClientLibrary,
    ),
    route(Method::GET, "/system", Public, Handler::SystemPage),
    route(Method::GET, "/system/{asset}", Public, Handler::SystemAsset),
    route(
        Method::GET,
        "/api/metrics/{persona_id}",
        Rest(Role::Viewer),
        Handler::ApiMetrics,
    ),
    route(
        Method::GET,
        "/api/variants/{persona_id}/active",
        Rest(Role::Viewer),
        Handler::ActiveVariants,
    ),
    route(
        Method::GET,
        "/api/optimization/{persona_id}",
        Rest(Role::Viewer),
        Handler::Optimization,
    ),
    route(
        Method::GET,
        "/api/events/{persona_id}",
        Rest(Role::Viewer),
        Handler::Events,
    ),
    route(
        Method::GET,
        "/api/kills/{persona_id}",
        Rest(Role::Viewer),
        Handler::Kills,
    ),
    route(
        Method::GET,
        "/api/variants/{persona_id}/{variant_id}/history",
        Rest(Role::Viewer),
        Handler::VariantHistory,
    ),
    route(
        Method::GET,
        "/api/analytics/{persona_id}/summary",
        Rest(Role::Viewer),
        Handler::AnalyticsSummary,
    ),
    route(
        Method::GET,
        "/api/analytics/{persona_id}/histogram",
        Rest(Role::Viewer),
        Handler::AnalyticsHistogram,
    ),
    route(
        Method::GET,
        "/api/analytics/channels",
        Rest(Role::Viewer),
        Handler::ChannelNamespaces,
    ),
    route(
        Method::GET,
        "/api/analytics/channels/{namespace}/summary",
        Rest(Role::Viewer),
        Handler::ChannelSummary,
    ),
    route(
        Method::GET,
        "/api/analytics/channels/{namespace}/histogram",
        Rest(Role::Viewer),
        Handler::ChannelHistogram,
    ),
    route(
        Method::GET,
        "/api/snapshot/{persona_id}",
        Rest(Role::Viewer),
        Handler::PointInTime,
    ),
    route(
        Method::POST,
        "/api/events/variant-posted",
        Rest(Role::Publisher),
        Handler::Ingest("variant_posted"),
    ),
    route(
        Method::POST,
        "/api/events/performance-update",
        Rest(Role::Publisher),
        Handler::Ingest("performance_update"),
    ),
    route(
        Method::POST,
        "/api/events/early-kill",
        Rest(Role::Publisher),
        Handler::Ingest("early_kill"),
    ),
    route(
        Method::POST,
        "/api/channels/{channel}/publish",
        Rest(Role::Publisher),
        Handler::Publish,
    ),
];

/// The path parameters of a match (`persona_id`, `variant_id`, `asset`, `channel`, `namespace`).
#[derive(Debug, Default)]
pub struct Params(Vec<(&'static str, String)>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The persona a route is about, for the authorization check.
    pub fn persona(&self) -> Option<&str> {
        self.get("persona_id")
    }
}

/// What the table says of a request.
pub enum Lookup {
    Found(&'static Route, Params),
    /// The path exists for other methods only.
    MethodNotAllowed {
        pattern: &'static str,
        allow: Vec<Method>,
    },
    NotFound,
}

/// One router per method, built once from [`ROUTES`].
pub struct Table {
    by_method: Vec<(Method, matchit::Router<&'static Route>)>,
}

impl Table {
    fn build() -> Result<Self, matchit::InsertError> {
        let mut by_method: Vec<(Method, matchit::Router<&'static Route>)> = Vec::new();
        for r in &ROUTES {
            let pos = match by_method.iter().position(|(m, _)| *m == r.method) {
                Some(pos) => pos,
                None => {
                    by_method.push((r.method.clone(), matchit::Router::new()));
                    by_method.len() - 1
                }
            };
            by_method[pos].1.insert(r.pattern, r)?;
        }
        Ok(Self { by_method })
    }

    pub fn lookup(&self, method: &Method, path: &str) -> Lookup {
        // `/api/metrics/p1/` is `/api/metrics/p1`.
        let path = match path.trim_end_matches('/') {
            "" => "/",
            p => p,
        };
        let mut allow = Vec::new();
        let mut pattern = None;
        for (m, router) in &self.by_method {
            let Ok(found) = router.at(path) else {
                continue;
            };
            if m == method {
                let params = found
                    .params
                    .iter()
                    .filter_map(|(k, v)| {
                        let name = ["persona_id", "variant_id", "asset", "channel", "namespace"]
                            .into_iter()
                            .find(|n| *n == k)?;
                        Some((name, v.to_owned()))
                    })
                    .collect();
                return Lookup::Found(found.value, Params(params));
            }
            pattern.get_or_insert(found.value.pattern);
            allow.push(m.clone());
        }
        match pattern {
            Some(pattern) => Lookup::MethodNotAllowed { pattern, allow },
            None => Lookup::NotFound,
        }
    }
}

/// The table, built on first use. Its patterns are fixed in this file, so a
/// failure is a programming error that `tests::the_table_builds` catches.
pub static TABLE: LazyLock<Table> = LazyLock::new(|| match Table::build() {
    Ok(t) => t,
    Err(e) => panic!("the route table does not build: {e}"),
});

#[cfg(test)]
mod tests;
