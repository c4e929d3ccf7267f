//! permessage-deflate on one connection. Publications are compressed by the
//! hub, once for all subscribers; a snapshot's `initial_data` once per read
//! and framing ([`SharedFrame`]); the frames made for this connection alone
//! (replies, replayed events, status notices) are compressed here as they
//! are queued, outside the queue's lock. A frame that arrives compressed
//! already (RSV1) is queued as it is.

use std::sync::{Arc, OnceLock};

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

/// A frame that many connections get, such as the `initial_data` of a
/// snapshot read that clients joining at once share: its compressed form is
/// made by the first compressing connection that takes it and reused by the
/// others (without context takeover, the same bytes compress the same way
/// for every client).
#[derive(Clone, Debug)]
pub struct SharedFrame {
    plain: Bytes,
    /// `Some(None)`: tried, and it stays plain.
    deflated: Arc<OnceLock<Option<Bytes>>>,
}

impl SharedFrame {
    pub fn new(plain: Bytes) -> Self {
        Self {
            plain,
            deflated: Arc::new(OnceLock::new()),
        }
    }

    pub fn plain(&self) -> &Bytes {
        &self.plain
    }

    /// The frame for a connection that negotiated `deflate` (if any).
    pub fn for_connection(&self, deflate: Option<Deflate>, metrics: &Metrics) -> Bytes {
        match deflate {
            Some(d) if may_compress(d, &self.plain) => self
                .deflated
                .get_or_init(|| compress(&self.plain, metrics, Compressed::Snapshot))
                .clone()
                .unwrap_or_else(|| self.plain.clone()),
            _ => self.plain.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::CompressedLabel;

    #[test]
    fn a_shared_frame_is_compressed_once_for_every_client_that_takes_it() {
        let metrics = Metrics::new();
        let plain = frame::text(&[b'a'; 2000]);
        let shared = SharedFrame::new(plain.clone());
        let full = Some(Deflate {
            server_max_window_bits: 15,
        });
        let small_window = Some(Deflate {
            server_max_window_bits: 9,
        });
        let first = shared.for_connection(full, &metrics);
        assert_eq!(first[0], 0xC1, "compressed text");
        for _ in 0..10 {
            assert_eq!(shared.clone().for_connection(full, &metrics), first);
        }
        assert_eq!(shared.for_connection(None, &metrics), plain);
        assert_eq!(
            shared.for_connection(small_window, &metrics),
            plain,
            "longer than the client's 512-byte window"
        );
        let tiny = frame::text(b"{}");
        assert_eq!(
            SharedFrame::new(tiny.clone()).for_connection(full, &metrics),
            tiny
        );
        let label = CompressedLabel {
            kind: Compressed::Snapshot,
        };
        assert_eq!(metrics.compressions.runs.get_or_create(&label).get(), 1);
    }
}
