//! `/api/analytics/channels` (the namespaces a token may read),
//! `/api/analytics/channels/{namespace}/summary` and
//! `/api/analytics/channels/{namespace}/histogram`: a `[[channels]]`
//! namespace's audited messages (`src/analytics/channels.rs`). Parameters
//! and refusals as for a persona's analytics (`analytics.rs`); a namespace
//! must be declared and keep history (only those are audited), and with
//! auth on the token must grant the whole namespace.

use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::analytics::{answer, database, rfc, Refusal};
use super::response::Body;
use crate::analytics::channels;
use crate::analytics::params::{self, DAY_MS};
use crate::app::App;
use crate::audit::writer::PgPool;
use crate::auth::Claims;
use crate::channel_name::{valid_namespace, PERSONA};
use crate::config::NamespaceConfig;
use crate::metrics::AnalyticsRejection as Why;
use crate::time::now_ms;

/// The database and the namespace, or the answer to send: 503, 400
/// `invalid_namespace`, 404 `unknown_namespace` / `namespace_not_audited`
/// (counted), 403 `forbidden` (counted as an auth failure).
#[allow(clippy::result_large_err)]
fn start<'a>(
    app: &'a App,
    raw: &str,
    claims: Option<&Claims>,
) -> Result<(&'a PgPool, &'a NamespaceConfig), Response<Body>> {
    let refuse = |r: Refusal| answer(app, Err(r));
    let pool = database(app).map_err(refuse)?;
    if !valid_namespace(raw) {
        return Err(refuse(Refusal(
            StatusCode::BAD_REQUEST,
            Why::InvalidNamespace,
            "a namespace is 1-32 characters of [a-z0-9_-]".into(),
        )));
    }
    let Some(ns) = app.config.namespace(raw) else {
        let message = if raw == PERSONA {
            "`persona` is not a [[channels]] namespace: a persona's analytics are at /api/analytics/{persona_id}/…".into()
        } else {
            format!("no [[channels]] namespace `{raw}`")
        };
        return Err(refuse(Refusal(
            StatusCode::NOT_FOUND,
            Why::UnknownNamespace,
            message,
        )));
    };
    if ns.history == 0 {
        return Err(refuse(Refusal(
            StatusCode::NOT_FOUND,
            Why::NamespaceNotAudited,
            format!(
                "namespace `{raw}` keeps no history (history = 0), so nothing of it is audited"
            ),
        )));
    }
    if claims.is_some_and(|c| !c.allows_namespace(ns)) {
        return Err(super::forbidden(
            app,
            &format!(
                "this token does not grant the whole namespace `{raw}` (its analytics need `{raw}:*` or `*`, and its role)"
            ),
        ));
    }
    Ok((pool, ns))
}

/// `GET /api/analytics/channels`: the audited namespaces (`history > 0`)
/// the token may read, for a page to offer.
pub fn namespaces(app: &App, claims: Option<&Claims>) -> Response<Body> {
    let result = database(app).map(|_| {
        let names: Vec<Value> = app
            .config
            .channels
            .iter()
            .filter(|ns| ns.history > 0 && claims.is_none_or(|c| c.allows_namespace(ns)))
            .map(|ns| json!({"name": ns.name, "history": ns.history}))
            .collect();
        json!({ "namespaces": names })
    });
    answer(app, result)
}

/// `GET /api/analytics/channels/{namespace}/summary?since=&until=`
pub async fn summary(
    app: &App,
    raw: &str,
    claims: Option<&Claims>,
    query: Option<&str>,
) -> Response<Body> {
    let (pool, ns) = match start(app, raw, claims) {
        Ok(found) => found,
        Err(res) => return res,
    };
    let result = async {
        let range = params::range(query, now_ms(), DAY_MS)?;
        let mut body = channels::summary(pool, &ns.name, range).await?;
        if let Value::Object(m) = &mut body {
            m.insert("namespace".into(), ns.name.as_str().into());
            m.insert("since".into(), rfc(range.since).into());
            m.insert("until".into(), rfc(range.until).into());
        }
        Ok(body)
    }
    .await;
    answer(app, result)
}

/// `GET /api/analytics/channels/{namespace}/histogram?metric=messages&bucket=&since=&until=`
pub async fn histogram(
    app: &App,
    raw: &str,
    claims: Option<&Claims>,
    query: Option<&str>,
) -> Response<Body> {
    let (pool, ns) = match start(app, raw, claims) {
        Ok(found) => found,
        Err(res) => return res,
    };
    let result = async {
        let metric = channels::metric(query)?;
        let bucket = params::bucket(query)?;
        let range = params::range(query, now_ms(), params::default_span(bucket))?;
        params::bounded_buckets(range, bucket)?;
        let (types, buckets) = channels::histogram(pool, &ns.name, range, bucket).await?;
        Ok(json!({
            "namespace": ns.name,
            "metric": metric,
            "bucket": bucket.unit(),
            "since": rfc(range.since),
            "until": rfc(range.until),
            "types": types,
            "buckets": buckets,
        }))
    }
    .await;
    answer(app, result)
}
