//! A sorted set with a key expiry, as much of Redis' ZSET as the functions
//! library uses on the keys the rebuild replays (`lua/pulse.lua`).

use std::collections::HashMap;

#[derive(Debug, Default, Clone)]
pub struct ZSet {
    members: HashMap<String, i64>,
    /// Redis time (ms) after which the key is gone.
    expires_at: Option<i64>,
}

impl ZSet {
    /// The key as a command at time `t` finds it: gone once `t` is past its
    /// expiry (Redis deletes a key whose time is strictly past).
    pub fn at(&mut self, t: i64) -> &mut Self {
        if self.expires_at.is_some_and(|e| t > e) {
            *self = Self::default();
        }
        self
    }

    pub fn add(&mut self, member: &str, score: i64) {
        self.members.insert(member.to_owned(), score);
    }

    /// `ZADD GT`: a new member is added; an existing one only moves up.
    pub fn add_gt(&mut self, member: &str, score: i64) {
        let s = self.members.entry(member.to_owned()).or_insert(score);
        if score > *s {
            *s = score;
        }
    }

    pub fn rem(&mut self, member: &str) {
        self.members.remove(member);
        self.tidy();
    }

    /// `ZREMRANGEBYSCORE key -inf max` (inclusive); the members removed.
    pub fn rem_up_to(&mut self, max: i64) -> Vec<String> {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, &s)| s <= max)
            .map(|(m, _)| m.clone())
            .collect();
        for m in &gone {
            self.members.remove(m);
        }
        self.tidy();
        gone
    }

    /// `PEXPIRE key ttl` at time `t`; nothing on a key that does not exist.
    pub fn expire(&mut self, t: i64, ttl: i64) {
        if !self.members.is_empty() {
            self.expires_at = Some(t + ttl);
        }
    }

    /// `ZCOUNT key (lo hi`.
    pub fn count(&self, lo_exclusive: i64, hi: i64) -> u64 {
        self.members
            .values()
            .filter(|&&s| s > lo_exclusive && s <= hi)
            .count() as u64
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// `ZREVRANGE key 0 n-1 WITHSCORES`: highest score first, equal scores
    /// in reverse byte order of the member.
    pub fn rev_range(&self, n: usize) -> Vec<(String, i64)> {
        let mut all: Vec<(String, i64)> =
            self.members.iter().map(|(m, &s)| (m.clone(), s)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        all.truncate(n);
        all
    }

    /// `ZREMRANGEBYRANK key 0 -(n+1)`: keeps the `n` highest.
    pub fn keep_highest(&mut self, n: usize) {
        if self.members.len() > n {
            self.members = self.rev_range(n).into_iter().collect();
        }
    }

    /// Members with a score above `lo`.
    pub fn above(&self, lo_exclusive: i64) -> impl Iterator<Item = &str> {
        self.members
            .iter()
            .filter(move |(_, &s)| s > lo_exclusive)
            .map(|(m, _)| m.as_str())
    }

    /// An emptied key is deleted in Redis, its expiry with it.
    fn tidy(&mut self) {
        if self.members.is_empty() {
            self.expires_at = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ZSet;

    #[test]
    fn behaves_like_the_redis_commands_it_stands_for() {
        let mut z = ZSet::default();
        z.add("b", 5);
        z.add("a", 5);
        z.add("c", 9);
        assert_eq!(z.rev_range(2), [("c".into(), 9), ("b".into(), 5)]);
        z.add_gt("c", 3);
        z.add_gt("a", 7);
        assert_eq!(z.count(5, 9), 2);
        z.keep_highest(2);
        assert_eq!(z.len(), 2);
        assert_eq!(z.rem_up_to(7), ["a".to_string()]);
        z.expire(100, 10);
        assert_eq!(z.at(110).len(), 1, "not yet past");
        assert!(z.at(111).is_empty(), "expired");
    }
}
