//! Gap repair, the hub's half: per channel, the last offset forwarded, and
//! the publications held while a repair reads back what a resubscription
//! (reconnect, failover, slot move, lagged broadcast channel) may have
//! missed. The repair itself (reading the stream) is `src/redis/gap.rs`.
//!
//! While a channel repairs, live publications are held, not forwarded; the
//! repair forwards the stream's entries after the last offset, then the
//! held publications, each admitted only if its offset is past the last one
//! forwarded. So clients get every entry once and in order, and the same
//! publication seen twice (from the stream and live, or from two nodes
//! while a slot moves) is forwarded once.

use std::sync::{Arc, Mutex, MutexGuard};

use super::outbox::deflate::SharedFrame;
use super::{Hub, Sink};
use crate::keys::PersonaId;
use crate::stream::Offset;

/// Most publications held per channel during one repair; past it the held
/// ones are dropped and the repair reads the stream again (they are in it).
const MAX_HELD: usize = 10_000;
/// Most bytes held per channel during one repair.
const MAX_HELD_BYTES: usize = 64 * 1024 * 1024;

pub(super) struct Flow {
    /// The last offset forwarded; `None` until the repair that starts every
    /// channel has read where its stream stands.
    last: Option<Offset>,
    /// A repair is due or running: publications are held.
    pub(super) repairing: bool,
    /// Redis confirmed the subscription (as `Channel::ready`, kept here
    /// under this lock): a repair ends only while it holds, since what a
    /// dropped subscription misses can be read back only once it is back.
    pub(super) subscribed: bool,
    held: Vec<Vec<u8>>,
    held_bytes: usize,
    /// Some held publications were dropped (too many): read the stream again.
    overflowed: bool,
    /// A new channel's position, read by its first repair: where a later
    /// repair reads from while nothing was forwarded yet. Never a floor for
    /// live publications: one at or before it may still be on its way from
    /// the subscriber connection when the read answers, and clients whose
    /// snapshot predates it need it (each client's own floor drops it for
    /// the others).
    seed: Option<Offset>,
}

pub(super) fn lock(flow: &Mutex<Flow>) -> MutexGuard<'_, Flow> {
    flow.lock().unwrap_or_else(|e| e.into_inner())
}

impl Flow {
    /// A channel without a stream to repair from: forwards at once.
    pub(super) fn live() -> Self {
        Self {
            repairing: false,
            ..Self::new()
        }
    }

    /// A new channel starts repairing: its first repair finds its position.
    pub(super) fn new() -> Self {
        Self {
            last: None,
            repairing: true,
            subscribed: false,
            held: Vec::new(),
            held_bytes: 0,
            overflowed: false,
            seed: None,
        }
    }

    pub(super) fn begin(&mut self) -> bool {
        !std::mem::replace(&mut self.repairing, true)
    }

    pub(super) fn hold(&mut self, payload: &[u8]) {
        if self.held.len() >= MAX_HELD || self.held_bytes + payload.len() > MAX_HELD_BYTES {
            self.overflowed = true;
            return;
        }
        self.held_bytes += payload.len();
        self.held.push(payload.to_vec());
    }

    /// Whether a publication with `offset` is new; records it as the last.
    /// One without an offset (not a stream entry) is always forwarded.
    pub(super) fn admit(&mut self, offset: Option<Offset>) -> bool {
        match (offset, self.last) {
            (Some(o), Some(last)) if o <= last => false,
            (Some(o), _) => {
                self.last = Some(o);
                true
            }
            (None, _) => true,
        }
    }
}

/// Where a repair of one channel starts.
#[derive(Debug, Clone)]
pub struct RepairFrom {
    pub persona: PersonaId,
    /// The last offset forwarded (`None`: the channel is new).
    pub last: Option<Offset>,
}

impl Hub {
    /// Marks `channel` for repair (its publications are held from now on);
    /// true if it was not already.
    pub fn begin_repair(&self, channel: &str) -> bool {
        let flow = match self.lock().get(channel) {
            Some(c) if c.persona.is_some() => c.flow.clone(),
            _ => return false,
        };
        let mut flow = lock(&flow);
        flow.begin()
    }

    /// Marks every channel for repair (after a lagged broadcast channel).
    pub fn begin_repair_all(&self) {
        for c in self.lock().values().filter(|c| c.persona.is_some()) {
            lock(&c.flow).begin();
        }
    }

    /// Where the repair of `channel` starts, if it exists and is repairing.
    pub fn repair_from(&self, channel: &str) -> Option<RepairFrom> {
        let (persona, flow) = {
            let channels = self.lock();
            let c = channels.get(channel)?;
            (c.persona.clone()?, c.flow.clone())
        };
        let flow = lock(&flow);
        (flow.repairing && flow.subscribed).then(|| RepairFrom {
            persona,
            last: flow.last.or(flow.seed),
        })
    }

    /// A new channel's position: the stream's newest entry once it was
    /// subscribed (`0-0` for a stream that does not exist yet): where a
    /// repair starts until something was forwarded. Whatever was held, and
    /// whatever arrives later, is forwarded all the same (a client's
    /// snapshot may predate it; its own floor drops what it has).
    /// `entries`, the newest ones of the same read (oldest first), start
    /// the channel's recent window (`recent.rs`); returns how many it kept.
    pub fn seed(&self, channel: &str, offset: Offset, entries: &[(Offset, String)]) -> usize {
        let Some(route) = self.route(channel) else {
            return 0;
        };
        let mut flow = lock(&route.flow);
        let mut kept = 0;
        // Under the flow lock, so no publication is recorded meanwhile:
        // the held ones are forwarded after it, by `finish_repair`.
        if flow.last.is_none() {
            flow.seed = Some(offset);
            if flow.subscribed {
                kept = super::lock_fanout(&route.fanout)
                    .recent
                    .fill(entries, offset, self.recent);
            }
        }
        drop(flow);
        self.primed(channel);
        kept
    }

    /// Forwards one entry read back from the stream (dropped if forwarded
    /// already); true if it went out.
    pub fn forward_repaired(&self, channel: &str, payload: &[u8]) -> bool {
        let Some(route) = self.route(channel) else {
            return false;
        };
        let mut flow = lock(&route.flow);
        let before = flow.last;
        self.forward(&route, &mut flow, payload);
        flow.last != before
    }

    /// Ends a repair: forwards what was held, in order, and lets live
    /// publications through again. False (and nothing forwarded) when some
    /// held publications had to be dropped: read the stream again first.
    /// A channel whose subscription dropped meanwhile stays held: the
    /// reconciler asks for another repair once it is subscribed again.
    pub fn finish_repair(&self, channel: &str) -> bool {
        let Some(route) = self.route(channel) else {
            return true;
        };
        let mut flow = lock(&route.flow);
        if !flow.subscribed {
            return true;
        }
        if std::mem::take(&mut flow.overflowed) {
            flow.held.clear();
            flow.held_bytes = 0;
            return false;
        }
        let held = std::mem::take(&mut flow.held);
        flow.held_bytes = 0;
        for payload in &held {
            self.forward(&route, &mut flow, payload);
        }
        flow.repairing = false;
        true
    }

    /// The missed entries are gone: every client of `channel` gets the
    /// given fresh `initial_data` (`verbatim` for `/dashboard/ws`, `wrapped`
    /// for `/ws`; compressed once each for the clients with
    /// permessage-deflate), and forwarding goes on from `offset`, the
    /// snapshot's.
    pub fn restart(
        &self,
        channel: &str,
        offset: Option<Offset>,
        verbatim: SharedFrame,
        wrapped: SharedFrame,
    ) {
        let Some(route) = self.route(channel) else {
            return;
        };
        let mut flow = lock(&route.flow);
        let subscribers = {
            // What was forwarded before is not this stream's history any more.
            let mut fanout = super::lock_fanout(&route.fanout);
            fanout.recent.clear();
            fanout.subscribers.clone()
        };
        for sub in subscribers.iter() {
            if let Sink::Client { outbox, mode } = &sub.sink {
                let frame = match mode {
                    // SSE streams turn frames into events as they send them.
                    super::Mode::Verbatim | super::Mode::SseVerbatim => &verbatim,
                    super::Mode::Wrapped | super::Mode::SseWrapped => &wrapped,
                };
                outbox.push_frame(frame.for_connection(outbox.deflate(), &self.metrics));
            }
        }
        flow.last = offset.or(flow.last);
    }

    /// The `/ws` name (`persona:<id>`) of `channel`.
    pub fn ws_name(&self, channel: &str) -> Option<Arc<str>> {
        self.lock().get(channel).map(|c| c.ws_name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_admitted_once_and_in_order() {
        let mut flow = Flow::new();
        assert!(flow.repairing);
        assert!(flow.admit(Some((5, 0))));
        assert!(!flow.admit(Some((5, 0))));
        assert!(!flow.admit(Some((4, 9))));
        assert!(flow.admit(None));
        assert!(flow.admit(Some((5, 1))));
        assert!(!flow.begin(), "new channels start repairing");
        flow.repairing = false;
        assert!(flow.begin());
    }

    #[test]
    fn too_much_held_asks_for_another_read() {
        let mut flow = Flow::new();
        for _ in 0..MAX_HELD {
            flow.hold(b"{}");
        }
        assert!(!flow.overflowed);
        flow.hold(b"{}");
        assert!(flow.overflowed);
        assert_eq!(flow.held.len(), MAX_HELD);
    }
}
