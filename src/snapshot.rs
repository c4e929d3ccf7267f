//! The persona snapshot: read atomically with `FCALL_RO pulse_snapshot`
//! (aggregates and the stream offset they are current to), enriched, and
//! shaped as `initial_data`. Concurrent readers of one persona share one
//! read (`src/singleflight.rs`): a caller gets a read sent after it asked,
//! so a dashboard that subscribed first still misses nothing; the
//! `initial_data` frame is encoded once per read and framing, and
//! compressed once for the clients with permessage-deflate.

use std::sync::{Arc, Mutex, OnceLock};

use fred::clients::Client;
use serde_json::{json, Value};

use crate::config::{IngestConfig, OptimizationConfig};
use crate::dashboard::{suggestions, RawSnapshot};
use crate::hub::outbox::deflate::SharedFrame;
use crate::keys::{Keys, PersonaId};
use crate::metrics::{self, Metrics, ReadPath, Repair};
use crate::protocol::{frame, ServerMessage};
use crate::singleflight::{Flights, Role};
use crate::stream::{parse_offset, Offset};
use crate::undecodable::{self, lossy};

/// Most personas with a snapshot read in flight at once that are shared;
/// past it a reader reads alone.
const MAX_SHARED: usize = 10_000;
/// Most framings of `initial_data` kept per read (one per endpoint and
/// `recovered` value in practice); past it frames are encoded per caller.
const MAX_FRAMINGS: usize = 8;

/// A snapshot read as each caller that shared it gets it.
pub type Fetch = Result<Arc<Fetched>, Arc<SnapshotError>>;

/// An encoded `initial_data` frame and the framing it is for: the `/ws`
/// channel (none on the dashboard endpoint) and `recovered`.
type Framed = (Option<String>, Option<bool>, SharedFrame);

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
    /// Counts snapshot reads, the readers that shared them, and snapshots
    /// that held bytes that are not UTF-8.
    pub metrics: Arc<Metrics>,
    /// Snapshot reads in flight, by persona.
    pub flights: Arc<Flights<PersonaId, Fetch>>,
}

impl Source {
    /// The shared-read map a `Source` starts with.
    pub fn flights() -> Arc<Flights<PersonaId, Fetch>> {
        Arc::new(Flights::new(MAX_SHARED))
    }
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

/// One snapshot read, shared by every caller that joined it.
#[derive(Debug)]
pub struct Fetched {
    /// The enriched snapshot (REST answers are built from it).
    pub raw: RawSnapshot,
    /// The stream offset it is current to (`None`: no events yet).
    pub covered: Option<Offset>,
    /// The `initial_data` payload, built at first use.
    initial: OnceLock<Snapshot>,
    /// Encoded `initial_data` frames by channel and `recovered`: the same
    /// bytes for every client of a framing (and the same compressed bytes
    /// for every client of it with permessage-deflate).
    frames: Mutex<Vec<Framed>>,
}

impl Fetched {
    fn new(raw: RawSnapshot) -> Self {
        Self {
            covered: raw.offset.as_deref().and_then(parse_offset),
            raw,
            initial: OnceLock::new(),
            frames: Mutex::new(Vec::new()),
        }
    }

    /// The `initial_data` payload.
    pub fn snapshot(&self, src: &Source) -> &Snapshot {
        self.initial.get_or_init(|| Snapshot {
            offset: self.raw.offset.clone(),
            data: dashboard_data(&self.raw, &src.optimization, &src.ingest),
        })
    }

    /// The `initial_data` frame, encoded by the first caller of a framing;
    /// the others wait for it rather than encode it again.
    pub fn frame(
        &self,
        src: &Source,
        channel: Option<&str>,
        recovered: Option<bool>,
    ) -> SharedFrame {
        let mut frames = self.frames.lock().unwrap_or_else(|e| e.into_inner());
        let known = frames
            .iter()
            .find(|(c, r, _)| c.as_deref() == channel && *r == recovered);
        if let Some((_, _, f)) = known {
            return f.clone();
        }
        let f = SharedFrame::new(frame::text(
            &self.snapshot(src).to_message(channel, recovered),
        ));
        if frames.len() < MAX_FRAMINGS {
            frames.push((channel.map(str::to_owned), recovered, f.clone()));
        }
        f
    }
}

/// The snapshot of `persona`, from a read sent after this was called: the
/// one another caller queued if it has not been sent yet, else a new one
/// (sent when the read under way, if any, ends).
pub async fn fetch(src: &Source, persona: &PersonaId) -> Fetch {
    let (fetched, role) = src
        .flights
        .run(persona.clone(), || {
            let (src, persona) = (src.clone(), persona.clone());
            async move {
                src.metrics.reads.sent(metrics::Read::Snapshot);
                match read(&src, &persona).await {
                    Ok(raw) => Ok(Arc::new(Fetched::new(raw))),
                    Err(e) => Err(Arc::new(e)),
                }
            }
        })
        .await;
    if role == Role::Joined {
        src.metrics.reads.shared(metrics::Read::Snapshot);
    }
    fetched
}

/// Reads and enriches the raw snapshot of `persona`. The reply is taken as
/// bytes: `pulse_snapshot` encodes stored strings as they are, so one stored
/// invalid byte (say, a variant's content) would otherwise fail every
/// snapshot of the persona; it is served with U+FFFD instead.
async fn read(src: &Source, persona: &PersonaId) -> Result<RawSnapshot, SnapshotError> {
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
