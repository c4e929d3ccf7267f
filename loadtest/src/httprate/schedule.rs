//! The schedule of `http-rate`: which request is due when, on which
//! connection; and the duration syntax of its flags.

use std::time::Duration;

/// Parses `10s`, `500ms`, `2m`, `1.5s`, `750us`; a bare number is seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let s = raw.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{raw}`: a number with an optional unit (us, ms, s, m) expected"))?;
    let secs = match unit.trim() {
        "" | "s" => v,
        "ms" => v / 1e3,
        "us" | "µs" => v / 1e6,
        "m" | "min" => v * 60.0,
        other => return Err(format!("`{raw}`: unknown unit `{other}` (us, ms, s, m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{raw}`: {e}"))
}

/// Which request goes when, on which connection.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    rate: f64,
    connections: u64,
    /// Requests in the warmup (the first ones, not measured).
    pub warmup: u64,
    /// All requests, warmup included.
    pub total: u64,
}

impl Schedule {
    pub fn new(rate: f64, connections: u32, warmup: Duration, duration: Duration) -> Self {
        let warm = (warmup.as_secs_f64() * rate).round() as u64;
        Self {
            rate,
            connections: connections.max(1) as u64,
            warmup: warm,
            total: warm + (duration.as_secs_f64() * rate).round() as u64,
        }
    }

    /// When request `n` is due, after the start.
    pub fn due(&self, n: u64) -> Duration {
        Duration::from_nanos((n as f64 * 1e9 / self.rate).round() as u64)
    }

    pub fn connection_of(&self, n: u64) -> usize {
        (n % self.connections) as usize
    }

    /// How many requests connection `c` sends.
    pub fn count_for(&self, c: usize) -> u64 {
        let c = c as u64;
        self.total / self.connections + u64::from(c < self.total % self.connections)
    }

    /// The request number of connection `c`'s `k`-th request.
    pub fn nth(&self, c: usize, k: u64) -> u64 {
        k * self.connections + c as u64
    }

    pub fn measured(&self, n: u64) -> bool {
        n >= self.warmup
    }

    /// When the last request is due (the end of the schedule).
    pub fn end(&self) -> Duration {
        self.due(self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert!(parse_duration("10h").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn schedule_spreads_the_rate_over_connections() {
        let s = Schedule::new(1_000.0, 8, Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!((s.warmup, s.total), (1_000, 11_000));
        assert_eq!(s.end(), Duration::from_secs(11));
        // Globally one request every 1 ms.
        assert_eq!(s.due(1), Duration::from_millis(1));
        assert_eq!(s.due(10_999), Duration::from_millis(10_999));
        // Connection 3: every 8 ms, offset 3 ms.
        for k in 0..5 {
            let n = s.nth(3, k);
            assert_eq!(s.connection_of(n), 3);
            assert_eq!(s.due(n), Duration::from_millis(3 + 8 * k));
        }
        // Every request is on exactly one connection.
        let sum: u64 = (0..8).map(|c| s.count_for(c)).sum();
        assert_eq!(sum, s.total);
        assert!(!s.measured(999) && s.measured(1_000));
        assert_eq!(s.due(s.warmup), Duration::from_secs(1));
    }

    #[test]
    fn uneven_schedules() {
        // 10 requests over 3 connections: 4, 3, 3; the last is number 9.
        let s = Schedule::new(4.0, 3, Duration::ZERO, Duration::from_millis(2_500));
        assert_eq!(s.total, 10);
        assert_eq!((s.count_for(0), s.count_for(1), s.count_for(2)), (4, 3, 3));
        assert_eq!(s.nth(0, 3), 9);
        assert_eq!(s.due(9), Duration::from_millis(2_250));
        assert_eq!(s.nth(2, 2), 8);
        // A non-integral interval: 3 req/s.
        let s = Schedule::new(3.0, 1, Duration::ZERO, Duration::from_secs(1));
        assert_eq!(s.due(1), Duration::from_nanos(333_333_333));
        assert_eq!(s.due(2), Duration::from_nanos(666_666_667));
    }
}
