//! A connection's bounded outbound queue, shared by the hub (producer) and the
//! connection's writer task (consumer).
//!
//! Lossless messages queue in order up to `max_messages`; one more and the
//! client is disconnected with 4008 instead of slowing anyone down.
//! Conflatable messages (performance updates, keyed per channel and variant)
//! replace their pending predecessor: the old slot is emptied and the new
//! value is appended, so what a lagging client receives is always the newest
//! value and still a subsequence of the publish order.
//!
//! Until its first frames are in place the whole queue is held (`release`,
//! the dashboard endpoint), or, on `/ws`, only the channel being started
//! (`channels.rs`): either way publications already covered are dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::protocol::extension::Deflate;
use crate::protocol::{close, frame};
use crate::stream::Offset;

mod ahead;
mod channels;
pub mod deflate;
mod depth;
mod drain;
pub use channels::HoldId;

/// One message as the hub hands it to every subscriber: encoded once, shared.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub frame: Bytes,
    /// Present for conflatable messages: `<channel>\0<variant_id>`.
    pub conflation_key: Option<Arc<str>>,
    pub offset: Option<Offset>,
    /// The `/ws` channel (`persona:<id>`) of a wrapped publication: it may be
    /// held, or covered, per channel. `None` for every other message.
    pub channel: Option<Arc<str>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_messages: usize,
    pub max_conflated: usize,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Replaced a pending update for the same variant.
    Conflated,
    /// The backlog bound was crossed: the connection is now closing with 4008.
    Overflow,
    /// The connection is already closing; the message was dropped.
    Closed,
    /// The snapshot or replay the client got already contains it.
    Covered,
    /// Kept back with its channel's hold until that channel's first frames
    /// are in place ([`Outbox::release_channel`]).
    Held,
}

/// What the writer should do next.
pub enum Drained {
    /// `n` frames were appended to the buffer.
    Frames(usize),
    /// Send this close frame, then stop.
    Close(Bytes),
    /// Nothing to send: wait for [`Outbox::wait`].
    Empty,
    /// The close frame was sent: the writer is done.
    Finished,
}

struct Slot {
    frame: Option<Bytes>,
    key: Option<Arc<str>>,
    offset: Option<Offset>,
}

struct State {
    queue: VecDeque<Slot>,
    /// Sequence number of `queue[0]`; lets `conflated` point at slots.
    head_seq: u64,
    conflated: HashMap<Arc<str>, u64>,
    lossless: usize,
    /// Until the initial snapshot is in place, the writer sends nothing
    /// but the `ahead` frames at the front of the queue (`ahead.rs`).
    held: bool,
    /// Frames at the front of the queue that may go out while it is held.
    ahead: u8,
    /// Messages at or before this offset were covered by the snapshot or
    /// replay; they may still arrive from pub/sub afterwards and are dropped.
    floor: Option<Offset>,
    /// The same hold and floor per `/ws` channel, so that starting one
    /// channel never holds up the others' messages.
    channels: HashMap<Arc<str>, channels::ChannelState>,
    /// Messages waiting in channel holds; they count against `max_messages`.
    held_messages: usize,
    /// The last [`HoldId`] handed out.
    last_hold: u64,
    close: Option<Bytes>,
    /// The close waits for the queue to drain ([`Outbox::close_after_queued`]).
    flush_before_close: bool,
    close_sent: bool,
}

impl State {
    /// Appends `d` to the queue, conflating it with its pending predecessor.
    /// `Err`: the `bound` was crossed (the reason of the 4008).
    fn enqueue(&mut self, d: &Delivery, bound: Option<Limits>) -> Result<Pushed, &'static str> {
        let mut result = Pushed::Queued;
        if let Some(key) = &d.conflation_key {
            let tail_seq = self.head_seq.wrapping_add(self.queue.len() as u64);
            if let Some(old) = self.conflated.insert(key.clone(), tail_seq) {
                let idx = old.wrapping_sub(self.head_seq) as usize;
                if let Some(slot) = self.queue.get_mut(idx) {
                    slot.frame = None;
                    slot.key = None;
                }
                result = Pushed::Conflated;
            } else if bound.is_some_and(|b| self.conflated.len() > b.max_conflated) {
                return Err("slow consumer: too many pending updates");
            }
        } else {
            self.lossless += 1;
            if bound.is_some_and(|b| self.lossless + self.held_messages > b.max_messages) {
                return Err("slow consumer: backlog limit exceeded");
            }
        }
        self.queue.push_back(Slot {
            frame: Some(d.frame.clone()),
            key: d.conflation_key.clone(),
            offset: d.offset,
        });
        Ok(result)
    }

    /// Forgets everything queued or held (the connection is closing).
    fn clear(&mut self) {
        self.queue.clear();
        self.conflated.clear();
        self.lossless = 0;
        self.channels.clear();
        self.held_messages = 0;
    }
}

pub struct Outbox {
    state: Mutex<State>,
    wake: Notify,
    limits: Limits,
    /// Cancelled once a close is requested; bounds a writer stuck on a full socket.
    closing: CancellationToken,
    /// Overflows are counted here, whoever pushed the message that overflowed.
    metrics: Arc<Metrics>,
    /// Woken when the writer took frames: a channel waiting to queue its
    /// replay waits for room ([`Outbox::wait_room`]).
    room: Notify,
    /// permessage-deflate, when this connection negotiated it (`deflate.rs`).
    deflate: Option<Deflate>,
}

impl Outbox {
    pub fn new(limits: Limits, metrics: Arc<Metrics>) -> Self {
        Self::with_closing(limits, metrics, CancellationToken::new())
    }

    /// An outbox whose [`Outbox::closing`] is `closing`: whoever holds the
    /// token learns when a close is asked for (an SSE stream's HTTP
    /// connection, to drop a client that does not read, `server.rs`).
    pub fn with_closing(limits: Limits, metrics: Arc<Metrics>, closing: CancellationToken) -> Self {
        Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                head_seq: 0,
                conflated: HashMap::new(),
                lossless: 0,
                held: true,
                ahead: 0,
                floor: None,
                channels: HashMap::new(),
                held_messages: 0,
                last_hold: 0,
                close: None,
                flush_before_close: false,
                close_sent: false,
            }),
            wake: Notify::new(),
            limits,
            closing,
            metrics,
            room: Notify::new(),
            deflate: None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // in a way that matters more than losing the connection; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message from the hub.
    pub fn push(&self, d: &Delivery) -> Pushed {
        let mut s = self.lock();
        if s.close.is_some() {
            return Pushed::Closed;
        }
        if let (Some(floor), Some(offset)) = (s.floor, d.offset) {
            if offset <= floor {
                return Pushed::Covered;
            }
        }
        if let Some(channel) = &d.channel {
            match s.route(channel, d, self.limits.max_messages) {
                Some(Pushed::Overflow) => {
                    drop(s);
                    self.overflow("slow consumer: backlog limit exceeded");
                    return Pushed::Overflow;
                }
                Some(done) => return done,
                None => {}
            }
        }
        let was_empty = s.queue.is_empty();
        match s.enqueue(d, Some(self.limits)) {
            Err(reason) => {
                drop(s);
                self.overflow(reason);
                Pushed::Overflow
            }
            Ok(result) => {
                let notify = was_empty && !s.held;
                drop(s);
                if notify {
                    self.wake.notify_one();
                }
                result
            }
        }
    }

    fn overflow(&self, reason: &str) {
        self.metrics.slow_disconnects.inc();
        self.metrics.close_sent(close::SLOW_CONSUMER);
        self.close(close::SLOW_CONSUMER, reason);
    }

    /// Puts `first` (the snapshot, or the replayed events) ahead of everything
    /// queued, drops queued messages it already covers (offset at or before
    /// `covered`), and lets the writer start.
    pub fn release(&self, first: Vec<Bytes>, covered: Option<Offset>) {
        let first: Vec<Bytes> = first.into_iter().map(|f| self.deflated(f)).collect();
        let mut s = self.lock();
        s.floor = covered;
        if let Some(covered) = covered {
            let state = &mut *s;
            for slot in state.queue.iter_mut() {
                if slot.frame.is_none() || slot.offset.is_none_or(|o| o > covered) {
                    continue;
                }
                slot.frame = None;
                match slot.key.take() {
                    Some(key) => {
                        state.conflated.remove(&key);
                    }
                    None => state.lossless -= 1,
                }
            }
        }
        for frame in first.into_iter().rev() {
            s.queue.push_front(Slot {
                frame: Some(frame),
                key: None,
                offset: None,
            });
            s.head_seq = s.head_seq.wrapping_sub(1);
            s.lossless += 1;
        }
        s.held = false;
        s.ahead = 0;
        drop(s);
        self.wake.notify_one();
    }

    /// Requests a close with `code`; queued messages are discarded so the
    /// close goes out at once. Later requests are ignored: returns whether
    /// this one was taken (so a close is counted once).
    pub fn close(&self, code: u16, reason: &str) -> bool {
        self.close_with(frame::close(code, reason))
    }

    /// Requests a close with `code` after the frames already queued (replies
    /// that explain the close, such as `rate_limited` errors); nothing new is
    /// queued meanwhile. Still bounded: the writer's close grace starts now.
    pub fn close_after_queued(&self, code: u16, reason: &str) {
        let mut s = self.lock();
        if s.close.is_some() {
            return;
        }
        s.close = Some(frame::close(code, reason));
        s.flush_before_close = !s.held;
        drop(s);
        self.closing.cancel();
        self.wake.notify_one();
    }

    /// Echoes a client's close payload. Returns whether the request was
    /// taken (false: a close was already under way).
    pub fn close_with(&self, close_frame: Bytes) -> bool {
        let mut s = self.lock();
        if s.close.is_some() {
            return false;
        }
        s.close = Some(close_frame);
        s.flush_before_close = false;
        s.clear();
        drop(s);
        self.closing.cancel();
        self.wake.notify_one();
        true
    }

    /// The socket is gone: stop queueing, wake whoever waits on `closing`,
    /// and wake the writer so it ends now (an idle writer would otherwise
    /// hold the socket and the client's connection slot until its grace ran out).
    pub fn abandon(&self) {
        let mut s = self.lock();
        s.close.get_or_insert_with(Bytes::new);
        s.close_sent = true;
        s.clear();
        drop(s);
        self.closing.cancel();
        self.wake.notify_one();
    }

    pub fn is_closing(&self) -> bool {
        self.closing.is_cancelled()
    }

    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }

    /// Waits until something may have been queued.
    pub async fn wait(&self) {
        self.wake.notified().await
    }
}

#[cfg(test)]
mod tests;
