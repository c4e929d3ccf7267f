//! Frames that go out before a held connection's first frames: a client
//! whose snapshot waits for Redis (its channel's subscription is not
//! confirmed yet, say Redis is down) is told so at once, rather than when
//! the snapshot finally comes.

use bytes::Bytes;

use super::{Outbox, Slot, State};

/// Most frames queued ahead at once: one `status` is all a connection
/// start sends; more go behind the hold like any other reply.
const MAX_AHEAD: u8 = 4;

impl Outbox {
    /// Whether the queue is still held for the first frames.
    pub fn is_starting(&self) -> bool {
        self.lock().held
    }

    /// Queues `frame` to be sent even while the queue is held (ahead of the
    /// first frames, if they are not in place yet); once released, as any
    /// reply. False if the connection is closing.
    pub fn push_ahead(&self, frame: Bytes) -> bool {
        let frame = self.deflated(frame);
        let mut s = self.lock();
        if s.close.is_some() {
            return false;
        }
        if !s.held || s.ahead >= MAX_AHEAD {
            drop(s);
            return self.push_frame(frame) != super::Pushed::Closed;
        }
        // After the frames already ahead. One slot more in front of the
        // rest, and the head's sequence number one less: the slots behind
        // keep theirs (the conflation index points at them); those ahead
        // are never conflated.
        let at = usize::from(s.ahead);
        s.queue.insert(
            at,
            Slot {
                frame: Some(frame),
                key: None,
                offset: None,
            },
        );
        s.head_seq = s.head_seq.wrapping_sub(1);
        s.ahead += 1;
        s.lossless += 1;
        drop(s);
        self.wake.notify_one();
        true
    }
}

/// Moves the frames queued ahead out of a held queue into `buf` (a few
/// small notices: no byte bound needed); returns how many. The queue's hot
/// drain loop stays free of this bookkeeping.
pub(super) fn take(
    s: &mut State,
    buf: &mut Vec<u8>,
    put: &mut impl FnMut(&mut Vec<u8>, &[u8]),
) -> usize {
    let mut n = 0;
    while s.ahead > 0 {
        let Some(slot) = s.queue.pop_front() else {
            break;
        };
        s.ahead -= 1;
        s.head_seq = s.head_seq.wrapping_add(1);
        // Never conflated, never emptied: one lossless frame each.
        if let Some(f) = slot.frame {
            s.lossless -= 1;
            put(buf, &f);
            n += 1;
        }
    }
    n
}
