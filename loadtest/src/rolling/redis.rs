//! What the scenario asks Redis itself: `INFO commandstats` (the cost of
//! the reconnects) and the channels' stream ids (the truth the clients are
//! judged against), over the harness's own RESP connection.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use serde::Serialize;

use super::ledger;
use crate::resp::{self, Reply};

/// Calls per command (`cmdstat_<name>:calls=N,...`), e.g. `xrange` → 1234.
pub type CommandStats = BTreeMap<String, u64>;

pub struct Redis {
    r: resp::Reader,
    w: resp::Writer,
}

impl Redis {
    pub async fn connect(url: &str, allow_remote: bool) -> anyhow::Result<Self> {
        let (r, w) = resp::connect(url, allow_remote).await?;
        Ok(Self { r, w })
    }

    pub async fn commandstats(&mut self) -> anyhow::Result<CommandStats> {
        match resp::call(&mut self.r, &mut self.w, &[b"INFO", b"commandstats"]).await? {
            Reply::Bulk(Some(text)) => Ok(parse_commandstats(&String::from_utf8_lossy(&text))),
            other => bail!("INFO commandstats answered {other:?}"),
        }
    }

    /// The newest id of the stream `key` (packed), 0 when it is empty.
    pub async fn last_id(&mut self, key: &str) -> anyhow::Result<u64> {
        let args: [&[u8]; 6] = [b"XREVRANGE", key.as_bytes(), b"+", b"-", b"COUNT", b"1"];
        match resp::call(&mut self.r, &mut self.w, &args).await? {
            Reply::Array(Some(entries)) => match entries.first() {
                Some(Reply::Array(Some(parts))) => match parts.first() {
                    Some(Reply::Bulk(Some(id))) => {
                        ledger::parse(id).with_context(|| format!("XREVRANGE {key}: id {id:?}"))
                    }
                    _ => bail!("XREVRANGE {key}: an entry without an id"),
                },
                _ => Ok(0),
            },
            Reply::Error(e) => bail!("XREVRANGE {key}: {e}"),
            other => bail!("XREVRANGE {key} answered {other:?}"),
        }
    }

    /// Every id of the stream `key`, ascending, packed (`ledger::pack`).
    pub async fn stream_ids(&mut self, key: &str) -> anyhow::Result<Vec<u64>> {
        const PAGE: &[u8] = b"1000";
        let mut ids = Vec::new();
        let mut from = "-".to_string();
        loop {
            let args: [&[u8]; 6] = [
                b"XRANGE",
                key.as_bytes(),
                from.as_bytes(),
                b"+",
                b"COUNT",
                PAGE,
            ];
            let entries = match resp::call(&mut self.r, &mut self.w, &args).await? {
                Reply::Array(Some(entries)) => entries,
                Reply::Array(None) => Vec::new(),
                Reply::Error(e) => bail!("XRANGE {key}: {e}"),
                other => bail!("XRANGE {key} answered {other:?}"),
            };
            let n = entries.len();
            let mut last = None;
            for e in entries {
                let Reply::Array(Some(mut parts)) = e else {
                    bail!("XRANGE {key}: an entry that is not an array");
                };
                let Some(Reply::Bulk(Some(id))) = parts.drain(..).next() else {
                    bail!("XRANGE {key}: an entry without an id");
                };
                ids.push(ledger::parse(&id).with_context(|| {
                    format!("XRANGE {key}: id {}", String::from_utf8_lossy(&id))
                })?);
                last = Some(id);
            }
            match last {
                Some(id) if n == 1000 => from = format!("({}", String::from_utf8_lossy(&id)),
                _ => return Ok(ids),
            }
        }
    }
}

fn parse_commandstats(text: &str) -> CommandStats {
    let mut out = CommandStats::new();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((name, fields)) = rest.split_once(':') else {
            continue;
        };
        let calls = fields
            .split(',')
            .find_map(|f| f.strip_prefix("calls="))
            .and_then(|n| n.parse().ok());
        if let Some(calls) = calls {
            out.insert(name.to_string(), calls);
        }
    }
    out
}

/// Commands the reconnects cost: the calls of the restart window less what
/// the steady state (the baseline window, scaled to the same length) makes.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ReconnectCost {
    /// Seconds of the baseline window (publishing, nothing restarting).
    pub baseline_s: f64,
    /// Seconds of the restart window (restart command to end of publishing).
    pub window_s: f64,
    /// Calls in the window above the baseline's rate, per command (> 0 only).
    pub excess: BTreeMap<String, f64>,
    /// Sum of `excess`.
    pub excess_total: f64,
    /// Calls of every command during the window.
    pub window_total: u64,
}

impl ReconnectCost {
    /// `t0` at the start of publishing, `t1` when the restart began, `t2`
    /// at the end of the window.
    pub fn between(
        t0: &CommandStats,
        t1: &CommandStats,
        t2: &CommandStats,
        baseline_s: f64,
        window_s: f64,
    ) -> Self {
        let delta = |a: &CommandStats, b: &CommandStats, name: &str| -> u64 {
            b.get(name)
                .copied()
                .unwrap_or(0)
                .saturating_sub(a.get(name).copied().unwrap_or(0))
        };
        let scale = if baseline_s > 0.0 {
            window_s / baseline_s
        } else {
            0.0
        };
        let mut cost = Self {
            baseline_s,
            window_s,
            ..Self::default()
        };
        for name in t2.keys() {
            let window = delta(t1, t2, name);
            cost.window_total += window;
            let excess = window as f64 - delta(t0, t1, name) as f64 * scale;
            if excess >= 0.5 {
                cost.excess.insert(name.clone(), excess);
                cost.excess_total += excess;
            }
        }
        cost
    }

    /// The commands that cost the most, largest first.
    pub fn top(&self, n: usize) -> Vec<(&str, f64)> {
        let mut v: Vec<(&str, f64)> = self.excess.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v.truncate(n);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Commandstats\r\n\
        cmdstat_fcall:calls=1000,usec=9000,usec_per_call=9.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_xrange:calls=12,usec=60,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_client|setname:calls=3,usec=1,usec_per_call=0.33,rejected_calls=0,failed_calls=0\r\n";

    #[test]
    fn reads_commandstats() {
        let s = parse_commandstats(INFO);
        assert_eq!(s["fcall"], 1000);
        assert_eq!(s["xrange"], 12);
        assert_eq!(s["client|setname"], 3);
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn the_steady_rate_is_taken_off() {
        let at = |fcall: u64, xrange: u64| -> CommandStats {
            [("fcall".to_string(), fcall), ("xrange".to_string(), xrange)].into()
        };
        // 100 fcall/s in a 5 s baseline; 10 s window with 1,000 fcall and 300 xrange.
        let cost = ReconnectCost::between(&at(0, 0), &at(500, 0), &at(1_500, 300), 5.0, 10.0);
        assert_eq!(cost.window_total, 1_300);
        assert_eq!(cost.excess.get("fcall"), None);
        assert_eq!(cost.excess["xrange"], 300.0);
        assert_eq!(cost.top(1), vec![("xrange", 300.0)]);
    }
}
