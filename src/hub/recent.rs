//! The last publications of one channel, kept while the channel is watched,
//! so that a client resuming with `since` after a deploy or a dropped
//! connection is served from memory instead of a Redis replay.
//!
//! The window is exact only while the channel's subscription stays
//! unbroken: every stream entry published after the first one it holds has
//! passed through it. Anything that may have broken that (Redis lost, the
//! hub lagging, a publication dropped, offsets going backwards) empties it,
//! and a resume it cannot answer goes to Redis as before.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::stream::Offset;

/// Bounds of one channel's window (`ws.recent_entries`, `ws.recent_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub entries: usize,
    pub bytes: usize,
}

impl Limits {
    pub const DISABLED: Self = Self {
        entries: 0,
        bytes: 0,
    };
}

#[derive(Debug, Default)]
pub struct Recent {
    entries: VecDeque<(Offset, Bytes)>,
    bytes: usize,
}

/// What a resume from `since` can have from the window.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Every entry after `since`, in order (empty when none was missed).
    Missed(Vec<(Offset, Bytes)>),
    /// The window cannot tell: ask Redis.
    Unknown,
}

impl Recent {
    /// Keeps `payload`, published at `offset`, dropping the oldest entries
    /// past `limits`.
    pub fn record(&mut self, offset: Offset, payload: &[u8], limits: Limits) {
        if let Some((last, _)) = self.entries.back() {
            if offset <= *last {
                // The stream went backwards (a Redis without persistence
                // restarted, a failover lost writes): what is held is no
                // longer this stream's history.
                self.clear();
            }
        }
        if limits.entries == 0 || payload.len() > limits.bytes {
            // Held entries stay exact only if none after them is skipped.
            self.clear();
            return;
        }
        self.entries
            .push_back((offset, Bytes::copy_from_slice(payload)));
        self.bytes += payload.len();
        while self.entries.len() > limits.entries || self.bytes > limits.bytes {
            if let Some((_, dropped)) = self.entries.pop_front() {
                self.bytes -= dropped.len();
            }
        }
    }

    /// Forgets everything: the subscription may have missed publications.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The entries after `since`, if the window holds all of them: `since`
    /// must lie within it (from its first entry to its last). Before the
    /// first, entries between may exist that it never saw; past the last,
    /// `since` may not be this stream's, which only Redis can tell.
    pub fn since(&self, since: Offset, max: usize) -> Lookup {
        let (Some((first, _)), Some((last, _))) = (self.entries.front(), self.entries.back())
        else {
            return Lookup::Unknown;
        };
        if since < *first || since > *last {
            return Lookup::Unknown;
        }
        let start = self.entries.partition_point(|(o, _)| *o <= since);
        if self.entries.len() - start > max {
            // Redis decides `too_many_missed` with its own count.
            return Lookup::Unknown;
        }
        Lookup::Missed(self.entries.range(start..).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        entries: 4,
        bytes: 1024,
    };

    fn o(ms: u64, seq: u64) -> Offset {
        (ms, seq)
    }

    fn filled(n: u64) -> Recent {
        let mut r = Recent::default();
        for i in 1..=n {
            r.record(o(i, 0), format!("m{i}").as_bytes(), LIMITS);
        }
        r
    }

    fn offsets(l: Lookup) -> Option<Vec<u64>> {
        match l {
            Lookup::Missed(v) => Some(v.into_iter().map(|(o, _)| o.0).collect()),
            Lookup::Unknown => None,
        }
    }

    #[test]
    fn serves_what_followed_an_offset_it_holds() {
        let r = filled(3);
        assert_eq!(offsets(r.since(o(1, 0), 100)), Some(vec![2, 3]));
        assert_eq!(offsets(r.since(o(3, 0), 100)), Some(vec![]));
        // Between two held entries: what follows, as XRANGE would answer.
        assert_eq!(offsets(r.since(o(1, 5), 100)), Some(vec![2, 3]));
    }

    #[test]
    fn cannot_tell_outside_the_window_or_past_the_replay_bound() {
        let r = filled(6);
        // Entries 1 and 2 fell out: the first held is 3.
        assert_eq!(r.since(o(2, 0), 100), Lookup::Unknown);
        assert_eq!(r.since(o(7, 0), 100), Lookup::Unknown);
        assert_eq!(r.since(o(3, 0), 2), Lookup::Unknown);
        assert_eq!(offsets(r.since(o(3, 0), 3)), Some(vec![4, 5, 6]));
        assert_eq!(Recent::default().since(o(1, 0), 10), Lookup::Unknown);
    }

    #[test]
    fn bytes_bound_the_window_and_an_oversized_entry_empties_it() {
        let mut r = Recent::default();
        let small = Limits {
            entries: 100,
            bytes: 10,
        };
        for i in 1..=5 {
            r.record(o(i, 0), b"abcd", small);
        }
        assert_eq!(offsets(r.since(o(4, 0), 100)), Some(vec![5]));
        assert_eq!(r.since(o(3, 0), 100), Lookup::Unknown);
        r.record(o(6, 0), b"much too long", small);
        assert_eq!(r.since(o(5, 0), 100), Lookup::Unknown);
        r.record(o(7, 0), b"ab", small);
        assert_eq!(offsets(r.since(o(7, 0), 100)), Some(vec![]));
    }

    #[test]
    fn offsets_going_backwards_restart_the_window() {
        let mut r = filled(3);
        r.record(o(2, 0), b"again", LIMITS);
        assert_eq!(r.since(o(1, 0), 100), Lookup::Unknown);
        assert_eq!(offsets(r.since(o(2, 0), 100)), Some(vec![]));
    }

    #[test]
    fn disabled_keeps_nothing() {
        let mut r = Recent::default();
        r.record(o(1, 0), b"x", Limits::DISABLED);
        assert_eq!(r.since(o(1, 0), 100), Lookup::Unknown);
    }
}
