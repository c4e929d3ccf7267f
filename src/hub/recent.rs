//! The last publications of one channel, kept while the channel is watched,
//! so that a client resuming with `since` after a deploy or a dropped
//! connection is served from memory instead of a Redis replay.
//!
//! The window is exact only while the channel's subscription stays
//! unbroken: every stream entry published after the first one it holds has
//! passed through it. Anything that may have broken that (Redis lost, the
//! hub lagging, a publication dropped, offsets going backwards) empties it,
//! and a resume it cannot answer goes to Redis as before.
//!
//! A channel's window starts filled (`fill`): its first gap repair reads
//! the stream's newest entries after Redis confirmed the subscription, so
//! every entry published later arrives live; those published between the
//! confirmation and the read arrive live too and are already held, so a
//! live publication at or before the read's newest entry is skipped.

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
    /// The newest entry of the read that filled the window, until a live
    /// publication past it is recorded: live ones at or before it were in
    /// the stream when it was read, so the window has them (or they are
    /// older than its first entry).
    filled_to: Option<Offset>,
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
        match self.filled_to {
            Some(read) if offset <= read => return,
            Some(_) => self.filled_to = None,
            None => {}
        }
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

    /// Starts the window from `entries`, the stream's newest (oldest
    /// first, read after the subscription was confirmed and before any
    /// live publication was recorded), of which `newest` is the last the
    /// stream held. Keeps the newest that fit `limits`; returns how many.
    pub fn fill(&mut self, entries: &[(Offset, String)], newest: Offset, limits: Limits) -> usize {
        self.clear();
        if limits.entries == 0 {
            return 0;
        }
        for (offset, m) in entries {
            self.record(*offset, m.as_bytes(), limits);
        }
        self.filled_to = Some(newest);
        self.entries.len()
    }

    /// Forgets everything: the subscription may have missed publications.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
        self.filled_to = None;
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

    fn read(from: u64, to: u64) -> Vec<(Offset, String)> {
        (from..=to).map(|i| (o(i, 0), format!("m{i}"))).collect()
    }

    #[test]
    fn a_filled_window_skips_live_publications_the_read_had() {
        let mut r = Recent::default();
        // The read had 1..=6; the window keeps the newest 4.
        assert_eq!(r.fill(&read(1, 6), o(6, 0), LIMITS), 4);
        assert_eq!(offsets(r.since(o(3, 0), 100)), Some(vec![4, 5, 6]));
        // Published between the confirmation and the read: held already,
        // or older than the window; neither empties it.
        r.record(o(5, 0), b"m5", LIMITS);
        r.record(o(2, 0), b"m2", LIMITS);
        r.record(o(6, 0), b"m6", LIMITS);
        assert_eq!(offsets(r.since(o(3, 0), 100)), Some(vec![4, 5, 6]));
        r.record(o(7, 0), b"m7", LIMITS);
        assert_eq!(offsets(r.since(o(4, 0), 100)), Some(vec![5, 6, 7]));
        // Past the read, going backwards empties it again.
        r.record(o(6, 0), b"again", LIMITS);
        assert_eq!(r.since(o(5, 0), 100), Lookup::Unknown);
    }

    #[test]
    fn an_empty_stream_fills_an_empty_window() {
        let mut r = Recent::default();
        assert_eq!(r.fill(&[], o(0, 0), LIMITS), 0);
        assert_eq!(r.since(o(0, 0), 100), Lookup::Unknown);
        r.record(o(1, 0), b"m1", LIMITS);
        assert_eq!(offsets(r.since(o(1, 0), 100)), Some(vec![]));
        let mut off = Recent::default();
        assert_eq!(off.fill(&read(1, 2), o(2, 0), Limits::DISABLED), 0);
        assert_eq!(off.since(o(1, 0), 100), Lookup::Unknown);
    }

    #[test]
    fn disabled_keeps_nothing() {
        let mut r = Recent::default();
        r.record(o(1, 0), b"x", Limits::DISABLED);
        assert_eq!(r.since(o(1, 0), 100), Lookup::Unknown);
    }
}
