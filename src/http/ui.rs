//! The live dashboard page (docs/ui.md): its static assets, embedded in the
//! binary so the page works offline and always matches the gateway; the page
//! at `/dashboard/{persona_id}`; the JavaScript client library at
//! `/client/pulsegate.js` (`clients/js/`, which the page imports too); and
//! the HTML index of personas a browser gets at `/` (docs/decisions.md D1:
//! everyone else gets the health JSON).

use std::fmt::Write as _;
use std::sync::OnceLock;

use fred::prelude::*;
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL,
    CONTENT_SECURITY_POLICY, ETAG, IF_NONE_MATCH, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Response, StatusCode};

use super::response::{error, with_type, Body};
use crate::app::App;
use crate::keys::PersonaId;

/// Only the gateway itself: scripts, styles, images, fetch and WebSocket
/// (`'self'` covers same-origin `ws:`/`wss:` in CSP Level 3 browsers).
const CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The index lists at most this many personas.
const MAX_PERSONAS: usize = 200;
/// SCAN calls per index request (each asks for 1000 keys): bounds the cost
/// on a keyspace with many other keys.
const MAX_SCAN_CALLS: usize = 50;

pub(super) const HTML: &str = "text/html; charset=utf-8";
pub(super) const JS: &str = "text/javascript; charset=utf-8";

pub(super) struct Asset {
    pub(super) name: &'static str,
    pub(super) body: &'static [u8],
    pub(super) content_type: &'static str,
}

/// Everything under `/ui/`; `dashboard.html` is served at `/dashboard/{id}`.
const ASSETS: &[Asset] = &[
    Asset {
        name: "dashboard.html",
        body: include_bytes!("../../ui/dashboard.html"),
        content_type: HTML,
    },
    Asset {
        name: "style.css",
        body: include_bytes!("../../ui/style.css"),
        content_type: "text/css; charset=utf-8",
    },
    Asset {
        name: "app.js",
        body: include_bytes!("../../ui/app.js"),
        content_type: JS,
    },
    Asset {
        name: "model.js",
        body: include_bytes!("../../ui/model.js"),
        content_type: JS,
    },
    Asset {
        name: "view.js",
        body: include_bytes!("../../ui/view.js"),
        content_type: JS,
    },
    Asset {
        name: "table.js",
        body: include_bytes!("../../ui/table.js"),
        content_type: JS,
    },
    Asset {
        name: "format.js",
        body: include_bytes!("../../ui/format.js"),
        content_type: JS,
    },
    Asset {
        name: "history.js",
        body: include_bytes!("../../ui/history.js"),
        content_type: JS,
    },
    Asset {
        name: "personas.js",
        body: include_bytes!("../../ui/personas.js"),
        content_type: JS,
    },
    Asset {
        name: "favicon.svg",
        body: include_bytes!("../../ui/favicon.svg"),
        content_type: "image/svg+xml",
    },
];

/// The client library, served at `/client/pulsegate.js`. `clients/js/` is
/// its package and this file its only source: no build step, no copy.
const CLIENT_LIBRARY: Asset = Asset {
    name: "pulsegate.js",
    body: include_str!("../../clients/js/pulsegate.js").as_bytes(),
    content_type: JS,
};

const INDEX_TEMPLATE: &str = include_str!("../../ui/personas.html");

/// `GET /ui/{name}`.
pub fn asset(name: &str, headers: &HeaderMap) -> Response<Body> {
    match ASSETS.iter().position(|a| a.name == name) {
        Some(i) => serve(&ASSETS[i], etag(i), headers),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no asset /ui/{name}"),
        ),
    }
}

/// `GET /dashboard/{persona_id}`: the page; it reads the persona from its URL.
pub fn dashboard(app: &App, raw: &str, headers: &HeaderMap) -> Response<Body> {
    if let Err(e) = PersonaId::parse(raw, app.config.ws.max_persona_id_len) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_persona_id",
            &e.to_string(),
        );
    }
    serve(&ASSETS[0], etag(0), headers)
}

/// `GET /client/pulsegate.js`: the client library, revalidated like the
/// assets. Any origin may import it (`Access-Control-Allow-Origin: *`, which
/// a cross-origin module script needs): it is public and static, and
/// whether its WebSockets are accepted is `auth.allowed_origins`' decision.
pub fn client_library(headers: &HeaderMap) -> Response<Body> {
    static TAG: OnceLock<String> = OnceLock::new();
    let tag = TAG.get_or_init(|| quoted_hash(CLIENT_LIBRARY.body));
    let mut res = serve(&CLIENT_LIBRARY, tag, headers);
    res.headers_mut()
        .insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    res
}

/// `GET /`: the health JSON, or the index of personas for a browser.
pub async fn root(app: &App, headers: &HeaderMap) -> Response<Body> {
    if !prefers_html(headers) {
        return super::health::root();
    }
    let (status, list) = match live_personas(app).await {
        Ok(personas) => (StatusCode::OK, persona_list(&personas)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list personas");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "<p class=\"notice\" role=\"alert\">Redis is unreachable: the personas cannot be listed right now.</p>".to_string(),
            )
        }
    };
    let page = INDEX_TEMPLATE.replace("<!--PERSONAS-->", &list);
    let mut res = with_type(status, page, HTML);
    secure(&mut res, "no-store");
    res
}

/// The content hash of every asset, as a quoted ETag (computed once).
fn etag(i: usize) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    &TAGS.get_or_init(|| ASSETS.iter().map(|a| quoted_hash(a.body)).collect())[i]
}

pub(super) fn quoted_hash(body: &[u8]) -> String {
    format!("\"{:016x}\"", fnv1a(body))
}

/// Assets are revalidated on every load (`no-cache` + ETag): a new binary
/// never leaves a browser with an old script beside a new page.
pub(super) fn serve(a: &Asset, tag: &str, headers: &HeaderMap) -> Response<Body> {
    let fresh = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut res = if fresh {
        let mut r = with_type(StatusCode::NOT_MODIFIED, Vec::new(), a.content_type);
        r.headers_mut().remove(hyper::header::CONTENT_TYPE);
        r
    } else {
        with_type(StatusCode::OK, a.body, a.content_type)
    };
    secure(&mut res, "no-cache");
    if let Ok(v) = HeaderValue::from_str(tag) {
        res.headers_mut().insert(ETAG, v);
    }
    res
}

fn secure(res: &mut Response<Body>, cache: &'static str) {
    let h = res.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
}

/// True when `Accept` ranks `text/html` above JSON and `*/*` (a browser
/// navigating), so curl, probes and `Accept: application/json` keep the JSON.
pub fn prefers_html(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let (mut html, mut other) = (0.0f32, 0.0f32);
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "text/html" => html = html.max(q),
            "application/json" | "application/*" | "*/*" => other = other.max(q),
            _ => {}
        }
    }
    html > 0.0 && html > other
}

struct PersonaRow {
    id: PersonaId,
    active: u64,
    total: u64,
}

/// Personas that have a `<prefix>:{<id>}:persona` hash (written by the first
/// post), found with a bounded SCAN; each with its variant counts.
async fn live_personas(app: &App) -> Result<Vec<PersonaRow>, fred::error::Error> {
    let prefix = app.hub.keys().prefix();
    let pattern = format!("{}:{{*}}:persona", glob_escape(prefix));
    let head = format!("{prefix}:{{");
    let mut ids: Vec<PersonaId> = Vec::new();
    let mut cursor = "0".to_string();
    for _ in 0..MAX_SCAN_CALLS {
        let (next, keys): (String, Vec<String>) = app
            .redis
            .scan_page(cursor, pattern.clone(), Some(1000), None)
            .await?;
        for key in keys {
            let id = key
                .strip_prefix(&head)
                .and_then(|rest| rest.strip_suffix("}:persona"))
                .and_then(|raw| PersonaId::parse(raw, app.config.ws.max_persona_id_len).ok());
            if let Some(id) = id {
                if !ids.contains(&id) && ids.len() < MAX_PERSONAS {
                    ids.push(id);
                }
            }
        }
        if next == "0" || ids.len() >= MAX_PERSONAS {
            break;
        }
        cursor = next;
    }
    let counts = futures_util::future::join_all(ids.iter().map(|id| {
        let key = format!("{}:persona", app.hub.keys().base(id));
        async move {
            let r: Result<(Option<u64>, Option<u64>), _> = app
                .redis
                .hmget(key, vec!["active_variants", "total_variants"])
                .await;
            r
        }
    }))
    .await;
    let mut rows = Vec::with_capacity(ids.len());
    for (id, c) in ids.into_iter().zip(counts) {
        let (active, total) = c?;
        rows.push(PersonaRow {
            id,
            active: active.unwrap_or(0),
            total: total.unwrap_or(0),
        });
    }
    rows.sort_by(|a, b| {
        b.active
            .cmp(&a.active)
            .then_with(|| a.id.as_str().cmp(b.id.as_str()))
    });
    Ok(rows)
}

fn persona_list(rows: &[PersonaRow]) -> String {
    if rows.is_empty() {
        return "<p class=\"empty\">No persona has data yet. Report a <code>variant_posted</code> \
                event (see <code>lua/README.md</code>) or run <code>scripts/demo.sh</code>.</p>"
            .into();
    }
    let mut out = String::from("<ul class=\"personas\">");
    for r in rows {
        // Persona ids are [A-Za-z0-9_.-]: nothing to escape, but stay safe.
        let id = html_escape(r.id.as_str());
        let _ = write!(
            out,
            "<li><a href=\"/dashboard/{id}\"><span class=\"persona-name\">{id}</span>\
             <span class=\"persona-meta\">{} active · {} posted</span></a></li>",
            r.active, r.total
        );
    }
    if rows.len() >= MAX_PERSONAS {
        let _ = write!(
            out,
            "<li class=\"more\">Only the first {MAX_PERSONAS} personas are listed.</li>"
        );
    }
    out.push_str("</ul>");
    out
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes the glob characters of SCAN's MATCH (`*?[]\`).
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// FNV-1a, 64 bit: a cheap content hash for ETags.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn only_browsers_get_html() {
        let chrome = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,\
                      image/webp,*/*;q=0.8";
        assert!(prefers_html(&accept(chrome)));
        assert!(prefers_html(&accept("text/html")));
        assert!(!prefers_html(&HeaderMap::new()));
        assert!(!prefers_html(&accept("*/*")));
        assert!(!prefers_html(&accept("application/json")));
        assert!(!prefers_html(&accept("application/json, text/html")));
        assert!(!prefers_html(&accept("text/html;q=0, */*")));
        assert!(prefers_html(&accept("text/html, application/json;q=0.5")));
    }

    #[test]
    fn assets_have_types_and_tags() {
        for (i, a) in ASSETS.iter().enumerate() {
            assert!(!a.body.is_empty(), "{}", a.name);
            assert!(etag(i).starts_with('"') && etag(i).len() == 18);
        }
        let res = asset("app.js", &HeaderMap::new());
        assert_eq!(res.status(), StatusCode::OK);
        let tag = res.headers().get(ETAG).unwrap().clone();
        assert!(res.headers().contains_key(CONTENT_SECURITY_POLICY));
        let mut h = HeaderMap::new();
        h.insert(IF_NONE_MATCH, tag);
        assert_eq!(asset("app.js", &h).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            asset("nope.js", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn the_client_library_is_served_like_an_asset() {
        let res = client_library(&HeaderMap::new());
        assert_eq!(res.status(), StatusCode::OK);
        let h = res.headers();
        assert_eq!(h[hyper::header::CONTENT_TYPE], JS);
        assert_eq!(h[CACHE_CONTROL], "no-cache");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(h[X_CONTENT_TYPE_OPTIONS], "nosniff");
        let tag = h[ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(IF_NONE_MATCH, tag);
        assert_eq!(client_library(&h).status(), StatusCode::NOT_MODIFIED);
        // The page imports the library from its route, never a copy under /ui/.
        assert!(ASSETS
            .iter()
            .all(|a| a.name != "pulsegate.js" && a.name != "connection.js"));
    }

    #[test]
    fn escaping() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
