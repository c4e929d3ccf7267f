//! `system:runtime` on a session: watching the gateway's own metrics
//! (`subscribe`/`unsubscribe` of the reserved channel on `/ws`) and
//! `request_metrics` (one sample at once, on either endpoint). With auth on
//! both need the `admin` role: the figures describe the whole gateway, not
//! a persona the token was granted.

use super::Session;
use crate::auth::{Claims, Role};
use crate::protocol::{error_code, frame, ServerMessage};
use crate::runtime::{self, CHANNEL};

impl Session {
    /// Whether this connection may see the runtime metrics (auth off: yes).
    fn runtime_allowed(&self) -> bool {
        self.claims.as_ref().is_none_or(|c| c.role >= Role::Admin)
    }

    fn refuse_runtime(&self) {
        self.app.metrics.auth_failure("forbidden");
        self.error(
            error_code::FORBIDDEN,
            &format!("{CHANNEL} needs a token with the admin role"),
        );
    }

    /// `subscribe` to `system:runtime`: the ack, a first sample at once,
    /// then one every `runtime.interval`. Samples are not kept, so there is
    /// nothing to resume: `since` is ignored. Subscribing again is a no-op
    /// apart from the ack and a fresh sample.
    pub(super) fn watch_runtime(&mut self) {
        if !self.runtime_allowed() {
            return self.refuse_runtime();
        }
        if self.runtime.is_none() {
            self.runtime = Some(Box::new(self.app.runtime.watch(self.outbox.clone())));
        }
        self.reply(&ServerMessage::Subscribed {
            channel: CHANNEL,
            offset: None,
            recovered: false,
        });
        self.outbox
            .push(&runtime::delivery(self.app.runtime.sample_now()));
    }

    pub(super) fn unwatch_runtime(&mut self) {
        if self.runtime.take().is_none() {
            return self.error(
                error_code::NOT_SUBSCRIBED,
                &format!("not subscribed to {CHANNEL}"),
            );
        }
        self.reply(&ServerMessage::Unsubscribed { channel: CHANNEL });
    }

    /// `{"type":"request_metrics"}`: one sample, whether or not the
    /// connection watches the channel.
    pub(super) fn request_metrics(&mut self) {
        if !self.runtime_allowed() {
            return self.refuse_runtime();
        }
        self.outbox
            .push_frame(frame::text(&self.app.runtime.sample_now()));
    }

    /// A renewed token without the admin role ends the watch, as a revoked
    /// persona's subscription ends.
    pub(super) fn recheck_runtime(&mut self, claims: &Claims) {
        if claims.role < Role::Admin && self.runtime.take().is_some() {
            self.reply(&ServerMessage::Unsubscribed { channel: CHANNEL });
        }
    }
}
