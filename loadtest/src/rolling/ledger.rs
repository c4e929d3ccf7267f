//! What one client received, by stream offset, and the verdict against the
//! stream itself: the ids read back with `XRANGE` once the run is over are
//! the truth every client is judged on.
//!
//! An offset `<ms>-<seq>` is packed into one `u64` (`ms << 20 | seq`), so a
//! client keeps 8 bytes per event received: ~35 MB for 8,000 clients at 10
//! events/s per channel for a minute.

use serde::{Deserialize, Serialize};

/// Bits of the packed offset that hold the sequence part.
const SEQ_BITS: u32 = 20;
/// Largest millisecond part that fits above the sequence bits.
const MAX_MS: u64 = (1 << (64 - SEQ_BITS)) - 1;

/// Packs `ms-seq`; `None` if either part does not fit (no stream written by
/// `pulse_ingest` comes near: its ids are wall-clock milliseconds).
pub fn pack(ms: u64, seq: u64) -> Option<u64> {
    (ms <= MAX_MS && seq < 1 << SEQ_BITS).then_some(ms << SEQ_BITS | seq)
}

/// Parses an offset as the gateway writes it, `"1795318622093-0"` (without
/// the quotes), at the start of `b`.
pub fn parse(b: &[u8]) -> Option<u64> {
    let dash = b.iter().position(|&c| c == b'-')?;
    let end = b[dash + 1..]
        .iter()
        .position(|c| !c.is_ascii_digit())
        .map_or(b.len(), |i| dash + 1 + i);
    let num = |d: &[u8]| -> Option<u64> {
        if d.is_empty() || d.len() > 19 || !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(d).ok()?.parse().ok()
    };
    pack(num(&b[..dash])?, num(&b[dash + 1..end])?)
}

/// The offset as the protocol spells it, for `?since=` and `"since"`.
pub fn format(packed: u64) -> String {
    format!("{}-{}", packed >> SEQ_BITS, packed & ((1 << SEQ_BITS) - 1))
}

/// A client's record across all its connections.
#[derive(Debug, Default)]
pub struct Ledger {
    /// The offset the first snapshot covered: the stream's entries after it
    /// are owed. `Some(0)` when it had none (an empty stream: everything is
    /// owed). `None` until the first `initial_data`, or for good on a `/ws`
    /// whose `subscribed` carries no offset: then the stream's last entry
    /// before publishing began (the verdict's `floor`) stands in for it,
    /// as every client subscribed before that.
    pub start: Option<u64>,
    /// Offsets of the events received, in arrival order, all connections.
    received: Vec<u64>,
    /// The offset to resume from: the last event received, or the last
    /// snapshot's when that came later.
    pub last: Option<u64>,
    /// Resumes the gateway did not honour: the entries in `(from, to)`
    /// were skipped by the protocol's own word (a fresh snapshot up to
    /// `to - 1`, or a plain subscription that went on live at `to`).
    gaps: Vec<(u64, u64)>,
    /// A refused resume whose gap ends at the next event: its `from`.
    open_gap: Option<u64>,
}

impl Ledger {
    /// An `initial_data` covering `offset` (0: none). The first one sets
    /// the start; a later one means the resume failed. A later one without
    /// an offset (the gateway could not read Redis and sent the empty
    /// snapshot) leaves the gap open until the next event.
    pub fn snapshot(&mut self, offset: u64) {
        match (self.start, self.last) {
            (None, _) => {
                self.start = Some(offset);
                self.last = Some(offset);
            }
            (Some(_), _) if offset == 0 => self.refused_until_next_event(),
            (Some(start), last) => {
                let from = self.open_gap.take().or(last).unwrap_or(start);
                if offset > from {
                    self.gaps.push((from, offset + 1));
                }
                self.last = Some(offset.max(from));
            }
        }
    }

    /// A resume refused without a snapshot (the subscription simply went
    /// on live): what lies between the last offset and the next event
    /// received is the gap.
    pub fn refused_until_next_event(&mut self) {
        if let Some(from) = self.last {
            self.open_gap.get_or_insert(from);
        }
    }

    pub fn event(&mut self, offset: u64) {
        if let Some(from) = self.open_gap.take() {
            if offset > from {
                self.gaps.push((from, offset));
            }
        }
        self.received.push(offset);
        self.last = Some(offset);
    }

    /// Judges the record of a client that started against the stream's ids
    /// (ascending, as `XRANGE` returns them); `floor` stands in for a start
    /// the gateway never named (see `start`).
    pub fn verify(&self, stream: &[u64], floor: u64) -> Verdict {
        let mut v = Verdict::default();
        let start = self.start.unwrap_or(floor);
        let first_owed = stream.partition_point(|&id| id <= start);
        let owed = &stream[first_owed..];
        v.owed = owed.len() as u64;
        let mut seen = vec![false; owed.len()];
        let mut highest: Option<usize> = None;
        for &o in &self.received {
            match stream.binary_search(&o) {
                Err(_) => v.foreign += 1,
                // Covered by the first snapshot: the gateway should have
                // dropped it, so it is a second copy.
                Ok(i) if i < first_owed => v.duplicates += 1,
                Ok(i) => {
                    let k = i - first_owed;
                    if seen[k] {
                        v.duplicates += 1;
                        continue;
                    }
                    seen[k] = true;
                    v.received += 1;
                    match highest {
                        Some(h) if k < h => v.out_of_order += 1,
                        _ => highest = Some(k),
                    }
                }
            }
        }
        for (k, _) in seen.iter().enumerate().filter(|(_, s)| !**s) {
            let id = owed[k];
            if self.gaps.iter().any(|&(from, to)| id > from && id < to) {
                v.unrecovered += 1;
            } else if highest.is_none_or(|h| k > h) {
                v.late += 1;
            } else {
                v.missed += 1;
            }
        }
        v
    }
}

/// One client's delivery against the stream.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Stream entries after the client's first snapshot.
    pub owed: u64,
    /// Distinct owed entries received.
    pub received: u64,
    /// Owed and never received, outside a failed resume's gap, although a
    /// later entry was: a hole.
    pub missed: u64,
    /// Owed and not received by the end, after the last entry that was: still
    /// on their way when the run stopped, or lost at the end (a longer
    /// `--quiet` tells which).
    #[serde(default)]
    pub late: u64,
    /// Owed and never received because a resume was refused (a fresh
    /// snapshot came instead): lost by the protocol's own word.
    pub unrecovered: u64,
    /// Received again (or received although the first snapshot covered it).
    pub duplicates: u64,
    /// Received after a later entry had already arrived.
    pub out_of_order: u64,
    /// Offsets received that the stream does not hold.
    pub foreign: u64,
}

impl Verdict {
    pub fn clean(&self) -> bool {
        self.missed
            + self.late
            + self.unrecovered
            + self.duplicates
            + self.out_of_order
            + self.foreign
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64, seq: u64) -> u64 {
        pack(ms, seq).unwrap()
    }

    #[test]
    fn offsets_round_trip() {
        let o = parse(b"1795318622093-17\",\"data\"").unwrap();
        assert_eq!(o, id(1_795_318_622_093, 17));
        assert_eq!(format(o), "1795318622093-17");
        assert!(id(5, 0) > id(4, 999) && id(5, 1) > id(5, 0));
        assert_eq!(parse(b"12-"), None);
        assert_eq!(parse(b"-3"), None);
        assert_eq!(parse(b"null"), None);
        assert_eq!(pack(1, 1 << 20), None);
    }

    #[test]
    fn a_clean_run_owes_what_came_after_the_snapshot() {
        let stream: Vec<u64> = (1..=10).map(|ms| id(ms, 0)).collect();
        let mut l = Ledger::default();
        l.snapshot(id(3, 0));
        (4..=10).for_each(|ms| l.event(id(ms, 0)));
        let v = l.verify(&stream, 0);
        assert_eq!((v.owed, v.received), (7, 7));
        assert!(v.clean(), "{v:?}");
        assert_eq!(l.last, Some(id(10, 0)));
    }

    #[test]
    fn gaps_repeats_and_reorderings_are_told_apart() {
        let stream: Vec<u64> = (1..=10).map(|ms| id(ms, 0)).collect();
        let mut l = Ledger::default();
        l.snapshot(id(1, 0));
        // 2 3 5 4 4 7 1 99: missed 6 (7 came), 8, 9 and 10 not yet; 4 after
        // 5; 4 and 1 twice; 99 unknown.
        for ms in [2, 3, 5, 4, 4, 7, 1, 99] {
            l.event(id(ms, 0));
        }
        let v = l.verify(&stream, 0);
        assert_eq!(v.owed, 9);
        assert_eq!(v.received, 5);
        assert_eq!(v.missed, 1);
        assert_eq!(v.late, 3);
        assert!(!v.clean());
        assert_eq!(v.out_of_order, 1);
        assert_eq!(v.duplicates, 2);
        assert_eq!(v.foreign, 1);
        assert_eq!(v.unrecovered, 0);
    }

    #[test]
    fn a_refused_resume_is_counted_apart() {
        let stream: Vec<u64> = (1..=10).map(|ms| id(ms, 0)).collect();
        let mut l = Ledger::default();
        l.snapshot(id(2, 0));
        l.event(id(3, 0));
        l.event(id(4, 0));
        // Reconnected with since=4; the gateway sent a snapshot at 7 instead.
        l.snapshot(id(7, 0));
        assert_eq!(l.last, Some(id(7, 0)));
        (8..=10).for_each(|ms| l.event(id(ms, 0)));
        let v = l.verify(&stream, 0);
        assert_eq!((v.owed, v.received, v.missed, v.unrecovered), (8, 5, 0, 3));
        assert_eq!(l.gaps, vec![(id(4, 0), id(7, 0) + 1)]);
        // And once more, when Redis could not be read: `"offset":null`.
        l.snapshot(0);
        l.event(id(12, 0));
        let stream: Vec<u64> = (1..=12).map(|ms| id(ms, 0)).collect();
        let v = l.verify(&stream, 0);
        assert_eq!((v.missed, v.unrecovered), (0, 4));
    }

    #[test]
    fn a_subscription_without_offsets_is_judged_from_the_floor() {
        // /ws before `subscribed` carried offsets: no start, no resume.
        let stream: Vec<u64> = (1..=10).map(|ms| id(ms, 0)).collect();
        let mut l = Ledger::default();
        (4..=6).for_each(|ms| l.event(id(ms, 0)));
        // Reconnected; the gateway took `since` for a plain subscribe.
        l.refused_until_next_event();
        (9..=10).for_each(|ms| l.event(id(ms, 0)));
        let v = l.verify(&stream, id(3, 0));
        assert_eq!((v.owed, v.received, v.missed, v.unrecovered), (7, 5, 0, 2));
        assert!(Ledger::default().verify(&stream, id(10, 0)).clean());
    }
}
