//! The persona snapshot sent as `initial_data`.
//!
//! The shape is fixed: `summary`, `active_variants`,
//! `optimization_opportunities`. The ingest functions (lua/) fill it from
//! Redis; until a persona has data the fields are empty.

use serde_json::{json, Value};

use crate::keys::PersonaId;
use crate::protocol::ServerMessage;

#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The stream id the snapshot is current to (`None`: no events yet).
    pub offset: Option<String>,
    pub data: Value,
}

impl Snapshot {
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
    #[error("Redis is unavailable: {0}")]
    Redis(String),
}

/// Reads the snapshot of `persona`.
pub async fn fetch(_persona: &PersonaId) -> Result<Snapshot, SnapshotError> {
    Ok(Snapshot::empty())
}
