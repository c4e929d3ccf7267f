//! Server-Sent Events encoding (`docs/protocol.md`, "Server-Sent Events"):
//! the same JSON a WebSocket client gets, as one event each, with `event:`
//! its `type` and `id:` its stream offset (`<channel>@<offset>` on the
//! multiplexed endpoint, where one id must say which channel it is from).
//!
//! The hub encodes each publication's event once for every SSE subscriber
//! (`hub/message.rs`). Everything else a connection's outbox holds (replies,
//! snapshots, replays, status notices, the close) is made as a WebSocket
//! frame by the code both transports share, and turned into its event by
//! [`put`] as it goes out: a WebSocket frame starts with a byte whose top
//! bit (FIN) is set, an event with an ASCII field name, so the two are told
//! apart by their first byte.

use std::borrow::Cow;

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::close;
use crate::stream::{format_offset, parse_offset};

/// What an event's `id:` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ids {
    /// `/sse/{persona}`: the offset, as `?since=` takes it.
    Offset,
    /// `/sse?channel=`: `<channel>@<offset>`, as `?since=` takes it there.
    ChannelOffset,
}

/// Sent every `sse.keepalive_interval` on a quiet stream: proxies see
/// traffic, and a client that has gone is found by the failed write.
pub const KEEPALIVE: &[u8] = b": keep-alive\n\n";

/// The first bytes of every stream: lets the client's `open` fire before
/// the first event is ready (a snapshot read can take a while).
pub const OPENING: &[u8] = b": pulsegate\n\n";

/// The fields of a message that name its event; everything else is skipped
/// unparsed.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Field<'a>>,
    #[serde(borrow, default)]
    offset: Option<Field<'a>>,
    #[serde(borrow, default)]
    channel: Option<Field<'a>>,
}

/// A string, or anything else (which names nothing).
#[derive(Deserialize)]
#[serde(untagged)]
enum Field<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Other(IgnoredAny),
}

impl Field<'_> {
    fn text(field: &Option<Self>) -> Option<&str> {
        match field {
            Some(Field::Text(t)) => Some(t),
            _ => None,
        }
    }
}

/// Whether `s` may stand in an `event:` or `id:` line as it is: no line
/// breaks, nothing a client could misread (the channel and type alphabet).
fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// The event for one JSON message. A message whose `type` is not a plain
/// name goes out unnamed (a `message` event); one without a valid offset
/// carries no `id:`, so the client's last event id stays where it was.
pub fn event(json: &[u8], ids: Ids) -> Bytes {
    let head: Option<Head<'_>> = serde_json::from_slice(json).ok();
    let mut out = Vec::with_capacity(json.len() + 96);
    if let Some(head) = &head {
        if let Some(offset) = Field::text(&head.offset).and_then(parse_offset) {
            let channel = Field::text(&head.channel).filter(|c| is_name(c));
            match (ids, channel) {
                (Ids::Offset, _) => put_line(&mut out, b"id: ", format_offset(offset).as_bytes()),
                (Ids::ChannelOffset, Some(channel)) => {
                    let id = format!("{channel}@{}", format_offset(offset));
                    put_line(&mut out, b"id: ", id.as_bytes());
                }
                (Ids::ChannelOffset, None) => {}
            }
        }
        if let Some(kind) = Field::text(&head.kind).filter(|k| is_name(k)) {
            put_line(&mut out, b"event: ", kind.as_bytes());
        }
    }
    put_data(&mut out, json);
    out.push(b'\n');
    out.into()
}

/// The last event of a stream closed by the server, from the WebSocket
/// close it stands for: the drain's 1012 becomes `event: reconnect` with
/// the same `{"reconnect_ms":n}` and a `retry:` of that many milliseconds
/// (a bare `EventSource` then comes back on time by itself, with
/// `Last-Event-ID`); any other code `event: close` with
/// `{"code":n,"reason":"..."}`.
pub fn closing(code: u16, reason: &str) -> Bytes {
    let mut out = Vec::with_capacity(reason.len() + 64);
    if code == close::SERVICE_RESTART {
        let ms = serde_json::from_str::<serde_json::Value>(reason)
            .ok()
            .and_then(|v| v.get("reconnect_ms").and_then(serde_json::Value::as_u64));
        put_line(&mut out, b"event: ", b"reconnect");
        put_data(&mut out, reason.as_bytes());
        if let Some(ms) = ms {
            put_line(&mut out, b"retry: ", ms.to_string().as_bytes());
        }
    } else {
        let body = serde_json::json!({ "code": code, "reason": reason }).to_string();
        put_line(&mut out, b"event: ", b"close");
        put_data(&mut out, body.as_bytes());
    }
    out.push(b'\n');
    out.into()
}

/// Appends one outbox entry to `out` as SSE: an event the hub encoded is
/// copied; a WebSocket text frame becomes its event; a close frame the
/// stream's last event ([`closing`]); pings and pongs (never queued for SSE)
/// nothing.
pub fn put(out: &mut Vec<u8>, entry: &[u8], ids: Ids) {
    let Some(&first) = entry.first() else {
        return;
    };
    if first & 0x80 == 0 {
        out.extend_from_slice(entry);
        return;
    }
    let Some(payload) = ws_payload(entry) else {
        return;
    };
    match first & 0x0f {
        0x1 => out.extend_from_slice(&event(payload, ids)),
        0x8 => out.extend_from_slice(&closing_frame(payload)),
        _ => {}
    }
}

/// The final event for a WebSocket close payload (code, then reason).
pub fn closing_frame(payload: &[u8]) -> Bytes {
    let (code, reason) = match payload {
        [hi, lo, reason @ ..] => (
            u16::from_be_bytes([*hi, *lo]),
            String::from_utf8_lossy(reason),
        ),
        _ => (close::GOING_AWAY, Cow::Borrowed("")),
    };
    closing(code, &reason)
}

/// The payload of an unmasked frame as `protocol/frame.rs` encodes them.
fn ws_payload(frame: &[u8]) -> Option<&[u8]> {
    let header = match frame.get(1)? & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    frame.get(header..)
}

fn put_line(out: &mut Vec<u8>, field: &[u8], value: &[u8]) {
    out.extend_from_slice(field);
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// One `data:` line per line of `data` (CR, LF and CRLF all end a line in
/// SSE): the client joins them with LF, which in JSON only ever stands
/// between tokens, so the message parses the same.
fn put_data(out: &mut Vec<u8>, data: &[u8]) {
    let mut rest = data;
    loop {
        match rest.iter().position(|b| matches!(b, b'\n' | b'\r')) {
            None => {
                put_line(out, b"data: ", rest);
                return;
            }
            Some(i) => {
                put_line(out, b"data: ", &rest[..i]);
                let crlf = rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n');
                rest = &rest[i + if crlf { 2 } else { 1 }..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame;

    fn text(b: &Bytes) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    #[test]
    fn names_events_by_type_and_offset() {
        let m = br#"{"type":"variant_update","offset":"17-3","data":{"x":"a\nb"}}"#;
        assert_eq!(
            text(&event(m, Ids::Offset)),
            format!(
                "id: 17-3\nevent: variant_update\ndata: {}\n\n",
                std::str::from_utf8(m).unwrap()
            )
        );
        let w = br#"{"type":"message","channel":"persona:p","offset":"17-3","data":{}}"#;
        assert!(
            text(&event(w, Ids::ChannelOffset)).starts_with("id: persona:p@17-3\nevent: message\n")
        );
        // Without a channel, a multiplexed event has no id to give.
        assert!(text(&event(m, Ids::ChannelOffset)).starts_with("event: variant_update\n"));
    }

    #[test]
    fn hostile_fields_never_make_lines_of_their_own() {
        for m in [
            &br#"{"type":"a\nretry: 1","offset":"1-0\nid: 9-9"}"#[..],
            br#"{"type":7,"offset":[1]}"#,
            br#"[1,2]"#,
            b"not json",
            br#"{"type":"x","type":"y"}"#,
        ] {
            let e = event(m, Ids::Offset);
            let lines: Vec<&str> = text(&e).lines().collect();
            assert!(
                lines
                    .iter()
                    .all(|l| l.is_empty() || l.starts_with("data: ")),
                "{lines:?}"
            );
        }
        let pretty = b"{\r\n \"type\": \"status\",\n\r\"redis\": \"up\"\r}";
        assert_eq!(
            text(&event(pretty, Ids::Offset)),
            "event: status\ndata: {\ndata:  \"type\": \"status\",\ndata: \ndata: \"redis\": \"up\"\ndata: }\n\n"
        );
    }

    #[test]
    fn websocket_frames_become_events() {
        let mut out = Vec::new();
        put(&mut out, &frame::text(br#"{"type":"pong"}"#), Ids::Offset);
        put(&mut out, &frame::ping(b""), Ids::Offset);
        put(
            &mut out,
            &event(br#"{"type":"x"}"#, Ids::Offset),
            Ids::Offset,
        );
        let big = format!(
            r#"{{"type":"initial_data","offset":"5-0","data":"{}"}}"#,
            "a".repeat(70_000)
        );
        put(&mut out, &frame::text(big.as_bytes()), Ids::Offset);
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("event: pong\ndata: {\"type\":\"pong\"}\n\nevent: x\n"));
        assert!(out.contains("id: 5-0\nevent: initial_data\n"));
        let reason = close::reconnect_reason(std::time::Duration::from_millis(1234));
        let mut out = Vec::new();
        put(
            &mut out,
            &frame::close(close::SERVICE_RESTART, &reason),
            Ids::Offset,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "event: reconnect\ndata: {\"reconnect_ms\":1234}\nretry: 1234\n\n"
        );
        assert_eq!(
            text(&closing(close::SLOW_CONSUMER, "slow")),
            "event: close\ndata: {\"code\":4008,\"reason\":\"slow\"}\n\n"
        );
    }
}
