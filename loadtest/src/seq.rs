//! Per-subscriber accounting of one persona's sequence numbers: which
//! messages arrived, twice, late, or not at all.
//!
//! Memory stays small whatever the run length: only the highest sequence
//! seen and the still-missing ranges below it are kept.

/// Seq numbers start at 1; 0 marks "nothing seen yet".
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    /// Highest seq seen so far.
    max_seen: u64,
    /// Half-open ranges `[from, to)` below `max_seen` not received yet,
    /// sorted and disjoint.
    missing: Vec<(u64, u64)>,
    /// Ranges skipped on purpose: published while this subscriber was
    /// reconnecting, so never expected. Counted, not tracked.
    pub skipped: u64,
    /// Distinct seqs received.
    pub unique: u64,
    pub duplicates: u64,
    /// Messages that arrived after a higher seq had already arrived.
    pub out_of_order: u64,
}

impl SeqTracker {
    pub fn record(&mut self, seq: u64) {
        if seq == 0 {
            return;
        }
        if seq > self.max_seen {
            if seq > self.max_seen + 1 {
                self.missing.push((self.max_seen + 1, seq));
            }
            self.max_seen = seq;
            self.unique += 1;
            return;
        }
        // Below the high-water mark: a late arrival fills a hole, anything
        // else was seen before.
        match self.missing.binary_search_by(|&(from, to)| {
            if to <= seq {
                std::cmp::Ordering::Less
            } else if from > seq {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        }) {
            Ok(i) => {
                let (from, to) = self.missing[i];
                match (seq == from, seq + 1 == to) {
                    (true, true) => {
                        self.missing.remove(i);
                    }
                    (true, false) => self.missing[i].0 = seq + 1,
                    (false, true) => self.missing[i].1 = seq,
                    (false, false) => {
                        self.missing[i].1 = seq;
                        self.missing.insert(i + 1, (seq + 1, to));
                    }
                }
                self.unique += 1;
                self.out_of_order += 1;
            }
            Err(_) => self.duplicates += 1,
        }
    }

    /// A new connection epoch begins at `first_seq` (the first message seen
    /// after resubscribing): what was published in between is skipped, not lost.
    /// Messages lost right at the head of the new epoch cannot be told apart
    /// from the skip; README documents this.
    pub fn resume_at(&mut self, first_seq: u64) {
        if first_seq > self.max_seen + 1 {
            self.skipped += first_seq - self.max_seen - 1;
            self.max_seen = first_seq - 1;
        }
    }

    /// Messages expected but not received, given `published` messages on
    /// this persona in total (seqs `1..=published`).
    pub fn lost(&self, published: u64) -> u64 {
        published.saturating_sub(self.skipped + self.unique)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order() {
        let mut t = SeqTracker::default();
        (1..=100).for_each(|s| t.record(s));
        assert_eq!(
            (t.unique, t.duplicates, t.out_of_order, t.lost(100)),
            (100, 0, 0, 0)
        );
        assert_eq!(t.lost(110), 10);
    }

    #[test]
    fn gaps_late_and_duplicates() {
        let mut t = SeqTracker::default();
        for s in [1, 2, 5, 3, 3, 9, 7, 2, 4] {
            t.record(s);
        }
        // Seen: 1 2 3 4 5 7 9; late: 3 7 4; dups: 3 2.
        assert_eq!(t.unique, 7);
        assert_eq!(t.out_of_order, 3);
        assert_eq!(t.duplicates, 2);
        assert_eq!(t.lost(10), 3); // 6, 8, 10
        assert_eq!(t.missing, vec![(6, 7), (8, 9)]);
    }

    #[test]
    fn reconnect_skips() {
        let mut t = SeqTracker::default();
        (1..=10).for_each(|s| t.record(s));
        t.resume_at(21);
        (21..=30).for_each(|s| t.record(s));
        assert_eq!((t.skipped, t.lost(30), t.out_of_order), (10, 0, 0));
        // A replayed older message after a reconnect is a duplicate.
        t.record(5);
        assert_eq!(t.duplicates, 1);
    }
}
