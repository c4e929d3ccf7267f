//! permessage-deflate payloads (RFC 7692 §7.2): raw DEFLATE, sync-flushed,
//! with the 4-byte `00 00 ff ff` tail removed on the wire.
//!
//! Server messages are compressed without context takeover: each message
//! starts from an empty window, so one compressed frame is valid for every
//! client that negotiated the extension and the hub still encodes once.
//! Client messages are inflated into a buffer that never grows past the
//! message size limit, whatever the compressed input claims to expand to.

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::frame;

/// The empty stored block a sync flush ends with (RFC 7692 §7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Payloads shorter than this go out uncompressed. A JSON message this
/// small saves a few dozen bytes at best, while the frame still costs a
/// deflate run (and, for per-connection frames, one per client).
pub const MIN_COMPRESS_BYTES: usize = 256;

/// How much output an inflation grows by at a time.
const INFLATE_CHUNK: usize = 16 * 1024;

thread_local! {
    /// One deflate state per thread, reset for every message: about 256 KiB
    /// of zlib tables that would cost more to allocate per message.
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(Compression::default(), false));
}

/// `payload` compressed as one permessage-deflate message, or `None` when
/// the result would not be smaller than `payload`.
pub fn compress(payload: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        c.reset();
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        loop {
            let consumed = c.total_in() as usize;
            if out.len() == out.capacity() {
                out.reserve(out.len().max(64));
            }
            let status = c
                .compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync)
                .ok()?;
            let done = c.total_in() as usize == payload.len() && out.len() < out.capacity();
            if done || status == Status::StreamEnd {
                break;
            }
            if out.len() > payload.len() + TAIL.len() {
                return None;
            }
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        (out.len() < payload.len()).then_some(out)
    })
}

/// The compressed form (RSV1 set) of a complete text frame the gateway
/// encoded, when compression pays: `None` for small payloads, other
/// frames, or payloads deflate cannot shrink. Returns the frame and the
/// payload sizes before and after.
pub fn compress_frame(plain: &[u8]) -> Option<(Bytes, usize, usize)> {
    let payload = frame::text_payload(plain)?;
    if payload.len() < MIN_COMPRESS_BYTES {
        return None;
    }
    let deflated = compress(payload)?;
    Some((
        frame::compressed_text(&deflated),
        payload.len(),
        deflated.len(),
    ))
}

/// Why a client message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    #[error("inflated message larger than the limit")]
    TooBig,
    #[error("invalid deflate data")]
    Corrupt,
}

/// Inflates one client message, fragment by fragment, into at most
/// `limit` bytes. A new one per message: the server always asks for
/// `client_no_context_takeover`, so no window outlives a message.
pub struct Inflater {
    state: Decompress,
    out: Vec<u8>,
    limit: usize,
    /// The stream's final block was seen; anything after it is ignored.
    ended: bool,
}

impl Inflater {
    pub fn new(limit: usize) -> Self {
        Self {
            state: Decompress::new(false),
            out: Vec::new(),
            limit,
            ended: false,
        }
    }

    /// Feeds the next fragment's payload.
    pub fn push(&mut self, mut input: &[u8]) -> Result<(), InflateError> {
        while !self.ended {
            if self.out.len() == self.out.capacity() {
                // One byte past the limit is room enough to notice a bomb.
                let room = (self.limit + 1 - self.out.len()).min(INFLATE_CHUNK);
                if room == 0 {
                    return Err(InflateError::TooBig);
                }
                self.out.reserve_exact(room);
            }
            let before = self.state.total_in();
            let status = self
                .state
                .decompress_vec(input, &mut self.out, FlushDecompress::None)
                .map_err(|_| InflateError::Corrupt)?;
            input = &input[(self.state.total_in() - before) as usize..];
            if self.out.len() > self.limit {
                return Err(InflateError::TooBig);
            }
            match status {
                Status::StreamEnd => self.ended = true,
                // Output space left over means the input is used up.
                _ if self.out.len() < self.out.capacity() => return Ok(()),
                _ => {}
            }
        }
        Ok(())
    }

    /// Ends the message: appends the removed tail and returns the text.
    pub fn finish(mut self) -> Result<Vec<u8>, InflateError> {
        self.push(&TAIL)?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inflate(data: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
        let mut i = Inflater::new(limit);
        // Fragment boundaries anywhere must not matter.
        for chunk in data.chunks(7) {
            i.push(chunk)?;
        }
        i.finish()
    }

    #[test]
    fn round_trips_and_strips_the_tail() {
        let text = br#"{"type":"variant_update","data":{"variant_id":"v1"}}"#.repeat(40);
        let c = compress(&text).expect("compressible");
        assert!(c.len() < text.len() / 5);
        assert!(!c.ends_with(&TAIL));
        assert_eq!(inflate(&c, text.len()).unwrap(), text);
        // Each message stands alone: compressing twice gives the same bytes.
        assert_eq!(compress(&text).unwrap(), c);
    }

    #[test]
    fn the_rfc_7692_examples_inflate() {
        // §7.2.3.1: "Hello" compressed; §7.2.3.3 the same in a stored block.
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate(&hello, 100).unwrap(), b"Hello");
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(inflate(&stored, 100).unwrap(), b"Hello");
        // §7.2.3.4: BFINAL set; the appended tail is ignored after it.
        let last = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate(&last, 100).unwrap(), b"Hello");
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 8 << 20];
        let bomb = compress(&zeros).unwrap();
        assert!(bomb.len() < 16 * 1024);
        assert_eq!(inflate(&bomb, 64 * 1024), Err(InflateError::TooBig));
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff], 100),
            Err(InflateError::Corrupt)
        );
        // Exactly at the limit is fine.
        let c = compress(&zeros[..1000]).unwrap();
        assert_eq!(inflate(&c, 1000).unwrap().len(), 1000);
    }

    #[test]
    fn small_or_incompressible_payloads_stay_plain() {
        assert!(compress_frame(&frame::text(&[b'a'; MIN_COMPRESS_BYTES - 1])).is_none());
        assert!(compress_frame(&frame::ping(&[b'a'; 100])).is_none());
        let mut x: u32 = 1;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 24) as u8
            })
            .collect();
        assert!(compress_frame(&frame::text(&noise)).is_none());
        let (f, before, after) = compress_frame(&frame::text(&[b'a'; 1000])).unwrap();
        assert_eq!(f[0], 0xC1);
        assert_eq!((before, f.len() - 2), (1000, after));
    }
}
