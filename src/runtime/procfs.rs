//! The process's own figures from `/proc` (Linux): CPU time, resident
//! memory and threads from one read of `/proc/self/stat`, the machine's
//! memory from `/proc/meminfo`. Read by hand: two small files, a handful
//! of fields, parsed with tests below; `rustix::param` supplies the two
//! kernel constants (clock ticks, page size) without `unsafe`. The reads
//! are of kernel-generated files and never block on a disk.

use std::io;

/// One reading of the process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Process {
    /// User + system CPU time since the process started, in seconds.
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub threads: u64,
}

/// Reads `/proc/self/stat`.
pub fn process() -> io::Result<Process> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    parse_stat(
        &stat,
        rustix::param::clock_ticks_per_second(),
        rustix::param::page_size() as u64,
    )
    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/self/stat"))
}

/// The machine's memory (`MemTotal` of `/proc/meminfo`), in bytes.
pub fn mem_total() -> io::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    parse_meminfo(&meminfo)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no MemTotal in /proc/meminfo"))
}

/// `proc(5)`: fields after the command name, which is in parentheses and
/// may itself hold spaces and parentheses, hence the split at the last `)`.
/// Counted from `state` (field 3): utime 14, stime 15, num_threads 20,
/// rss 24 (pages).
fn parse_stat(stat: &str, ticks_per_second: u64, page_size: u64) -> Option<Process> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let ticks = field(14)? + field(15)?;
    Some(Process {
        cpu_seconds: ticks as f64 / ticks_per_second.max(1) as f64,
        rss_bytes: field(24)?.saturating_mul(page_size),
        threads: field(20)?,
    })
}

fn parse_meminfo(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_stat_line_whose_name_has_spaces_and_parentheses() {
        let line = "4242 (pulse gate (x)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 50 0 0 20 0 7 0 123456 987654321 3000 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 17479 0 0 0 17 1 0 0 0 0 0";
        let p = parse_stat(line, 100, 4096).unwrap();
        assert_eq!(p.cpu_seconds, 3.0);
        assert_eq!(p.threads, 7);
        assert_eq!(p.rss_bytes, 3000 * 4096);
        assert_eq!(parse_stat("4242 (x) S 1 2", 100, 4096), None);
        assert_eq!(parse_stat("garbage", 100, 4096), None);
    }

    #[test]
    fn reads_meminfo() {
        let m = "MemTotal:        8046600 kB\nMemFree:          123 kB\n";
        assert_eq!(parse_meminfo(m), Some(8_046_600 * 1024));
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let p = process().unwrap();
        assert!(p.threads >= 1 && p.rss_bytes > 0, "{p:?}");
        assert!(mem_total().unwrap() > p.rss_bytes);
    }
}
