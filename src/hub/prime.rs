//! Waiting for a new channel's recent window: a persona channel's first
//! gap repair reads the stream's newest entries once (`redis/gap.rs`) and
//! starts the window with them (`continuity.rs`, `recent.rs`). Resumes
//! that arrive meanwhile wait for that one read instead of each replaying
//! from Redis: after a restart, every client moved to an instance that did
//! not follow its persona yet would otherwise cost a replay.

use std::time::Duration;

use super::recent::Limits;
use super::Hub;
use crate::keys::PersonaId;

impl Hub {
    /// How much of each channel's recent publications is kept.
    pub fn recent_limits(&self) -> Limits {
        self.recent
    }

    /// The first repair of `channel` is done: its window is started.
    pub(super) fn primed(&self, channel: &str) {
        if let Some(c) = self.lock().get(channel) {
            c.primed.send_replace(true);
        }
    }

    /// Waits, at most `max`, until `persona`'s channel has started its
    /// window (at once if it has, if no window is kept, or if nobody here
    /// follows the persona). True if it waited for it and it came.
    pub async fn primed_within(&self, persona: &PersonaId, max: Duration) -> bool {
        if self.recent.entries == 0 {
            return false;
        }
        let name = self.keys.channel(persona);
        let mut primed = match self.lock().get(name.as_str()) {
            Some(c) if !*c.primed.borrow() => c.primed.subscribe(),
            _ => return false,
        };
        let came = tokio::time::timeout(max, primed.wait_for(|p| *p))
            .await
            .is_ok_and(|r| r.is_ok());
        came
    }
}
