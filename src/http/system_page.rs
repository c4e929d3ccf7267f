//! The gateway's runtime page (`/system`, docs/ui.md) and its assets under
//! `/system/{asset}`: embedded like the dashboard's, served with the same
//! CSP and revalidation (`ui.rs`). The page itself is public, as the
//! dashboard is; what it shows comes over `/ws`, where `system:runtime`
//! needs the admin role when auth is on.

use std::sync::OnceLock;

use hyper::header::HeaderMap;
use hyper::{Response, StatusCode};

use super::response::{error, Body};
use super::ui::{quoted_hash, serve, Asset, HTML, JS};

const ASSETS: &[Asset] = &[
    Asset {
        name: "system.html",
        body: include_bytes!("../../ui/system.html"),
        content_type: HTML,
    },
    Asset {
        name: "system.js",
        body: include_bytes!("../../ui/system.js"),
        content_type: JS,
    },
    Asset {
        name: "chart.js",
        body: include_bytes!("../../ui/chart.js"),
        content_type: JS,
    },
    Asset {
        name: "system.css",
        body: include_bytes!("../../ui/system.css"),
        content_type: "text/css; charset=utf-8",
    },
];

fn etag(i: usize) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    &TAGS.get_or_init(|| ASSETS.iter().map(|a| quoted_hash(a.body)).collect())[i]
}

/// `GET /system`: the page.
pub fn page(headers: &HeaderMap) -> Response<Body> {
    serve(&ASSETS[0], etag(0), headers)
}

/// `GET /system/{asset}`.
pub fn asset(name: &str, headers: &HeaderMap) -> Response<Body> {
    match ASSETS.iter().position(|a| a.name == name) {
        Some(i) => serve(&ASSETS[i], etag(i), headers),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no asset /system/{name}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE};

    #[test]
    fn the_page_and_its_assets_are_served_with_the_csp() {
        let res = page(&HeaderMap::new());
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[CONTENT_TYPE], HTML);
        assert!(res.headers().contains_key(CONTENT_SECURITY_POLICY));
        for a in ASSETS {
            assert_eq!(asset(a.name, &HeaderMap::new()).status(), StatusCode::OK);
        }
        assert_eq!(
            asset("nope.js", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }
}
