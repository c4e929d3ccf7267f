//! The live dashboard page (docs/ui.md): its static assets, embedded in the
//! binary so the page works offline and always matches the gateway; the page
//! at `/dashboard/{persona_id}`; the JavaScript client library at
//! `/client/pulsegate.js` (`clients/js/`, which the page imports too); the
//! headers every page and asset carries (`secure`). The HTML index of
//! personas at `/` is `index.rs`.

use std::sync::OnceLock;

use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL,
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
        name: "channels.js",
        body: include_bytes!("../../ui/channels.js"),
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

pub(super) fn secure(res: &mut Response<Body>, cache: &'static str) {
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

/// FNV-1a, 64 bit: a cheap content hash for ETags.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
