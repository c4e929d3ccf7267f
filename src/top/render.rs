//! What `pulsegate top` draws: the newest sample's figures, each rate with
//! a sparkline of the last samples. Pure text, so it is tested here; the
//! ANSI control sequences are `mod.rs`'s.

use std::collections::VecDeque;
use std::fmt::Write as _;

use serde_json::Value;

/// Samples kept for the sparklines (a minute at the default interval).
pub const HISTORY: usize = 60;
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The series drawn as sparklines, by field.
const SERIES: [&str; 5] = [
    "cpu_percent",
    "memory_mb",
    "messages_in_per_s",
    "deliveries_per_s",
    "outbox_depth_max",
];

#[derive(Default)]
pub struct View {
    latest: Option<Value>,
    timestamp: String,
    history: VecDeque<[f64; SERIES.len()]>,
}

impl View {
    /// Takes a `{"type":"runtime",...}` message; false when it is not one.
    pub fn update(&mut self, msg: &Value) -> bool {
        let Some(data) = msg.get("data").filter(|d| d.is_object()) else {
            return false;
        };
        let point = SERIES.map(|k| num(data, k).unwrap_or(0.0));
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(point);
        self.timestamp = msg
            .get("timestamp")
            .and_then(Value::as_str)
            .unwrap_or("")
            .chars()
            .take(40)
            .collect();
        self.latest = Some(data.clone());
        true
    }

    /// The screen, one figure a line.
    pub fn render(&self, url: &str) -> String {
        let mut out = format!("pulsegate top · {url}\n");
        let Some(d) = &self.latest else {
            out.push_str("\nwaiting for the first sample…\n\nCtrl-C quits\n");
            return out;
        };
        let _ = writeln!(out, "sample at {}\n", self.timestamp);
        let line = |out: &mut String, label: &str, value: String, series: Option<usize>| {
            let spark = series.map(|i| self.spark(i)).unwrap_or_default();
            let _ = writeln!(out, "  {label:<18} {value:>16}  {spark}");
        };
        line(
            &mut out,
            "CPU",
            format!("{} %", fixed(d, "cpu_percent", 1)),
            Some(0),
        );
        line(
            &mut out,
            "Memory",
            format!("{} MB", fixed(d, "memory_mb", 1)),
            Some(1),
        );
        line(
            &mut out,
            "Memory of machine",
            format!("{} %", fixed(d, "memory_percent", 2)),
            None,
        );
        line(&mut out, "Threads", fixed(d, "thread_count", 0), None);
        line(&mut out, "Connections", fixed(d, "connections", 0), None);
        line(
            &mut out,
            "Subscriptions",
            fixed(d, "subscriptions", 0),
            None,
        );
        line(
            &mut out,
            "Messages in",
            format!("{} /s", fixed(d, "messages_in_per_s", 1)),
            Some(2),
        );
        line(
            &mut out,
            "Deliveries",
            format!("{} /s", fixed(d, "deliveries_per_s", 1)),
            Some(3),
        );
        line(
            &mut out,
            "Outbox depth max",
            fixed(d, "outbox_depth_max", 0),
            Some(4),
        );
        line(
            &mut out,
            "Outbox depth mean",
            fixed(d, "outbox_depth_mean", 2),
            None,
        );
        line(
            &mut out,
            "Slow disconnects",
            fixed(d, "slow_disconnects", 0),
            None,
        );
        line(
            &mut out,
            "Rate limited",
            format!("{} /s", fixed(d, "rate_limited_per_s", 1)),
            None,
        );
        line(
            &mut out,
            "Errors",
            format!("{} /s", fixed(d, "errors_per_s", 1)),
            None,
        );
        line(&mut out, "Redis", text(d, "redis"), None);
        line(&mut out, "Postgres", text(d, "postgres"), None);
        let lag = match num(d, "audit_lag_seconds") {
            Some(v) => format!("{v:.1} s"),
            None => "—".into(),
        };
        line(&mut out, "Audit lag", lag, None);
        out.push_str("\nCtrl-C quits\n");
        out
    }

    /// The last samples of series `i`, scaled to their own maximum.
    fn spark(&self, i: usize) -> String {
        let max = self.history.iter().map(|p| p[i]).fold(0.0, f64::max);
        self.history
            .iter()
            .map(|p| {
                if max <= 0.0 {
                    BARS[0]
                } else {
                    let level = (p[i] / max * (BARS.len() - 1) as f64).round() as usize;
                    BARS[level.min(BARS.len() - 1)]
                }
            })
            .collect()
    }
}

fn num(d: &Value, k: &str) -> Option<f64> {
    d.get(k).and_then(Value::as_f64)
}

fn fixed(d: &Value, k: &str, decimals: usize) -> String {
    match num(d, k) {
        Some(v) => format!("{v:.decimals$}"),
        None => "—".into(),
    }
}

fn text(d: &Value, k: &str) -> String {
    d.get(k)
        .and_then(Value::as_str)
        .map(|s| s.chars().take(16).collect())
        .unwrap_or_else(|| "—".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn draws_every_figure_and_sparklines() {
        let mut v = View::default();
        assert!(v
            .render("http://x")
            .contains("waiting for the first sample"));
        assert!(!v.update(&json!({"type":"runtime"})));
        for cpu in [1.0, 2.0, 4.0] {
            let msg = json!({"type":"runtime","timestamp":"2026-12-06T12:00:00.000Z","data":{
                "cpu_percent": cpu, "memory_mb": 40.25, "memory_percent": 0.5, "thread_count": 9,
                "connections": 3, "subscriptions": 4, "messages_in_per_s": 10.0,
                "deliveries_per_s": 30.0, "outbox_depth_max": 2, "outbox_depth_mean": 0.25,
                "slow_disconnects": 0, "rate_limited_per_s": 0.0, "errors_per_s": 0.5,
                "redis": "up", "postgres": "off", "audit_lag_seconds": null}});
            assert!(v.update(&msg));
        }
        let screen = v.render("http://x");
        for want in [
            "CPU",
            "4.0 %",
            "40.2 MB",
            "Connections",
            "Deliveries",
            "30.0 /s",
            "Postgres",
            "off",
            "Audit lag",
            "▃▅█",
        ] {
            assert!(screen.contains(want), "{want} missing from\n{screen}");
        }
    }
}
