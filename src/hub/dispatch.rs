//! The dispatching half of the hub: each publication inspected once,
//! checked against what the channel already forwarded (`continuity.rs`),
//! recorded in its recent window and pushed to every subscriber's outbox.

use std::sync::{Arc, Mutex};

use super::outbox::{self, Delivery, Outbox, Pushed};
use super::{continuity, lock_fanout, message, Fanout, Hub, Mode, Sink};
use crate::metrics::{Compressed, ReadPath, ReasonLabel, Repair};
use crate::undecodable;

impl Hub {
    /// A publication refused for bytes that are not UTF-8 (a string stored
    /// before the library refused them, or another publisher's): with U+FFFD
    /// for each invalid sequence it goes out if it is then a JSON object, as
    /// its replay from the stream would. `None`: drop it.
    fn repair(
        &self,
        channel: &str,
        payload: &[u8],
        reason: message::RejectReason,
        conflate: Option<&[String]>,
    ) -> Option<(String, message::Inspected)> {
        // Only bytes that are not UTF-8 can be repaired; an oversized or
        // deeply nested payload is dropped without another pass over it.
        if reason != message::RejectReason::InvalidJson {
            return None;
        }
        let text = undecodable::lossy(payload);
        if !text.replaced {
            return None;
        }
        let meta = message::inspect_keyed(text.text.as_bytes(), self.bounds, conflate).ok();
        let action = match meta {
            Some(_) => Repair::Replaced,
            None => Repair::Skipped,
        };
        undecodable::report(&self.metrics, ReadPath::Live, action, channel, None);
        Some((text.text.into_owned(), meta?))
    }

    /// What `outbox` gets of `plain`: its compressed form (made at most
    /// once, in `cache`) when the client negotiated permessage-deflate and
    /// compression pays, else `plain` itself.
    fn deflated<'a>(
        &self,
        outbox: &Outbox,
        plain: &'a Delivery,
        cache: &'a mut Option<Option<Delivery>>,
    ) -> &'a Delivery {
        let eligible = outbox
            .deflate()
            .is_some_and(|d| outbox::deflate::may_compress(d, &plain.frame));
        if !eligible {
            return plain;
        }
        let compressed = cache.get_or_insert_with(|| {
            let frame =
                outbox::deflate::compress(&plain.frame, &self.metrics, Compressed::Broadcast)?;
            Some(Delivery {
                frame,
                ..plain.clone()
            })
        });
        compressed.as_ref().unwrap_or(plain)
    }

    /// Fans a publication out to the channel's subscribers, unless its
    /// offset was already forwarded; held instead while a repair runs.
    pub fn dispatch(&self, channel: &str, payload: &[u8]) {
        self.metrics.redis_messages_received.inc();
        let Some(route) = self.route(channel) else {
            return;
        };
        let mut flow = continuity::lock(&route.flow);
        if flow.repairing {
            flow.hold(payload);
            return;
        }
        self.forward(&route, &mut flow, payload);
    }

    /// The channel's subscribers and state, copied out of the hub lock.
    pub(super) fn route(&self, channel: &str) -> Option<Route> {
        let channels = self.lock();
        let (name, c) = channels.get_key_value(channel)?;
        Some(Route {
            channel: name.clone(),
            fanout: c.fanout.clone(),
            ws_name: c.ws_name.clone(),
            conflate: c.conflate.clone(),
            flow: c.flow.clone(),
        })
    }

    /// Inspects a publication, drops it if its offset was forwarded
    /// already, else pushes it to every subscriber. The caller holds the
    /// channel's flow lock.
    pub(super) fn forward(&self, route: &Route, flow: &mut continuity::Flow, payload: &[u8]) {
        let channel = &*route.channel;
        let repaired;
        let conflate = route.conflate.as_deref();
        let (payload, meta) = match message::inspect_keyed(payload, self.bounds, conflate) {
            Ok(m) => (payload, m),
            Err(reason) => match self.repair(channel, payload, reason, conflate) {
                Some((text, m)) => {
                    repaired = text;
                    (repaired.as_bytes(), m)
                }
                None => {
                    tracing::debug!(channel, %reason, "dropping publication");
                    self.metrics.runtime.errors.inc();
                    self.metrics
                        .redis_messages_dropped
                        .get_or_create(&ReasonLabel {
                            reason: reason.label(),
                        })
                        .inc();
                    // It may have been a stream entry: the window would
                    // skip it where a Redis replay would not.
                    lock_fanout(&route.fanout).recent.clear();
                    return;
                }
            },
        };
        if !flow.admit(meta.offset) {
            self.metrics.continuity.duplicates.inc();
            return;
        }
        let subscribers = {
            let mut fanout = lock_fanout(&route.fanout);
            if let Some(offset) = meta.offset {
                fanout.recent.record(offset, payload, self.recent);
            }
            fanout.subscribers.clone()
        };
        let ws_name = &route.ws_name;
        let mut verbatim = None;
        let mut wrapped = None;
        // The compressed forms, made on first need: once per publication
        // and framing, whatever the number of compressing subscribers.
        let mut verbatim_deflated = None;
        let mut wrapped_deflated = None;
        // Encoded on first use too: a process without SSE clients never pays.
        let mut sse_verbatim = None;
        let mut sse_wrapped = None;
        for sub in subscribers.iter() {
            let (outbox, delivery) = match &sub.sink {
                Sink::Client {
                    outbox,
                    mode: Mode::Verbatim,
                } => {
                    let plain =
                        verbatim.get_or_insert_with(|| message::verbatim(payload, &meta, channel));
                    let d = self.deflated(outbox, plain, &mut verbatim_deflated);
                    (outbox, d)
                }
                Sink::Client {
                    outbox,
                    mode: Mode::Wrapped,
                } => {
                    let plain =
                        wrapped.get_or_insert_with(|| message::wrapped(payload, &meta, ws_name));
                    let d = self.deflated(outbox, plain, &mut wrapped_deflated);
                    (outbox, d)
                }
                Sink::Client {
                    outbox,
                    mode: Mode::SseVerbatim,
                } => (
                    outbox,
                    &*sse_verbatim
                        .get_or_insert_with(|| message::sse_verbatim(payload, &meta, channel)),
                ),
                Sink::Client {
                    outbox,
                    mode: Mode::SseWrapped,
                } => (
                    outbox,
                    &*sse_wrapped
                        .get_or_insert_with(|| message::sse_wrapped(payload, &meta, ws_name)),
                ),
                Sink::Observer(observer) => {
                    // Publications without an offset are not stream events:
                    // they change no aggregate.
                    if let Some(offset) = meta.offset {
                        observer.published(offset);
                    }
                    continue;
                }
            };
            // Overflows are counted by the outbox itself.
            if outbox.push(delivery) == Pushed::Conflated {
                self.metrics.messages_conflated.inc();
            }
        }
    }
}

/// A channel's fan-out and flow, copied out of the hub lock.
pub(super) struct Route {
    pub(super) channel: Arc<str>,
    pub(super) fanout: Arc<Mutex<Fanout>>,
    pub(super) ws_name: Arc<str>,
    pub(super) conflate: Option<Arc<[String]>>,
    pub(super) flow: Arc<Mutex<continuity::Flow>>,
}
