//! The consumer side of the outbox: what the connection sends next. A
//! WebSocket writer copies the queued frames as they are ([`Outbox::drain`]);
//! an SSE stream turns each into its event as it copies it
//! ([`Outbox::drain_with`], `protocol/sse.rs`).

use super::{Drained, Outbox, State};

impl Outbox {
    /// Moves queued frames into `buf` until it holds about `max_bytes`.
    pub fn drain(&self, buf: &mut Vec<u8>, max_bytes: usize) -> Drained {
        self.drain_with(buf, max_bytes, |buf, frame| buf.extend_from_slice(frame))
    }

    /// [`Outbox::drain`], with `put` appending each queued frame to `buf`.
    pub fn drain_with(
        &self,
        buf: &mut Vec<u8>,
        max_bytes: usize,
        mut put: impl FnMut(&mut Vec<u8>, &[u8]),
    ) -> Drained {
        let mut s = self.lock();
        if s.close_sent {
            return Drained::Finished;
        }
        if let Some(c) = s.close.clone() {
            if !s.flush_before_close || s.queue.is_empty() {
                s.close_sent = true;
                return Drained::Close(c);
            }
        }
        if s.held {
            // Only the frames queued ahead of the first ones (`ahead.rs`).
            let n = super::ahead::take(&mut s, buf, &mut put);
            return if n > 0 {
                Drained::Frames(n)
            } else {
                Drained::Empty
            };
        }
        let mut n = 0;
        while buf.len() < max_bytes {
            let Some(slot) = s.queue.pop_front() else {
                break;
            };
            s.head_seq = s.head_seq.wrapping_add(1);
            match &slot.key {
                Some(key) => {
                    s.conflated.remove(key);
                }
                None if slot.frame.is_some() => s.lossless -= 1,
                None => {}
            }
            if let Some(f) = slot.frame {
                put(buf, &f);
                n += 1;
            }
        }
        if n > 0 {
            drop(s);
            self.room.notify_waiters();
            return Drained::Frames(n);
        }
        // A close waiting for the queue: the queue held only emptied slots,
        // so the close is next.
        match s.close.clone() {
            Some(c) if s.queue.is_empty() => {
                s.close_sent = true;
                Drained::Close(c)
            }
            _ => {
                shed_idle(&mut s);
                Drained::Empty
            }
        }
    }
}

/// The writer is about to wait: let go of the queue's and the conflation
/// index's memory if both are empty, under the lock already held, so an
/// idle connection keeps no slots from its last burst (a slot is 72 bytes
/// and the first push reserves four).
fn shed_idle(s: &mut State) {
    if s.queue.is_empty() && s.queue.capacity() > 0 {
        s.queue = std::collections::VecDeque::new();
    }
    if s.conflated.is_empty() && s.conflated.capacity() > 0 {
        s.conflated = std::collections::HashMap::new();
    }
}
