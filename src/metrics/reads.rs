//! Redis reads behind the first frames of a client, and how many clients
//! shared one (`src/singleflight.rs`) or needed none (`src/hub/recent.rs`):
//! reads ÷ (reads + shared + recent) is the Redis cost of a joining or
//! reconnecting client.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// The two reads a joining client may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// `FCALL_RO pulse_snapshot`: `initial_data`, `refresh`, REST answers.
    Snapshot,
    /// The MULTI/EXEC of `XINFO STREAM` + `XRANGE` of a `?since=` resume.
    Replay,
}

#[derive(Default)]
pub struct Reads {
    /// Snapshot reads sent to Redis.
    pub snapshot_reads: Counter,
    /// Snapshot callers served by a read another caller queued.
    pub snapshot_shared: Counter,
    /// Replays sent to Redis.
    pub replay_reads: Counter,
    /// Resumes served by a replay another resume queued.
    pub replay_shared: Counter,
    /// Resumes served from the channel's recent publications in memory.
    pub replay_recent: Counter,
    /// Channel windows started from one read of the stream's newest entries.
    pub recent_prefills: Counter,
    /// Entries those reads put in the windows.
    pub recent_prefilled: Counter,
    /// Resumes that waited for their channel's window to be started.
    pub recent_waited: Counter,
    /// Snapshot reads Redis failed (a timeout under load) and a client's
    /// start tried again.
    pub snapshot_retries: Counter,
    /// The same for replays.
    pub replay_retries: Counter,
}

impl Reads {
    pub fn register(&self, r: &mut Registry) {
        for (name, help, c) in [
            (
                "snapshot_reads",
                "Snapshot reads sent to Redis (FCALL_RO pulse_snapshot)",
                &self.snapshot_reads,
            ),
            (
                "snapshot_shared",
                "Snapshots served from a read another client or request queued",
                &self.snapshot_shared,
            ),
            (
                "replay_reads",
                "Resume replays sent to Redis (XINFO STREAM + XRANGE)",
                &self.replay_reads,
            ),
            (
                "replay_shared",
                "Resumes served from a replay another client queued",
                &self.replay_shared,
            ),
            (
                "replay_recent",
                "Resumes served from the gateway's recent publications, without Redis",
                &self.replay_recent,
            ),
            (
                "recent_prefills",
                "New channels whose recent window was started from one read of the stream's newest entries",
                &self.recent_prefills,
            ),
            (
                "recent_prefilled_entries",
                "Entries put in recent windows by those reads",
                &self.recent_prefilled,
            ),
            (
                "recent_waited",
                "Resumes that waited for their new channel's window instead of replaying alone",
                &self.recent_waited,
            ),
            (
                "snapshot_retries",
                "Snapshot reads for a client's first frames tried again after Redis failed one",
                &self.snapshot_retries,
            ),
            (
                "replay_retries",
                "Resume replays tried again after Redis failed one",
                &self.replay_retries,
            ),
        ] {
            r.register(name, help, c.clone());
        }
    }

    /// One read sent to Redis.
    pub fn sent(&self, read: Read) {
        match read {
            Read::Snapshot => self.snapshot_reads.inc(),
            Read::Replay => self.replay_reads.inc(),
        };
    }

    /// A read Redis failed, tried again.
    pub fn retried(&self, read: Read) {
        match read {
            Read::Snapshot => self.snapshot_retries.inc(),
            Read::Replay => self.replay_retries.inc(),
        };
    }

    /// A caller served by a read another caller queued.
    pub fn shared(&self, read: Read) {
        match read {
            Read::Snapshot => self.snapshot_shared.inc(),
            Read::Replay => self.replay_shared.inc(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::Read;
    use crate::metrics::Metrics;

    #[test]
    fn every_read_counter_is_served_and_documented() {
        let m = Metrics::new();
        m.reads.sent(Read::Snapshot);
        m.reads.shared(Read::Replay);
        let text = m.encode();
        let doc = include_str!("../../docs/architecture.md");
        for (name, value) in [
            ("pulsegate_snapshot_reads_total", 1),
            ("pulsegate_snapshot_shared_total", 0),
            ("pulsegate_replay_reads_total", 0),
            ("pulsegate_replay_shared_total", 1),
            ("pulsegate_replay_recent_total", 0),
            ("pulsegate_recent_prefills_total", 0),
            ("pulsegate_recent_prefilled_entries_total", 0),
            ("pulsegate_recent_waited_total", 0),
            ("pulsegate_snapshot_retries_total", 0),
            ("pulsegate_replay_retries_total", 0),
        ] {
            assert!(text.contains(&format!("\n{name} {value}\n")), "{text}");
            assert!(doc.contains(&format!("| `{name}` | counter |")), "{name}");
        }
    }
}
