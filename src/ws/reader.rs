//! Reads client frames (fastwebsockets) and assembles whole messages.
//!
//! fastwebsockets bounds single frames but not a message assembled from
//! continuation frames, so the size limit is enforced here across fragments
//! (close 1009), as are fragment order and UTF-8 of fragmented text.

use std::pin::Pin;

use bytes::BytesMut;
use fastwebsockets::{CloseCode, OpCode, WebSocketError, WebSocketRead};
use futures_util::Stream;
use tokio::io::AsyncRead;

use crate::protocol::close;

/// A whole inbound message or control frame.
#[derive(Debug)]
pub enum Inbound {
    Text(Vec<u8>),
    Binary,
    Ping(Vec<u8>),
    Pong,
    /// The client's close; `echo` is the payload to send back.
    Close {
        echo: Vec<u8>,
    },
}

/// Why reading stopped; `close_code` is what to tell the client, if anything.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("message larger than {0} bytes")]
    TooBig(usize),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    #[error("connection closed: {0}")]
    Gone(String),
}

impl ReadError {
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Self::TooBig(_) => Some(close::TOO_BIG),
            Self::Protocol(_) => Some(close::PROTOCOL_ERROR),
            Self::InvalidUtf8 => Some(close::INVALID_PAYLOAD),
            Self::Gone(_) => None,
        }
    }
}

pub struct MessageReader<R> {
    ws: WebSocketRead<R>,
    max_bytes: usize,
    /// Message being assembled from fragments: (is_text, bytes).
    partial: Option<(bool, BytesMut)>,
}

/// Inbound messages as a stream. A read in progress lives in the stream, not
/// in the `next()` future, so a `select!` that picks another branch never
/// drops half a frame (fastwebsockets' reads are not cancel-safe).
pub type InboundStream = Pin<Box<dyn Stream<Item = Result<Inbound, ReadError>> + Send>>;

impl<R: AsyncRead + Unpin + Send + 'static> MessageReader<R> {
    /// Ends after the first error.
    pub fn into_stream(self) -> InboundStream {
        Box::pin(futures_util::stream::unfold(
            Some(self),
            |state| async move {
                let mut reader = state?;
                let item = reader.next().await;
                let keep = item.is_ok().then_some(reader);
                Some((item, keep))
            },
        ))
    }
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    pub fn new(mut ws: WebSocketRead<R>, max_bytes: usize) -> Self {
        // Pongs and close replies go through the connection's outbox, in
        // order with everything else, so fastwebsockets must not send them.
        ws.set_auto_close(false);
        ws.set_auto_pong(false);
        // fastwebsockets rejects frames of `len >= max`.
        ws.set_max_message_size(max_bytes.saturating_add(1));
        Self {
            ws,
            max_bytes,
            partial: None,
        }
    }

    pub async fn next(&mut self) -> Result<Inbound, ReadError> {
        loop {
            let frame = self
                .ws
                .read_frame(&mut |_| async { Ok::<(), std::convert::Infallible>(()) })
                .await
                .map_err(|e| map_error(e, self.max_bytes))?;
            match frame.opcode {
                OpCode::Text | OpCode::Binary => {
                    if self.partial.is_some() {
                        return Err(ReadError::Protocol(
                            "new message before the previous one ended",
                        ));
                    }
                    let text = frame.opcode == OpCode::Text;
                    if frame.fin {
                        return Ok(if text {
                            Inbound::Text(frame.payload.to_vec())
                        } else {
                            Inbound::Binary
                        });
                    }
                    self.partial = Some((text, BytesMut::from(&frame.payload[..])));
                }
                OpCode::Continuation => {
                    let Some((text, buf)) = self.partial.as_mut() else {
                        return Err(ReadError::Protocol("continuation without a message"));
                    };
                    if buf.len() + frame.payload.len() > self.max_bytes {
                        return Err(ReadError::TooBig(self.max_bytes));
                    }
                    buf.extend_from_slice(&frame.payload);
                    if frame.fin {
                        let text = *text;
                        let Some((_, buf)) = self.partial.take() else {
                            continue;
                        };
                        if !text {
                            return Ok(Inbound::Binary);
                        }
                        if simdutf8::basic::from_utf8(&buf).is_err() {
                            return Err(ReadError::InvalidUtf8);
                        }
                        return Ok(Inbound::Text(buf.to_vec()));
                    }
                }
                OpCode::Ping => return Ok(Inbound::Ping(frame.payload.to_vec())),
                OpCode::Pong => return Ok(Inbound::Pong),
                OpCode::Close => return validate_close(&frame.payload),
            }
        }
    }
}

fn map_error(e: WebSocketError, max_bytes: usize) -> ReadError {
    match e {
        WebSocketError::FrameTooLarge => ReadError::TooBig(max_bytes),
        WebSocketError::InvalidUTF8 => ReadError::InvalidUtf8,
        WebSocketError::ReservedBitsNotZero => ReadError::Protocol("reserved bits set"),
        WebSocketError::ControlFrameFragmented => ReadError::Protocol("fragmented control frame"),
        WebSocketError::PingFrameTooLarge => ReadError::Protocol("control frame too large"),
        WebSocketError::InvalidValue => ReadError::Protocol("unknown opcode"),
        other => ReadError::Gone(other.to_string()),
    }
}

fn validate_close(payload: &[u8]) -> Result<Inbound, ReadError> {
    // Control frames carry at most 125 bytes (RFC 6455 5.5); fastwebsockets
    // checks this for pings only.
    if payload.len() > 125 {
        return Err(ReadError::Protocol("close frame longer than 125 bytes"));
    }
    match payload.len() {
        0 => Ok(Inbound::Close { echo: Vec::new() }),
        1 => Err(ReadError::Protocol("close frame with a 1-byte payload")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !CloseCode::from(code).is_allowed() {
                return Err(ReadError::Protocol("close code not allowed"));
            }
            if simdutf8::basic::from_utf8(&payload[2..]).is_err() {
                return Err(ReadError::InvalidUtf8);
            }
            Ok(Inbound::Close {
                echo: payload[..2].to_vec(),
            })
        }
    }
}
