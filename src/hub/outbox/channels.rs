//! The hold and the floor per `/ws` channel: one connection follows several
//! channels, and starting one of them (a `subscribe`, a `refresh`) must not
//! hold up the others' messages.
//!
//! While a channel is held, its publications wait beside the queue. When
//! the channel's first frames are ready (the `subscribed` ack, then the
//! snapshot or the replayed events), they are appended to the queue, then
//! the held publications the snapshot or replay does not cover; from then on
//! the channel's publications at or before that offset (its floor) are
//! dropped. Every event after the point the first frames are current to
//! therefore arrives once, in order, whatever the other channels do.

use bytes::Bytes;

use super::{Delivery, Outbox, Pushed, Slot, State};
use crate::stream::Offset;

/// Names one hold of a channel. A newer hold of the same channel (the
/// client subscribed again) makes the older one's release a no-op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldId(u64);

#[derive(Default)]
pub(super) struct ChannelState {
    /// Boxed: a channel is held only while it starts, and the map keeps
    /// at least four slots per `/ws` connection.
    hold: Option<Box<Hold>>,
    /// Publications at or before this offset were covered by the channel's
    /// snapshot or replay.
    floor: Option<Offset>,
}

struct Hold {
    id: HoldId,
    /// Publications that arrived meanwhile, in order; counted in
    /// `State::held_messages`.
    queued: Vec<Delivery>,
}

impl State {
    /// What a publication of `channel` becomes before it reaches the queue:
    /// held, covered, an overflow of the bound, or `None` to queue it.
    pub(super) fn route(&mut self, channel: &str, d: &Delivery, max: usize) -> Option<Pushed> {
        let c = self.channels.get_mut(channel)?;
        if let Some(hold) = &mut c.hold {
            hold.queued.push(d.clone());
            self.held_messages += 1;
            // Everything held is counted as lossless: bounded like the queue.
            let over = self.lossless + self.held_messages > max;
            return Some(if over { Pushed::Overflow } else { Pushed::Held });
        }
        match (c.floor, d.offset) {
            (Some(floor), Some(offset)) if offset <= floor => Some(Pushed::Covered),
            _ => None,
        }
    }
}

impl Outbox {
    /// Holds `channel`'s publications until [`Outbox::release_channel`] with
    /// the returned id. Holding a channel already held keeps what it holds
    /// and retires the older id.
    pub fn hold_channel(&self, channel: &str) -> HoldId {
        let mut s = self.lock();
        s.last_hold += 1;
        let id = HoldId(s.last_hold);
        let c = s.channels.entry(channel.into()).or_default();
        match &mut c.hold {
            Some(hold) => hold.id = id,
            None => {
                c.hold = Some(Box::new(Hold {
                    id,
                    queued: Vec::new(),
                }))
            }
        }
        id
    }

    /// Whether `channel` is held (by any id).
    pub fn is_held(&self, channel: &str) -> bool {
        let s = self.lock();
        s.channels.get(channel).is_some_and(|c| c.hold.is_some())
    }

    /// Whether `hold` is still `channel`'s current hold.
    pub fn holds(&self, channel: &str, hold: HoldId) -> bool {
        let s = self.lock();
        let c = s.channels.get(channel);
        c.and_then(|c| c.hold.as_ref())
            .is_some_and(|h| h.id == hold)
    }

    /// Appends `first` (ack, snapshot or replayed events) to the queue, then
    /// the publications held meanwhile that `covered` does not cover, and
    /// makes `covered` the channel's floor. False (and nothing queued) when
    /// `hold` is no longer the channel's hold, or the connection is closing.
    ///
    /// Nothing here closes for the bound: [`Outbox::wait_room`] made room for
    /// `first`, and the held messages were counted when they came.
    pub fn release_channel(
        &self,
        channel: &str,
        hold: HoldId,
        first: Vec<Bytes>,
        covered: Option<Offset>,
    ) -> bool {
        let first: Vec<Bytes> = first.into_iter().map(|f| self.deflated(f)).collect();
        let mut s = self.lock();
        if s.close.is_some() {
            return false;
        }
        let state = &mut *s;
        let Some(c) = state.channels.get_mut(channel) else {
            return false;
        };
        if c.hold.as_ref().is_none_or(|h| h.id != hold) {
            return false;
        }
        let queued = c.hold.take().map(|h| h.queued).unwrap_or_default();
        c.floor = covered;
        state.held_messages -= queued.len();
        for frame in first {
            state.queue.push_back(Slot {
                frame: Some(frame),
                key: None,
                offset: None,
            });
            state.lossless += 1;
        }
        for d in &queued {
            if let (Some(covered), Some(offset)) = (covered, d.offset) {
                if offset <= covered {
                    continue;
                }
            }
            let _ = state.enqueue(d, None);
        }
        let notify = !state.held;
        drop(s);
        if notify {
            self.wake.notify_one();
        }
        true
    }

    /// Forgets `channel`: its hold, what it held, and its floor (the client
    /// unsubscribed).
    pub fn drop_channel(&self, channel: &str) {
        let mut s = self.lock();
        if let Some(c) = s.channels.remove(channel) {
            s.held_messages -= c.hold.map_or(0, |h| h.queued.len());
        }
    }

    /// Waits until `n` more lossless messages fit in the queue (what is held
    /// aside not counted, or this could wait forever), or the connection is
    /// closing. Lets a connection resume several channels, each with up to
    /// `ws.max_replay` events, without tripping its own bound.
    pub async fn wait_room(&self, n: usize) {
        let n = n.min(self.limits.max_messages);
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let s = self.lock();
                if s.close.is_some() || s.lossless + n <= self.limits.max_messages {
                    return;
                }
            }
            tokio::select! {
                _ = room => {}
                _ = self.closing.cancelled() => return,
            }
        }
    }
}
