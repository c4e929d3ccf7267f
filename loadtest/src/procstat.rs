//! CPU time and memory of a process, from `/proc/<pid>/stat` and `/proc/<pid>/status`.

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Linux's USER_HZ: the unit of utime/stime in `/proc/<pid>/stat`.
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub struct ProcSample {
    /// User + system CPU seconds since the process started.
    pub cpu_s: f64,
    pub rss_kb: u64,
    /// Peak resident set size (VmHWM).
    pub hwm_kb: u64,
}

impl ProcSample {
    pub fn add(&mut self, o: &Self) {
        self.cpu_s += o.cpu_s;
        self.rss_kb += o.rss_kb;
        self.hwm_kb += o.hwm_kb;
    }
}

pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat (is the pid right?)"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').context("malformed stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line: 12 and 13 here (0-based 11, 12).
    let utime: f64 = fields.get(11).context("utime")?.parse()?;
    let stime: f64 = fields.get(12).context("stime")?.parse()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample {
        cpu_s: (utime + stime) / TICKS_PER_SECOND,
        rss_kb: kb("VmRSS:"),
        hwm_kb: kb("VmHWM:"),
    })
}

/// The sum over several processes (e.g. nginx's master and workers).
pub fn sample_all(pids: &[u32]) -> anyhow::Result<ProcSample> {
    let mut total = ProcSample::default();
    for &pid in pids {
        total.add(&sample(pid)?);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    #[test]
    fn samples_self() {
        let s = super::sample(std::process::id()).unwrap();
        assert!(s.rss_kb > 0 && s.hwm_kb >= s.rss_kb);
    }
}
