//! Inspection and encoding of a publication, done once per message whatever
//! the number of subscribers.

use std::sync::Arc;

use simd_json::prelude::*;

use crate::hub::outbox::Delivery;
use crate::protocol::{frame, sse};
use crate::stream::{format_offset, parse_offset, Offset};

/// Why a Redis payload was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    #[error("payload is not valid JSON")]
    InvalidJson,
    #[error("payload is not a JSON object")]
    NotObject,
    #[error("payload nests deeper than the JSON depth bound")]
    TooDeep,
    #[error("payload is larger than redis.max_message_bytes")]
    TooLarge,
}

impl RejectReason {
    pub fn label(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::NotObject => "not_object",
            Self::TooDeep => "too_deep",
            Self::TooLarge => "too_large",
        }
    }
}

/// What a publication may be before anyone parses it: it comes from Redis,
/// where any client can PUBLISH anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// `redis.max_message_bytes`.
    pub max_bytes: usize,
    /// `limits.max_json_depth`.
    pub max_depth: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_bytes: 1024 * 1024,
            max_depth: crate::json_limit::DEFAULT_MAX_DEPTH,
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

/// Checks the payload is a bounded JSON object and reads the fields routing
/// needs. The size and depth are checked first, so an oversized or deeply
/// nested payload costs one flat scan and is never copied or parsed.
pub fn inspect(payload: &[u8], bounds: Bounds) -> Result<Inspected, RejectReason> {
    inspect_keyed(payload, bounds, None)
}

/// [`inspect`] for a channel whose namespace conflates (`[[channels]].conflate`):
/// the value (a string or a number) at the field path `conflate` keys the
/// publication's latest-wins slot; without it, or without that field, it is
/// lossless. Persona channels (`conflate` None) conflate performance updates.
pub fn inspect_keyed(
    payload: &[u8],
    bounds: Bounds,
    conflate: Option<&[String]>,
) -> Result<Inspected, RejectReason> {
    if payload.len() > bounds.max_bytes {
        return Err(RejectReason::TooLarge);
    }
    crate::json_limit::check_depth(payload, bounds.max_depth).map_err(|_| RejectReason::TooDeep)?;
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
    if let Some(path) = conflate {
        let mut at = Some(&value);
        for field in path {
            at = at.and_then(|v| v.get(field.as_str()));
        }
        out.conflation_variant = at.and_then(|v| match v.as_str() {
            Some(s) => Some(s.to_owned()),
            None if v.is_number() => Some(v.encode()),
            None => None,
        });
        return Ok(out);
    }
    if value.get_str("type") == Some("variant_update") {
        if let Some(data) = value.get("data") {
            if data.get_str("event_type") == Some("performance_update") {
                out.conflation_variant = data.get_str("variant_id").map(str::to_owned);
            }
        }
    }
    Ok(out)
}

/// The frame for `/dashboard/ws/{persona}` clients: the payload verbatim.
pub fn verbatim(payload: &[u8], meta: &Inspected, channel: &str) -> Delivery {
    Delivery {
        frame: frame::text(payload),
        conflation_key: conflation_key(meta, channel),
        offset: meta.offset,
        channel: None,
    }
}

/// The frame for `/ws` clients:
/// `{"type":"message","channel":...,"offset":...,"data":<payload>}`.
pub fn wrapped(payload: &[u8], meta: &Inspected, ws_channel: &Arc<str>) -> Delivery {
    Delivery {
        frame: wrap(payload, meta.offset, ws_channel),
        conflation_key: conflation_key(meta, ws_channel),
        offset: meta.offset,
        channel: Some(ws_channel.clone()),
    }
}

/// The `message` envelope of one publication (live, or replayed on a `/ws`
/// resume). `offset` sits at the top level beside `channel` and `data`
/// (DECISIONS #6), left out for a publication without one (a raw PUBLISH).
pub fn wrap(payload: &[u8], offset: Option<Offset>, ws_channel: &str) -> bytes::Bytes {
    frame::text(&envelope(payload, offset, ws_channel))
}

/// The event for `/sse/{persona}` clients: the payload verbatim, named by
/// its `type`, with its offset as the event id.
pub fn sse_verbatim(payload: &[u8], meta: &Inspected, channel: &str) -> Delivery {
    Delivery {
        frame: sse::event(payload, sse::Ids::Offset),
        conflation_key: conflation_key(meta, channel),
        offset: meta.offset,
        channel: None,
    }
}

/// The event for `/sse?channel=` clients: the `/ws` envelope, with
/// `<channel>@<offset>` as the event id.
pub fn sse_wrapped(payload: &[u8], meta: &Inspected, ws_channel: &Arc<str>) -> Delivery {
    let body = envelope(payload, meta.offset, ws_channel);
    Delivery {
        frame: sse::event(&body, sse::Ids::ChannelOffset),
        conflation_key: conflation_key(meta, ws_channel),
        offset: meta.offset,
        channel: Some(ws_channel.clone()),
    }
}

/// The JSON of the `message` envelope (see [`wrap`]).
fn envelope(payload: &[u8], offset: Option<Offset>, ws_channel: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(payload.len() + ws_channel.len() + 72);
    body.extend_from_slice(b"{\"type\":\"message\",\"channel\":");
    // Channel names are validated ([A-Za-z0-9_.:-]) and need no escaping,
    // but serde_json keeps that true if the rule ever changes.
    let _ = serde_json::to_writer(&mut body, ws_channel);
    if let Some(offset) = offset {
        // Digits and a dash: nothing to escape.
        body.extend_from_slice(b",\"offset\":\"");
        body.extend_from_slice(format_offset(offset).as_bytes());
        body.push(b'"');
    }
    body.extend_from_slice(b",\"data\":");
    body.extend_from_slice(payload);
    body.push(b'}');
    body
}

fn conflation_key(meta: &Inspected, channel: &str) -> Option<Arc<str>> {
    meta.conflation_variant
        .as_ref()
        .map(|v| format!("{channel}\0{v}").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inspect(payload: &[u8]) -> Result<Inspected, RejectReason> {
        super::inspect(payload, Bounds::default())
    }

    #[test]
    fn refuses_oversized_and_deep_payloads_before_parsing() {
        let small = Bounds {
            max_bytes: 16,
            max_depth: 2,
        };
        assert_eq!(super::inspect(b"{}", small), Ok(Inspected::default()));
        assert_eq!(
            super::inspect(br#"{"a":"0123456789"}"#, small),
            Err(RejectReason::TooLarge)
        );
        assert_eq!(
            super::inspect(br#"{"a":[[1]]}"#, small),
            Err(RejectReason::TooDeep)
        );
        for (open, close) in [("{\"a\":", "}"), ("[", "]")] {
            let deep = format!("{}1{}", open.repeat(100_000), close.repeat(100_000));
            let wide = Bounds {
                max_bytes: usize::MAX,
                max_depth: 64,
            };
            assert_eq!(
                super::inspect(deep.as_bytes(), wide),
                Err(RejectReason::TooDeep)
            );
        }
    }

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
    fn a_namespace_conflates_on_its_field_path() {
        let path = ["data".to_owned(), "task_id".to_owned()];
        let keyed = |p: &[u8]| super::inspect_keyed(p, Bounds::default(), Some(&path));
        let m = keyed(br#"{"type":"task_status","data":{"task_id":"t1"}}"#).unwrap();
        assert_eq!(m.conflation_variant.as_deref(), Some("t1"));
        let m = keyed(br#"{"data":{"task_id":42}}"#).unwrap();
        assert_eq!(m.conflation_variant.as_deref(), Some("42"));
        for lossless in [
            &br#"{"data":{}}"#[..],
            br#"{"data":{"task_id":{}}}"#,
            br#"{"data":7}"#,
        ] {
            assert_eq!(keyed(lossless).unwrap().conflation_variant, None);
        }
        // A persona-style update is not conflated in a namespace with a path.
        let p = br#"{"type":"variant_update","data":{"event_type":"performance_update","variant_id":"v1"}}"#;
        assert_eq!(keyed(p).unwrap().conflation_variant, None);
    }

    #[test]
    fn wraps_for_the_multiplexed_endpoint() {
        let channel: Arc<str> = Arc::from("persona:p");
        let d = wrapped(br#"{"a":1}"#, &Inspected::default(), &channel);
        assert_eq!(
            &d.frame[2..],
            br#"{"type":"message","channel":"persona:p","data":{"a":1}}"#
        );
        assert_eq!(d.channel.as_deref(), Some("persona:p"));
        let payload = br#"{"type":"variant_update","offset":"17-3","data":{}}"#;
        let d = wrapped(payload, &inspect(payload).unwrap(), &channel);
        let expected = br#"{"type":"message","channel":"persona:p","offset":"17-3","data":{"type":"variant_update","offset":"17-3","data":{}}}"#;
        assert_eq!(&d.frame[2..], &expected[..]);
        assert_eq!(d.offset, Some((17, 3)));
    }

    /// The fuzz target's seeds and a few thousand cheap mutations of them, in
    /// every test run (cargo-fuzz needs nightly; this needs nothing): no
    /// panic, and an accepted payload wraps into one JSON object.
    #[test]
    fn survives_the_fuzz_seeds_and_their_mutations() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/hub_message");
        let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
            .expect("fuzz/seeds/hub_message")
            .map(|e| std::fs::read(e.expect("entry").path()).expect("seed"))
            .collect();
        seeds.push(format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes());
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let bounds = Bounds {
            max_bytes: 1 << 20,
            max_depth: 64,
        };
        for seed in &seeds {
            for round in 0..300 {
                let mut m = seed.clone();
                if round > 0 && !m.is_empty() {
                    for _ in 0..1 + next() % 4 {
                        let i = (next() % m.len() as u64) as usize;
                        const ALPHABET: &[u8] = b"{}[]\":,0\xff a";
                        m[i] = ALPHABET[(next() % ALPHABET.len() as u64) as usize];
                    }
                }
                if let Ok(meta) = super::inspect(&m, bounds) {
                    let d = wrapped(&m, &meta, &Arc::from("persona:p"));
                    let header = match d.frame[1] & 0x7f {
                        126 => 4,
                        127 => 10,
                        _ => 2,
                    };
                    let v: serde_json::Value =
                        serde_json::from_slice(&d.frame[header..]).expect("an envelope");
                    assert!(v.is_object());
                }
            }
        }
    }
}
