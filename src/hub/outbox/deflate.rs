//! permessage-deflate on one connection. Publications are compressed by the
//! hub, once for all subscribers; the frames made for this connection alone
//! (replies, `initial_data`, replayed events, status notices) are
//! compressed here as they are queued, outside the queue's lock.

use bytes::Bytes;

use super::{Delivery, Outbox, Pushed};
use crate::metrics::{Compressed, Metrics};
use crate::protocol::deflate;
use crate::protocol::extension::Deflate;
use crate::protocol::frame;

impl Outbox {
    /// The connection negotiated permessage-deflate with these parameters.
    pub fn with_deflate(mut self, deflate: Option<Deflate>) -> Self {
        self.deflate = deflate;
        self
    }

    pub fn deflate(&self) -> Option<Deflate> {
        self.deflate
    }

    /// Queues a reply or control frame (lossless, counted against the bound).
    pub fn push_frame(&self, frame: Bytes) -> Pushed {
        self.push(&Delivery {
            frame: self.deflated(frame),
            conflation_key: None,
            offset: None,
            channel: None,
        })
    }

    /// `plain` as this connection should get it.
    pub(super) fn deflated(&self, plain: Bytes) -> Bytes {
        match self.deflate {
            Some(d) if may_compress(d, &plain) => {
                compress(&plain, &self.metrics, Compressed::Connection).unwrap_or(plain)
            }
            _ => plain,
        }
    }
}

/// `plain` compressed (RSV1), counted in the metrics; `None` when it stays
/// plain (not a text frame, too small, or deflate did not shrink it).
pub fn compress(plain: &Bytes, metrics: &Metrics, kind: Compressed) -> Option<Bytes> {
    let len = frame::text_payload(plain)?.len();
    if len < deflate::MIN_COMPRESS_BYTES {
        return None;
    }
    let compressed = deflate::compress_frame(plain);
    let after = compressed.as_ref().map(|(_, _, after)| *after);
    metrics.compressions.record(kind, len, after);
    compressed.map(|(f, _, _)| f)
}

/// Whether a client with parameters `d` may take `plain` compressed.
pub fn may_compress(d: Deflate, plain: &[u8]) -> bool {
    frame::text_payload(plain)
        .is_some_and(|p| p.len() >= deflate::MIN_COMPRESS_BYTES && d.fits(p.len()))
}
