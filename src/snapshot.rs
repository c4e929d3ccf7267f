//! The persona snapshot: read atomically with `FCALL_RO pulse_snapshot`
//! (aggregates and the stream offset they are current to), enriched, and
//! shaped as `initial_data`.

use std::sync::Arc;

use fred::clients::Client;
use serde_json::{json, Value};

use crate::config::{IngestConfig, OptimizationConfig};
use crate::dashboard::{suggestions, RawSnapshot};
use crate::keys::{Keys, PersonaId};
use crate::metrics::{Metrics, ReadPath, Repair};
use crate::protocol::ServerMessage;
use crate::undecodable::{self, lossy};

/// What reading and shaping a snapshot takes, and nothing more: built once
/// at start, shared by the WebSocket sessions and the REST answers.
#[derive(Clone)]
pub struct Source {
    /// The command client (snapshots are `FCALL_RO`, any replica may serve).
    pub redis: Client,
    pub keys: Keys,
    /// The `[ingest]` options as the JSON argument of every function call.
    pub options: Arc<str>,
    /// The thresholds of the verdicts and suggestions.
    pub optimization: OptimizationConfig,
    /// The fatigue threshold and window the warnings quote.
    pub ingest: IngestConfig,
    /// Counts snapshots that held bytes that are not UTF-8.
    pub metrics: Arc<Metrics>,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The stream id the snapshot is current to (`None`: no events yet).
    pub offset: Option<String>,
    pub data: Value,
}

impl Snapshot {
    /// The fixed shape with nothing in it (used when Redis cannot answer).
    pub fn empty() -> Self {
        Self {
            offset: None,
            data: json!({
                "summary": {},
                "active_variants": [],
                "optimization_opportunities": [],
            }),
        }
    }

    /// The `initial_data` message; `channel` is set on the multiplexed endpoint.
    pub fn to_message(&self, channel: Option<&str>, recovered: Option<bool>) -> Vec<u8> {
        ServerMessage::InitialData {
            channel,
            offset: self.offset.as_deref(),
            recovered,
            data: &self.data,
        }
        .to_json()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("Redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("unexpected snapshot from Redis: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("unexpected snapshot from Redis: not a string")]
    NotText,
}

/// Reads and enriches the raw snapshot of `persona`. The reply is taken as
/// bytes: `pulse_snapshot` encodes stored strings as they are, so one stored
/// invalid byte (say, a variant's content) would otherwise fail every
/// snapshot of the persona; it is served with U+FFFD instead.
pub async fn fetch_raw(src: &Source, persona: &PersonaId) -> Result<RawSnapshot, SnapshotError> {
    use fred::prelude::*;
    let base = src.keys.base(persona);
    let reply: Value = src
        .redis
        .fcall_ro("pulse_snapshot", vec![base], vec![&*src.options])
        .await?;
    let raw = lossy(reply.as_bytes().ok_or(SnapshotError::NotText)?);
    if raw.replaced {
        undecodable::report(
            &src.metrics,
            ReadPath::Snapshot,
            Repair::Replaced,
            persona.as_str(),
            None,
        );
    }
    let mut snap: RawSnapshot = serde_json::from_str(&raw.text)?;
    snap.enrich(&src.optimization);
    Ok(snap)
}

/// The `initial_data` payload of `persona`.
pub async fn fetch(src: &Source, persona: &PersonaId) -> Result<Snapshot, SnapshotError> {
    let snap = fetch_raw(src, persona).await?;
    Ok(Snapshot {
        offset: snap.offset.clone(),
        data: dashboard_data(&snap, &src.optimization, &src.ingest),
    })
}

/// What a dashboard needs at once: the summary, the live table, and what to do.
pub fn dashboard_data(
    snap: &RawSnapshot,
    cfg: &OptimizationConfig,
    ingest: &IngestConfig,
) -> Value {
    json!({
        "summary": snap.summary,
        "active_variants": snap.active_variants,
        "active_variants_truncated": snap.active_variants_truncated,
        "optimization_opportunities": suggestions::suggest(snap, cfg),
        "performance_leaders": snap.leaders(cfg),
        "pattern_fatigue_warnings": fatigue_warnings(snap, ingest),
        "patterns": snap.patterns,
        "recent_kills": snap.recent_kills,
        "early_kills_today": {
            "kills_today": snap.summary.kills_today,
            "avg_time_to_kill_minutes": snap.summary.avg_time_to_kill_minutes,
        },
        "generated_at": snap.now,
    })
}

/// The fatigued patterns, each with the rule it broke.
pub fn fatigue_warnings(snap: &RawSnapshot, ingest: &IngestConfig) -> Value {
    Value::Array(
        snap.fatigued()
            .map(|p| {
                json!({
                    "pattern": p.pattern,
                    "usage_count": p.usage_count,
                    "threshold": ingest.pattern_fatigue_threshold,
                    "window_ms": ingest.pattern_window.as_millis() as u64,
                })
            })
            .collect(),
    )
}
