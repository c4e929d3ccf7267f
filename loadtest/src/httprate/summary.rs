//! What `http-rate` reports: counts per phase, percentiles in ms, the
//! table printed for people and the JSON for machines.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::histo::Hist;
use crate::report::{Percentiles, Table};

/// Counts for one phase (warmup or measured).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Tally {
    pub sent: u64,
    /// Complete responses by status class: "2xx", "4xx", …
    pub responses: BTreeMap<String, u64>,
    /// The same responses by exact status (e.g. 429).
    pub statuses: BTreeMap<u16, u64>,
    /// Requests without a complete response (connect, I/O, parse, timeout).
    pub errors: u64,
    /// Of the errors: the TCP connect failed (refused, reset, not answered in time).
    pub connect_errors: u64,
    /// Of the errors: connected, but the response did not complete in time.
    pub timeouts: u64,
    /// Complete responses after which the server closed the connection
    /// (`Connection: close`, HTTP/1.0); the next request reconnects.
    pub server_closes: u64,
    /// Still due when the run's deadline passed (the server fell far behind).
    pub not_sent: u64,
}

impl Tally {
    pub(super) fn add(&mut self, o: &Tally) {
        self.sent += o.sent;
        for (k, v) in &o.responses {
            *self.responses.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.statuses {
            *self.statuses.entry(*k).or_default() += v;
        }
        self.errors += o.errors;
        self.connect_errors += o.connect_errors;
        self.timeouts += o.timeouts;
        self.server_closes += o.server_closes;
        self.not_sent += o.not_sent;
    }

    pub(super) fn answered(&self) -> u64 {
        self.responses.values().sum()
    }
}

pub(super) fn class(status: u16) -> String {
    match status {
        100..=599 => format!("{}xx", status / 100),
        _ => "other".into(),
    }
}

/// Percentiles in milliseconds.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Millis {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Millis {
    pub(super) fn of(h: &Hist) -> Self {
        let p = Percentiles::of(h);
        let ms = |us: u64| us as f64 / 1e3;
        Self {
            count: p.count,
            p50: ms(p.p50),
            p90: ms(p.p90),
            p99: ms(p.p99),
            p999: ms(p.p999),
            max: ms(p.max),
            mean: p.mean / 1e3,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpRateReport {
    pub url: String,
    pub rate: f64,
    pub connections: u32,
    /// A new TCP connection per request (`--fresh-connections`).
    pub fresh_connections: bool,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub timeout_s: f64,
    /// The measured phase.
    pub measured: Tally,
    pub warmup: Tally,
    /// Completed measured responses / (last of them − start of measuring).
    pub achieved_rps: f64,
    /// TCP connections opened, the initial ones included.
    pub connects: u64,
    /// Scheduled send → end of the response body (all statuses; errors excluded).
    pub latency_ms: Millis,
    /// Request written → end of the body (no queueing behind the previous request).
    pub service_ms: Millis,
    /// How late the pacer thread woke for each due time (the harness's own jitter).
    pub pacer_lag_ms: Millis,
    pub error_samples: Vec<String>,
}

impl HttpRateReport {
    pub fn table(&self) -> String {
        let mut t = Table::default();
        let m = &self.measured;
        t.section("http-rate");
        t.row("target", format!("GET {}", self.url));
        t.row(
            "schedule",
            format!(
                "{} req/s over {} for {} s (+{} s warmup), timeout {} s",
                self.rate,
                if self.fresh_connections {
                    format!("{} slot(s), a new connection each", self.connections)
                } else {
                    format!("{} connection(s)", self.connections)
                },
                self.duration_s,
                self.warmup_s,
                self.timeout_s
            ),
        );
        t.row(
            "sent",
            format!(
                "{} (not sent before the deadline {}; warmup: {} sent, {} errors)",
                m.sent, m.not_sent, self.warmup.sent, self.warmup.errors
            ),
        );
        let classes: Vec<String> = m
            .responses
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let codes: Vec<String> = m
            .statuses
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        t.row(
            "responses",
            if classes.is_empty() {
                "none".into()
            } else {
                format!("{} ({})", classes.join(", "), codes.join(", "))
            },
        );
        t.row(
            "errors",
            format!(
                "{} (connect {}, timeouts {}); server closes {}; connections opened (whole run) {}",
                m.errors, m.connect_errors, m.timeouts, m.server_closes, self.connects
            ),
        );
        t.row(
            "achieved rate",
            format!("{:.1} responses/s", self.achieved_rps),
        );
        let l = &self.latency_ms;
        t.section(if self.fresh_connections {
            "latency (scheduled send → end of body, connect included)"
        } else {
            "latency (scheduled send → end of body)"
        });
        t.row(
            "p50 / p90 / p99",
            format!("{} / {} / {} ms", ms(l.p50), ms(l.p90), ms(l.p99)),
        );
        t.row("p99.9 / max", format!("{} / {} ms", ms(l.p999), ms(l.max)));
        t.row("mean / samples", format!("{} ms / {}", ms(l.mean), l.count));
        let (s, p) = (&self.service_ms, &self.pacer_lag_ms);
        t.row(
            "service p50/p99/max",
            format!(
                "{} / {} / {} ms ({} → end of body)",
                ms(s.p50),
                ms(s.p99),
                ms(s.max),
                if self.fresh_connections {
                    "connect"
                } else {
                    "write"
                }
            ),
        );
        t.row(
            "pacer lag p99/max",
            format!(
                "{} / {} ms (the harness's own timer jitter)",
                ms(p.p99),
                ms(p.max)
            ),
        );
        if m.server_closes > 0 {
            t.row(
                "note",
                "the server closed connections after responses; reconnects are in the latency"
                    .into(),
            );
        }
        for e in &self.error_samples {
            t.row("error sample", e.clone());
        }
        t.render()
    }
}

fn ms(v: f64) -> String {
    format!("{v:.3}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_and_classes() {
        assert_eq!(class(204), "2xx");
        assert_eq!(class(503), "5xx");
        assert_eq!(class(0), "other");
        let mut a = Tally::default();
        a.responses.insert("2xx".into(), 3);
        a.statuses.insert(429, 1);
        let mut b = Tally {
            sent: 5,
            errors: 2,
            connect_errors: 1,
            ..Tally::default()
        };
        b.responses.insert("2xx".into(), 2);
        b.responses.insert("4xx".into(), 2);
        b.statuses.insert(429, 2);
        b.statuses.insert(200, 2);
        a.add(&b);
        assert_eq!(
            (a.sent, a.errors, a.connect_errors, a.answered()),
            (5, 2, 1, 7)
        );
        assert_eq!(a.statuses.get(&429), Some(&3));
    }
}
