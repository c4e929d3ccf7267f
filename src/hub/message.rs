//! Inspection and encoding of a publication, done once per message whatever
//! the number of subscribers.

use std::sync::Arc;

use simd_json::prelude::*;

use crate::ws::frame;
use crate::ws::outbox::{Delivery, Offset};

/// Why a Redis payload was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    #[error("payload is not valid JSON")]
    InvalidJson,
    #[error("payload is not a JSON object")]
    NotObject,
}

impl RejectReason {
    pub fn label(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::NotObject => "not_object",
        }
    }
}

/// What the hub needs to know about a payload.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Inspected {
    /// `data.variant_id` of a `variant_update` whose `data.event_type` is
    /// `performance_update`: these may be conflated for lagging clients.
    pub conflation_variant: Option<String>,
    pub offset: Option<Offset>,
}

/// Checks the payload is a JSON object and reads the fields routing needs.
pub fn inspect(payload: &[u8]) -> Result<Inspected, RejectReason> {
    let mut scratch = payload.to_vec();
    let value =
        simd_json::to_borrowed_value(&mut scratch).map_err(|_| RejectReason::InvalidJson)?;
    if value.as_object().is_none() {
        return Err(RejectReason::NotObject);
    }
    let mut out = Inspected {
        offset: value.get_str("offset").and_then(parse_offset),
        ..Default::default()
    };
    if value.get_str("type") == Some("variant_update") {
        if let Some(data) = value.get("data") {
            if data.get_str("event_type") == Some("performance_update") {
                out.conflation_variant = data.get_str("variant_id").map(str::to_owned);
            }
        }
    }
    Ok(out)
}

/// Parses a stream id `<ms>-<seq>`.
pub fn parse_offset(s: &str) -> Option<Offset> {
    let (ms, seq) = s.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// The frame for `/dashboard/ws/{persona}` clients: the payload verbatim.
pub fn verbatim(payload: &[u8], meta: &Inspected, channel: &str) -> Delivery {
    Delivery {
        frame: frame::text(payload),
        conflation_key: conflation_key(meta, channel),
        offset: meta.offset,
    }
}

/// The frame for `/ws` clients: `{"type":"message","channel":...,"data":<payload>}`.
pub fn wrapped(payload: &[u8], meta: &Inspected, ws_channel: &str) -> Delivery {
    let mut body = Vec::with_capacity(payload.len() + ws_channel.len() + 40);
    body.extend_from_slice(b"{\"type\":\"message\",\"channel\":");
    // Channel names are validated ([A-Za-z0-9_.:-]) and need no escaping,
    // but serde_json keeps that true if the rule ever changes.
    let _ = serde_json::to_writer(&mut body, ws_channel);
    body.extend_from_slice(b",\"data\":");
    body.extend_from_slice(payload);
    body.push(b'}');
    Delivery {
        frame: frame::text(&body),
        conflation_key: conflation_key(meta, ws_channel),
        offset: meta.offset,
    }
}

fn conflation_key(meta: &Inspected, channel: &str) -> Option<Arc<str>> {
    meta.conflation_variant
        .as_ref()
        .map(|v| format!("{channel}\0{v}").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspects_payloads() {
        assert_eq!(inspect(b"nope"), Err(RejectReason::InvalidJson));
        assert_eq!(inspect(b"[1,2]"), Err(RejectReason::NotObject));
        assert_eq!(inspect(b"\"s\""), Err(RejectReason::NotObject));
        assert_eq!(inspect(b"{}"), Ok(Inspected::default()));
        let m = inspect(
            br#"{"type":"variant_update","offset":"17-3","data":{"event_type":"performance_update","variant_id":"v1"}}"#,
        )
        .unwrap();
        assert_eq!(m.conflation_variant.as_deref(), Some("v1"));
        assert_eq!(m.offset, Some((17, 3)));
        let m = inspect(
            br#"{"type":"variant_update","data":{"event_type":"early_kill","variant_id":"v1"}}"#,
        )
        .unwrap();
        assert_eq!(m.conflation_variant, None);
    }

    #[test]
    fn wraps_for_the_multiplexed_endpoint() {
        let d = wrapped(br#"{"a":1}"#, &Inspected::default(), "persona:p");
        assert_eq!(
            &d.frame[2..],
            br#"{"type":"message","channel":"persona:p","data":{"a":1}}"#
        );
    }
}
