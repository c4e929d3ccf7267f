//! Client frames off the socket (RFC 6455 §5.2), one at a time.
//!
//! Read here rather than by fastwebsockets: 0.10 refuses any frame with a
//! reserved bit set and offers no hook for extensions, and
//! permessage-deflate marks a compressed message with RSV1 on its first
//! frame. Only the framing is checked here; what frames may follow which
//! is `reader.rs`.
//!
//! An idle connection holds no read buffer: the reader waits for the socket
//! to become readable first ([`WaitReadable`]) and only then takes a buffer,
//! which it lets go again once every byte in it is consumed. Most of a
//! dashboard's connections are idle most of the time, so this is most of
//! what a connection costs.

use std::future::Future;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::protocol::close;

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

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// One frame, unmasked.
#[derive(Debug)]
pub struct Frame {
    pub fin: bool,
    /// Compressed message (permessage-deflate); whether it is allowed here
    /// is for the reader to say.
    pub rsv1: bool,
    pub opcode: u8,
    pub payload: BytesMut,
}

/// The buffer taken for a read once the socket is readable: most client
/// frames (subscribes, pings) fit at once; a larger frame grows it.
const READ_CHUNK: usize = 4 * 1024;

/// A read half that can wait for readability without a buffer.
pub trait WaitReadable {
    /// Resolves when a read would probably not block (spurious wake-ups are
    /// fine: the read that follows simply waits, holding its buffer).
    fn readable(&mut self) -> impl Future<Output = std::io::Result<()>> + Send;
}

/// In-memory input (tests) is always readable.
impl WaitReadable for &[u8] {
    fn readable(&mut self) -> impl Future<Output = std::io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    /// Largest payload accepted; a longer frame fails before it is read.
    max_payload: usize,
}

impl<R: AsyncRead + WaitReadable + Unpin> FrameReader<R> {
    /// `early`: bytes that arrived with the handshake, read before `io`.
    pub fn new(io: R, early: Bytes, max_payload: usize) -> Self {
        Self {
            io,
            buf: BytesMut::from(&early[..]),
            max_payload,
        }
    }

    /// Reads until `buf` holds at least `n` bytes.
    async fn fill(&mut self, n: usize) -> Result<(), ReadError> {
        while self.buf.len() < n {
            if self.buf.capacity() == 0 {
                self.io
                    .readable()
                    .await
                    .map_err(|e| ReadError::Gone(e.to_string()))?;
                self.buf.reserve(READ_CHUNK.max(n));
            }
            let read = self
                .io
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| ReadError::Gone(e.to_string()))?;
            if read == 0 {
                return Err(ReadError::Gone("unexpected EOF".into()));
            }
        }
        Ok(())
    }

    /// Cancel-safe: nothing is consumed until the whole frame is in the
    /// buffer, so a `select!` may drop this future at any await and call
    /// again later without losing a byte.
    pub async fn next(&mut self) -> Result<Frame, ReadError> {
        if self.buf.is_empty() {
            // Lets the buffer go; the last frame's payload, split off it,
            // keeps the allocation only as long as the caller holds it.
            self.buf = BytesMut::new();
        }
        self.fill(2).await?;
        let (b0, b1) = (self.buf[0], self.buf[1]);
        let fin = b0 & 0x80 != 0;
        let rsv1 = b0 & 0x40 != 0;
        if b0 & 0x30 != 0 {
            return Err(ReadError::Protocol("reserved bits set"));
        }
        let opcode = b0 & 0x0f;
        let control = match opcode {
            OP_CONTINUATION | OP_TEXT | OP_BINARY => false,
            OP_CLOSE | OP_PING | OP_PONG => true,
            _ => return Err(ReadError::Protocol("unknown opcode")),
        };
        let masked = b1 & 0x80 != 0;
        let extra = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let header = 2 + extra + if masked { 4 } else { 0 };
        self.fill(header).await?;
        let mut field = &self.buf[2..header];
        let len = match extra {
            2 => u64::from(field.get_u16()),
            8 => field.get_u64(),
            _ => u64::from(b1 & 0x7f),
        };
        let mask = masked.then(|| field.get_u32().to_be_bytes());
        if control && !fin {
            return Err(ReadError::Protocol("fragmented control frame"));
        }
        if control && len > 125 {
            return Err(ReadError::Protocol("control frame longer than 125 bytes"));
        }
        let len = match usize::try_from(len) {
            Ok(l) if l <= self.max_payload => l,
            _ => return Err(ReadError::TooBig(self.max_payload)),
        };
        self.buf
            .reserve((header + len).saturating_sub(self.buf.len()));
        self.fill(header + len).await?;
        self.buf.advance(header);
        let mut payload = self.buf.split_to(len);
        if let Some(mask) = mask {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i & 3];
            }
        }
        Ok(Frame {
            fin,
            rsv1,
            opcode,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8], max: usize) -> Result<Frame, ReadError> {
        FrameReader::new(bytes, Bytes::new(), max).next().await
    }

    #[tokio::test]
    async fn reads_masked_frames_and_refuses_bad_headers() {
        // RFC 6455 §5.7: a masked "Hello".
        let hello = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let f = read(&hello, 100).await.unwrap();
        assert!(f.fin && !f.rsv1 && f.opcode == OP_TEXT);
        assert_eq!(&f.payload[..], b"Hello");
        let f = read(&[0xC1, 0x01, b'x'], 100).await.unwrap();
        assert!(f.rsv1);
        let mut long = vec![0x82, 126, 0x01, 0x00];
        long.extend(vec![7u8; 256]);
        assert_eq!(read(&long, 256).await.unwrap().payload.len(), 256);
        assert!(matches!(
            read(&long, 255).await,
            Err(ReadError::TooBig(255))
        ));
        for bad in [
            &[0xA1, 0x00][..],
            &[0x91, 0x00],
            &[0x83, 0x00],
            &[0x09, 0x00],
            &[0x89, 126, 0, 126],
        ] {
            assert!(
                matches!(read(bad, 1000).await, Err(ReadError::Protocol(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            read(&[0x81, 0x05, b'a'], 100).await,
            Err(ReadError::Gone(_))
        ));
    }
}
