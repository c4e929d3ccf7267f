//! The HTML index of personas a browser gets at `/` (docs/decisions.md D1:
//! everyone else gets the health JSON), found with a bounded SCAN.

use std::fmt::Write as _;

use fred::prelude::*;
use hyper::header::{HeaderMap, ACCEPT};
use hyper::{Response, StatusCode};

use super::response::{with_type, Body};
use super::ui::{secure, HTML};
use crate::app::App;
use crate::keys::PersonaId;

/// The index lists at most this many personas.
const MAX_PERSONAS: usize = 200;
/// SCAN calls per index request (each asks for 1000 keys): bounds the cost
/// on a keyspace with many other keys.
const MAX_SCAN_CALLS: usize = 50;

const INDEX_TEMPLATE: &str = include_str!("../../ui/personas.html");

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

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

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
    fn escaping() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
