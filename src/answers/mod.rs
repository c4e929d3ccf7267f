//! The REST read answers (docs/api.md): each read route's JSON, built from
//! one atomic snapshot of the persona, and kept current in the background
//! by [`cache`]. HTTP only maps them to responses (`http/api.rs`).

pub mod cache;

use std::sync::Arc;

use bytes::Bytes;
use fred::prelude::*;
use hyper::StatusCode;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::dashboard::{human_duration, suggestions, RawSnapshot};
use crate::keys::PersonaId;
use crate::metrics::{ReadPath, Repair};
use crate::redis::text;
use crate::snapshot::{self, Fetched, SnapshotError, Source};
use crate::stream::{parse_offset, Offset};
use crate::undecodable;

/// Entries of the stream shown as `real_time_feed`.
const FEED_LEN: usize = 20;

/// The cached read routes; each is a bit in a route set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Metrics = 0,
    ActiveVariants = 1,
    Optimization = 2,
}

impl Route {
    pub const ALL: [Route; 3] = [Route::Metrics, Route::ActiveVariants, Route::Optimization];

    pub fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// One route's answer as sent.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// The answers built from one snapshot.
#[derive(Debug)]
pub struct Built {
    /// The stream offset the snapshot was current to (`None`: no events).
    pub offset: Option<Offset>,
    pub at: Instant,
    pub answers: [Option<Answer>; 3],
}

impl Built {
    pub fn answer(&self, route: Route) -> Option<&Answer> {
        self.answers[route as usize].as_ref()
    }
}

/// An API failure: the status, a stable code and a message for people.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

/// The persona's snapshot (shared with concurrent readers of the persona);
/// `None` when it has no data yet.
async fn load(src: &Source, persona: &PersonaId) -> Result<Option<Arc<Fetched>>, ApiError> {
    let snap = snapshot::fetch(src, persona).await.map_err(|e| {
        tracing::warn!(%persona, error = %e, "snapshot failed");
        match &*e {
            SnapshotError::Redis(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "redis_unavailable",
                e.to_string(),
            ),
            SnapshotError::Decode(_) | SnapshotError::NotText => {
                ApiError::new(StatusCode::BAD_GATEWAY, "bad_snapshot", e.to_string())
            }
        }
    })?;
    Ok((snap.raw.offset.is_some() || snap.raw.summary.total_variants > 0).then_some(snap))
}

/// Builds the answers of the routes in `routes` (a route set) from one
/// snapshot. An unknown persona is an answer (404); Redis failing is an error.
pub async fn build(
    src: &Source,
    persona: &PersonaId,
    routes: u8,
    started: Instant,
) -> Result<Built, ApiError> {
    let fetched = load(src, persona).await?;
    let snap = fetched.as_deref().map(|f| &f.raw);
    let feed = match &snap {
        Some(_) if routes & Route::Metrics.bit() != 0 => real_time_feed(src, persona).await,
        _ => Value::Null,
    };
    let mut built = Built {
        offset: snap
            .as_ref()
            .and_then(|s| s.offset.as_deref())
            .and_then(parse_offset),
        at: started,
        answers: [None, None, None],
    };
    for route in Route::ALL.into_iter().filter(|r| routes & r.bit() != 0) {
        let (status, body) = match &snap {
            None => (
                StatusCode::NOT_FOUND,
                serde_json::to_vec(&json!({"error": {
                    "code": "unknown_persona",
                    "message": format!("no events recorded for persona `{persona}`"),
                }}))
                .unwrap_or_default(),
            ),
            Some(snap) => (
                StatusCode::OK,
                serde_json::to_vec(&answer_body(src, route, persona, snap, &feed))
                    .unwrap_or_default(),
            ),
        };
        built.answers[route as usize] = Some(Answer {
            status,
            body: body.into(),
        });
    }
    Ok(built)
}

fn answer_body(
    src: &Source,
    route: Route,
    persona: &PersonaId,
    snap: &RawSnapshot,
    feed: &Value,
) -> Value {
    match route {
        Route::Metrics => metrics_body(src, persona, snap, feed),
        Route::ActiveVariants => active_variants_body(persona, snap),
        Route::Optimization => json!({
            "persona_id": persona.as_str(),
            "suggestions": suggestions::suggest(snap, &src.optimization),
        }),
    }
}

fn metrics_body(src: &Source, persona: &PersonaId, snap: &RawSnapshot, feed: &Value) -> Value {
    let cfg = &src.optimization;
    json!({
        "persona_id": persona.as_str(),
        "offset": snap.offset,
        "summary": {
            "total_variants": snap.summary.total_variants,
            "active_variants": snap.summary.active_variants,
            "avg_engagement_rate": snap.summary.avg_engagement_rate,
        },
        "active_variants": snap.active_variants,
        "performance_leaders": snap.leaders(cfg),
        "early_kills_today": {
            "kills_today": snap.summary.kills_today,
            "avg_time_to_kill_minutes": snap.summary.avg_time_to_kill_minutes,
            "kill_rate": snap.summary.kill_rate,
            "posted_in_window": snap.summary.posted_in_window,
            "killed_in_window": snap.summary.killed_in_window,
        },
        "pattern_fatigue_warnings": snapshot::fatigue_warnings(snap, &src.ingest),
        "optimization_opportunities": suggestions::suggest(snap, cfg),
        "real_time_feed": feed,
    })
}

fn active_variants_body(persona: &PersonaId, snap: &RawSnapshot) -> Value {
    let variants: Vec<Value> = snap
        .active_variants
        .iter()
        .map(|v| {
            let since = v.posted_at.map(|p| snap.now - p);
            json!({
                "id": v.variant_id,
                "content": v.content,
                "predicted_er": v.predicted_er,
                "pattern_used": v.pattern_used,
                "live_metrics": {
                    "engagement_rate": v.current_er,
                    "interactions": v.interaction_count,
                    "views": v.view_count,
                    "er_interval": v.er_interval,
                    "er_5m": v.er_5m,
                    "er_15m": v.er_15m,
                    "er_60m": v.er_60m,
                },
                "time_since_post": since.map(human_duration),
                "time_since_post_seconds": since.map(|ms| ms / 1000),
                "performance_vs_prediction": v.performance_vs_prediction,
                "verdict": v.verdict,
                "status": v.status,
            })
        })
        .collect();
    json!({"persona_id": persona.as_str(), "offset": snap.offset, "variants": variants})
}

/// The newest stream entries, newest first (what a dashboard feed shows).
/// An entry that is not UTF-8 is shown replaced (U+FFFD); one whose message
/// is still no JSON is left out. Either is counted (`src/undecodable.rs`).
async fn real_time_feed(src: &Source, persona: &PersonaId) -> Value {
    let key = src.keys.stream(persona);
    let reply: Result<fred::types::Value, _> = src
        .redis
        .xrevrange(key, "+", "-", Some(FEED_LEN as u64))
        .await;
    match reply.and_then(text::entries) {
        Ok(entries) => Value::Array(
            entries
                .into_iter()
                .filter_map(|(id, fields)| {
                    let message = serde_json::from_str(fields.map.get("m")?).ok();
                    if fields.replaced {
                        let action = match message {
                            Some(_) => Repair::Replaced,
                            None => Repair::Skipped,
                        };
                        let (metrics, p) = (&src.metrics, persona.as_str());
                        undecodable::report(metrics, ReadPath::Feed, action, p, Some(&id));
                    }
                    message
                })
                .collect(),
        ),
        Err(e) => {
            tracing::warn!(%persona, error = %e, "cannot read the feed");
            Value::Array(Vec::new())
        }
    }
}
