//! Assembles whole client messages from frames (`frames.rs`).
//!
//! The size limit is enforced across fragments (close 1009), as are fragment
//! order and UTF-8 of text. A compressed message (permessage-deflate, RSV1
//! on its first frame, only when negotiated) is inflated fragment by
//! fragment into a buffer bounded by the same limit, so the limit holds for
//! the inflated size and a deflate bomb costs at most that much memory.

use bytes::{Bytes, BytesMut};
use fastwebsockets::CloseCode;
use tokio::io::AsyncRead;

pub use super::frames::ReadError;
pub use super::frames::WaitReadable;
use super::frames::{self as f, FrameReader};
use crate::protocol::deflate::{InflateError, Inflater};

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

/// A message being assembled from fragments.
struct Partial {
    text: bool,
    body: Body,
    /// Payload bytes received so far, as sent.
    wire: usize,
}

enum Body {
    Plain(BytesMut),
    Compressed(Inflater),
}

pub struct MessageReader<R> {
    frames: FrameReader<R>,
    max_bytes: usize,
    /// permessage-deflate was negotiated: RSV1 marks a compressed message.
    inflate: bool,
    /// Boxed: it exists only while a message is being assembled, and the
    /// inflater is most of a reader's size, kept for every idle connection.
    partial: Option<Box<Partial>>,
}

/// The most compressed bytes one message may take on the wire: the limit
/// plus what deflate adds to data it cannot shrink (5 bytes per stored
/// block of at most 64 KiB) and some slack.
fn wire_limit(max_bytes: usize) -> usize {
    max_bytes.saturating_add(max_bytes / 1024 * 5 + 64)
}

impl<R: AsyncRead + WaitReadable + Unpin> MessageReader<R> {
    /// `early`: bytes that came with the handshake; `inflate`: the
    /// connection negotiated permessage-deflate.
    pub fn new(io: R, early: Bytes, max_bytes: usize, inflate: bool) -> Self {
        let max_frame = if inflate {
            wire_limit(max_bytes)
        } else {
            max_bytes
        };
        Self {
            frames: FrameReader::new(io, early, max_frame),
            max_bytes,
            inflate,
            partial: None,
        }
    }

    /// Cancel-safe, as [`FrameReader::next`] is: a message being assembled
    /// lives in `self`, and each frame is taken whole or not at all.
    pub async fn next(&mut self) -> Result<Inbound, ReadError> {
        loop {
            let frame = self.frames.next().await?;
            if frame.rsv1 && !(self.inflate && matches!(frame.opcode, f::OP_TEXT | f::OP_BINARY)) {
                return Err(ReadError::Protocol("reserved bits set"));
            }
            let partial = match frame.opcode {
                f::OP_TEXT | f::OP_BINARY => {
                    if self.partial.is_some() {
                        return Err(ReadError::Protocol(
                            "new message before the previous one ended",
                        ));
                    }
                    let body = if frame.rsv1 {
                        Body::Compressed(Inflater::new(self.max_bytes))
                    } else {
                        Body::Plain(BytesMut::new())
                    };
                    self.partial.insert(Box::new(Partial {
                        text: frame.opcode == f::OP_TEXT,
                        body,
                        wire: 0,
                    }))
                }
                f::OP_CONTINUATION => match self.partial.as_mut() {
                    Some(p) => p,
                    None => return Err(ReadError::Protocol("continuation without a message")),
                },
                f::OP_PING => return Ok(Inbound::Ping(frame.payload.to_vec())),
                f::OP_PONG => return Ok(Inbound::Pong),
                _ => return validate_close(&frame.payload),
            };
            partial.wire += frame.payload.len();
            match &mut partial.body {
                Body::Plain(buf) => {
                    if partial.wire > self.max_bytes {
                        return Err(ReadError::TooBig(self.max_bytes));
                    }
                    // Binary messages are refused whole: their bytes are not kept.
                    if partial.text {
                        buf.extend_from_slice(&frame.payload);
                    }
                }
                Body::Compressed(inflater) => {
                    if partial.wire > wire_limit(self.max_bytes) {
                        return Err(ReadError::TooBig(self.max_bytes));
                    }
                    if partial.text {
                        inflater
                            .push(&frame.payload)
                            .map_err(inflate_error(self.max_bytes))?;
                    }
                }
            }
            if !frame.fin {
                continue;
            }
            let Some(done) = self.partial.take().map(|p| *p) else {
                continue;
            };
            if !done.text {
                return Ok(Inbound::Binary);
            }
            let text = match done.body {
                Body::Plain(buf) => buf.to_vec(),
                Body::Compressed(inflater) => {
                    inflater.finish().map_err(inflate_error(self.max_bytes))?
                }
            };
            if simdutf8::basic::from_utf8(&text).is_err() {
                return Err(ReadError::InvalidUtf8);
            }
            return Ok(Inbound::Text(text));
        }
    }
}

fn inflate_error(max_bytes: usize) -> impl Fn(InflateError) -> ReadError {
    move |e| match e {
        InflateError::TooBig => ReadError::TooBig(max_bytes),
        InflateError::Corrupt => ReadError::Protocol("invalid compressed data"),
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
