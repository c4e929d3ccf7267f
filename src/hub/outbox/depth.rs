//! How many messages wait in an outbox: what `system:runtime` reports as
//! queue depths (`src/runtime/`).

use super::Outbox;

impl Outbox {
    /// Messages waiting to be written: lossless ones queued or held with
    /// their channel, and conflated updates pending.
    pub fn depth(&self) -> usize {
        let s = self.lock();
        s.lossless + s.held_messages + s.conflated.len()
    }
}
