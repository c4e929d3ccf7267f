//! The WebSocket wire contract: client messages, server messages and close
//! codes. `docs/protocol.md` documents the same.

pub mod deflate;
pub mod extension;
pub mod frame;
pub mod sse;

use serde::Serialize;
use serde_json::Value;

use crate::stream::{parse_offset, Offset};

/// Close codes the gateway sends.
pub mod close {
    /// Server shutting down without a reconnect hint: only a connection the
    /// paced drain had not reached by `shutdown.drain_timeout`.
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol violation (bad frame sequence, bad close frame).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Binary frames are not part of the protocol.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// Text that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy violation (e.g. inbound message rate exceeded).
    pub const POLICY: u16 = 1008;
    /// An inbound message (summed over its fragments) exceeds the limit.
    pub const TOO_BIG: u16 = 1009;
    /// Internal error.
    pub const INTERNAL: u16 = 1011;
    /// Service restart: the paced drain at shutdown. The reason is
    /// [`reconnect_reason`] (decisions.md D7).
    pub const SERVICE_RESTART: u16 = 1012;
    /// Try again later (limits).
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// No answer to the server's pings.
    pub const PING_TIMEOUT: u16 = 4000;
    /// The client's token expired.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// The client fell too far behind its lossless backlog bound.
    pub const SLOW_CONSUMER: u16 = 4008;

    /// The reason of a [`SERVICE_RESTART`] close: the compact JSON object
    /// `{"reconnect_ms":<n>}`, how long the client should wait (adding its
    /// own jitter) before it reconnects and resumes. At most 37 bytes, far
    /// under the 123 a close reason may hold.
    pub fn reconnect_reason(wait: std::time::Duration) -> String {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        format!(r#"{{"reconnect_ms":{ms}}}"#)
    }
}

/// Error codes in `{"type":"error","code":...}` messages.
pub mod error_code {
    pub const INVALID_JSON: &str = "invalid_json";
    pub const INVALID_MESSAGE: &str = "invalid_message";
    pub const UNKNOWN_TYPE: &str = "unknown_type";
    pub const INVALID_CHANNEL: &str = "invalid_channel";
    pub const TOO_MANY_SUBSCRIPTIONS: &str = "too_many_subscriptions";
    pub const NOT_SUBSCRIBED: &str = "not_subscribed";
    pub const UNSUPPORTED: &str = "unsupported";
    pub const BINARY_NOT_SUPPORTED: &str = "binary_not_supported";
    pub const SNAPSHOT_UNAVAILABLE: &str = "snapshot_unavailable";
    /// Inbound messages over `limits.ws_messages`; the message was dropped.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// The token does not grant this persona.
    pub const FORBIDDEN: &str = "forbidden";
    /// An `auth` message whose token was refused (the old one stays in force).
    pub const INVALID_TOKEN: &str = "invalid_token";
    /// `auth` while authentication is off.
    pub const AUTH_DISABLED: &str = "auth_disabled";
    /// A `subscribe` whose `since` is not a stream offset `<ms>-<seq>`.
    pub const INVALID_SINCE: &str = "invalid_since";
    /// A well-formed channel of a namespace no `[[channels]]` entry declares.
    pub const UNKNOWN_NAMESPACE: &str = "unknown_namespace";
    /// A channel of a reserved namespace (`system:`) this gateway does not serve.
    pub const UNKNOWN_CHANNEL: &str = "unknown_channel";
    /// `since` on a namespace that keeps no history (`history = 0`).
    pub const NO_HISTORY: &str = "no_history";
    /// The channel has `max_subscribers` subscribers on this gateway already.
    pub const CHANNEL_FULL: &str = "channel_full";
}

/// A message from a client, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    Ping,
    Refresh,
    /// `since`: resume the channel after this stream offset (`/ws`);
    /// absent or `null` for a fresh start (a snapshot).
    Subscribe {
        channel: String,
        since: Option<Offset>,
    },
    Unsubscribe {
        channel: String,
    },
    /// A fresh token, replacing the connection's before it expires.
    Auth {
        token: String,
    },
    /// One `system:runtime` sample, at once (admin role when auth is on).
    RequestMetrics,
}

/// Why a client message was refused; each maps to an error `code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientMessageError {
    #[error("message is not valid JSON")]
    InvalidJson,
    #[error("message is not valid JSON: {0}")]
    TooDeep(#[from] crate::json_limit::TooDeep),
    #[error("message must be a JSON object with a string field `type`")]
    NotAnObject,
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    #[error("field `{0}` is missing or not a string")]
    MissingField(&'static str),
    #[error("since must be a stream offset such as 1732240000000-0")]
    InvalidSince,
}

impl ClientMessageError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson | Self::TooDeep(_) => error_code::INVALID_JSON,
            Self::NotAnObject | Self::MissingField(_) => error_code::INVALID_MESSAGE,
            Self::UnknownType(_) => error_code::UNKNOWN_TYPE,
            Self::InvalidSince => error_code::INVALID_SINCE,
        }
    }
}

/// Parses a client text message. `buf` is scratch: simd-json parses in place.
/// Nesting past `max_depth` is refused before the parser recurses into it.
pub fn parse_client_message(
    buf: &mut [u8],
    max_depth: usize,
) -> Result<ClientMessage, ClientMessageError> {
    use simd_json::prelude::*;
    crate::json_limit::check_depth(buf, max_depth)?;
    let value = simd_json::to_borrowed_value(buf).map_err(|_| ClientMessageError::InvalidJson)?;
    if value.as_object().is_none() {
        return Err(ClientMessageError::NotAnObject);
    }
    let kind = value
        .get_str("type")
        .ok_or(ClientMessageError::NotAnObject)?;
    let channel = || {
        value
            .get_str("channel")
            .map(str::to_owned)
            .ok_or(ClientMessageError::MissingField("channel"))
    };
    match kind {
        "ping" => Ok(ClientMessage::Ping),
        "refresh" => Ok(ClientMessage::Refresh),
        "request_metrics" => Ok(ClientMessage::RequestMetrics),
        "subscribe" => Ok(ClientMessage::Subscribe {
            channel: channel()?,
            since: match value.get("since") {
                None => None,
                Some(v) if v.is_null() => None,
                Some(v) => Some(
                    v.as_str()
                        .and_then(parse_offset)
                        .ok_or(ClientMessageError::InvalidSince)?,
                ),
            },
        }),
        "unsubscribe" => Ok(ClientMessage::Unsubscribe {
            channel: channel()?,
        }),
        "auth" => Ok(ClientMessage::Auth {
            token: value
                .get_str("token")
                .map(str::to_owned)
                .ok_or(ClientMessageError::MissingField("token"))?,
        }),
        other => Err(ClientMessageError::UnknownType(truncate(other, 64))),
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Messages the server sends that are not verbatim Redis payloads.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    InitialData {
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<&'a str>,
        offset: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        data: &'a Value,
    },
    Pong,
    Error {
        code: &'a str,
        message: &'a str,
    },
    /// On `/ws`, once the channel is live and its first frames follow:
    /// `offset` is the snapshot's (or the `since` resumed from); `recovered`
    /// says whether the events after `since` follow (true) or an
    /// `initial_data` does (false). Both always present (DECISIONS #6).
    Subscribed {
        channel: &'a str,
        offset: Option<&'a str>,
        recovered: bool,
    },
    Unsubscribed {
        channel: &'a str,
    },
    /// The answer to `auth`: the new token's `exp` (Unix seconds).
    Authenticated {
        expires_at: u64,
    },
    Status {
        #[serde(skip_serializing_if = "Option::is_none")]
        redis: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        resync: Option<bool>,
    },
}

impl ServerMessage<'_> {
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing these plain structs cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ClientMessage, ClientMessageError> {
        parse_client_message(&mut s.as_bytes().to_vec(), 64)
    }

    #[test]
    fn parses_client_messages() {
        assert_eq!(parse(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping));
        assert_eq!(
            parse(r#"{"type":"refresh","x":1}"#),
            Ok(ClientMessage::Refresh)
        );
        assert_eq!(
            parse(r#"{"type":"subscribe","channel":"persona:a"}"#),
            Ok(ClientMessage::Subscribe {
                channel: "persona:a".into(),
                since: None,
            })
        );
        for (since, expected) in [(r#""17-3""#, Some((17, 3))), ("null", None)] {
            let m = format!(r#"{{"type":"subscribe","channel":"persona:a","since":{since}}}"#);
            assert_eq!(
                parse(&m),
                Ok(ClientMessage::Subscribe {
                    channel: "persona:a".into(),
                    since: expected,
                })
            );
        }
        for bad in [r#""yesterday""#, r#""17""#, "17", r#"["1-0"]"#] {
            let m = format!(r#"{{"type":"subscribe","channel":"persona:a","since":{bad}}}"#);
            let e = parse(&m).unwrap_err();
            assert_eq!(
                (e.clone(), e.code()),
                (ClientMessageError::InvalidSince, "invalid_since")
            );
        }
        assert_eq!(
            parse(r#"{"type":"request_metrics"}"#),
            Ok(ClientMessage::RequestMetrics)
        );
        assert_eq!(parse("{"), Err(ClientMessageError::InvalidJson));
        assert_eq!(parse("[1]"), Err(ClientMessageError::NotAnObject));
        assert_eq!(parse(r#"{"type":3}"#), Err(ClientMessageError::NotAnObject));
        assert_eq!(
            parse(r#"{"type":"nope"}"#),
            Err(ClientMessageError::UnknownType("nope".into()))
        );
        assert_eq!(
            parse(r#"{"type":"subscribe"}"#),
            Err(ClientMessageError::MissingField("channel"))
        );
        assert_eq!(
            parse(r#"{"type":"auth","token":"a.b.c"}"#),
            Ok(ClientMessage::Auth {
                token: "a.b.c".into()
            })
        );
        assert_eq!(
            parse(r#"{"type":"auth"}"#),
            Err(ClientMessageError::MissingField("token"))
        );
    }

    #[test]
    fn refuses_deep_nesting_before_parsing() {
        let deep = format!(
            r#"{{"type":"ping","x":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let e = parse(&deep).unwrap_err();
        assert_eq!(e.code(), error_code::INVALID_JSON);
        assert!(e.to_string().contains("deeper than 64"), "{e}");
        let ok = format!(
            r#"{{"type":"ping","x":{}{}}}"#,
            "[".repeat(63),
            "]".repeat(63)
        );
        assert_eq!(parse(&ok), Ok(ClientMessage::Ping));
    }

    #[test]
    fn encodes_server_messages() {
        let s = String::from_utf8(ServerMessage::Pong.to_json()).unwrap();
        assert_eq!(s, r#"{"type":"pong"}"#);
        let s = String::from_utf8(
            ServerMessage::Status {
                redis: Some("down"),
                resync: None,
            }
            .to_json(),
        )
        .unwrap();
        assert_eq!(s, r#"{"type":"status","redis":"down"}"#);
        let ack = ServerMessage::Subscribed {
            channel: "persona:a",
            offset: None,
            recovered: false,
        };
        let s = String::from_utf8(ack.to_json()).unwrap();
        assert_eq!(
            s,
            r#"{"type":"subscribed","channel":"persona:a","offset":null,"recovered":false}"#
        );
    }

    #[test]
    fn the_restart_reason_is_compact_json() {
        use std::time::Duration;
        let r = close::reconnect_reason(Duration::from_micros(10_250_900));
        assert_eq!(r, r#"{"reconnect_ms":10250}"#);
        let v: Value = serde_json::from_str(&r).unwrap();
        assert_eq!(v["reconnect_ms"], 10250);
        assert!(close::reconnect_reason(Duration::MAX).len() <= 123);
    }
}
