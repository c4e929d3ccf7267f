//! The rolling-restart report: one struct, a table for people, JSON for
//! machines.

use serde::Serialize;

use super::pool::{ClientVerdict, PoolResult};
use super::redis::ReconnectCost;
use crate::publisher::PubReport;
use crate::report::{us, Percentiles, Table};
use crate::scenario::Plan;

/// What the restart command did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RestartRun {
    pub command: Option<String>,
    /// Exit status; `None` when there was no command, or it was killed.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// Seconds into publishing when it started, and how long it ran.
    pub started_at_s: f64,
    pub duration_s: f64,
    /// Its output, each line with the seconds since it started.
    pub lines: Vec<(f64, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub label: Option<String>,
    pub scenario: String,
    pub plan: Plan,
    pub publish: PubReport,
    pub restart: RestartRun,
    /// Stream entries of all the run's channels at the end (`XRANGE`).
    pub stream_entries: u64,
    pub clients: u64,
    /// Clients that got a first snapshot: the ones judged.
    pub started: u64,
    pub connected_at_end: u64,
    pub delivery: super::ledger::Verdict,
    pub clients_missed: u64,
    pub clients_late: u64,
    pub clients_unrecovered: u64,
    pub clients_duplicates: u64,
    pub clients_out_of_order: u64,
    pub worst_missed: u64,
    pub clients_moved: u64,
    pub reconnects: u64,
    pub hinted_closes: u64,
    pub refused_resumes: u64,
    pub eof: u64,
    pub connect_failures: u64,
    pub errors: u64,
    pub close_codes: std::collections::BTreeMap<u16, u64>,
    pub connect_phase_s: f64,
    pub drain_s: f64,
    /// Connect + upgrade of each client's first connection, µs.
    pub first_connect_us: Percentiles,
    /// Close received (or connection lost) → upgraded again, µs.
    pub reconnect_us: Percentiles,
    /// The wait before reconnecting (hint + jitter, or backoff), µs.
    pub wait_us: Percentiles,
    /// The end of that wait → upgraded again (failed connects included), µs.
    pub after_wait_us: Percentiles,
    /// Live deliveries while the restart ran: the clients not being moved.
    pub latency_restarting_us: Percentiles,
    /// Live deliveries outside the restart.
    pub latency_steady_us: Percentiles,
    /// Events delivered by a resume's replay.
    pub latency_replayed_us: Percentiles,
    pub redis: Option<ReconnectCost>,
    /// `redis.excess_total / reconnects`.
    pub redis_commands_per_reconnect: Option<f64>,
    pub client: crate::procstat::ProcSample,
    /// The first clients whose delivery was not clean.
    pub anomalies: Vec<ClientVerdict>,
    pub error_samples: Vec<String>,
}

/// The figures of a merged pool result, read into the report.
pub struct Hists {
    pub first_connect: Percentiles,
    pub reconnect: Percentiles,
    pub wait: Percentiles,
    pub after_wait: Percentiles,
    pub restarting: Percentiles,
    pub steady: Percentiles,
    pub replayed: Percentiles,
}

impl Hists {
    pub fn of(r: &PoolResult) -> anyhow::Result<Self> {
        let p = |s: &str| -> anyhow::Result<Percentiles> {
            Ok(if s.is_empty() {
                Percentiles::default()
            } else {
                Percentiles::of(&crate::histo::decode(s)?)
            })
        };
        Ok(Self {
            first_connect: p(&r.first_connect)?,
            reconnect: p(&r.reconnect)?,
            wait: p(&r.wait)?,
            after_wait: p(&r.after_wait)?,
            restarting: p(&r.latency_restarting)?,
            steady: p(&r.latency_steady)?,
            replayed: p(&r.latency_replayed)?,
        })
    }
}

impl Report {
    pub fn table(&self) -> String {
        let mut t = Table::default();
        let p = &self.plan;
        t.section("load");
        t.row(
            "scenario",
            format!(
                "{} ({:?} through {}, publish {:?})",
                self.scenario, p.mode, p.target, p.publish
            ),
        );
        if let Some(l) = &self.label {
            t.row("label", l.clone());
        }
        t.row(
            "clients",
            format!(
                "{} over {} persona(s), {} worker process(es), {} source address(es)",
                p.subscribers,
                p.personas,
                p.workers,
                p.sources.len().max(1)
            ),
        );
        let pb = &self.publish;
        t.row(
            "published",
            format!(
                "{} at {} events/s in {:.1} s (errors {}, publisher lag p99 {} max {})",
                pb.sent,
                p.rate,
                pb.elapsed_s,
                pb.errors,
                us(pb.lag_p99_us),
                us(pb.lag_max_us)
            ),
        );
        let r = &self.restart;
        t.section("restart");
        t.row(
            "command",
            r.command
                .clone()
                .unwrap_or_else(|| "(none: by hand)".into()),
        );
        t.row(
            "ran",
            format!(
                "from {:.1} s into publishing for {:.1} s, {}",
                r.started_at_s,
                r.duration_s,
                match (r.exit_code, r.timed_out) {
                    (_, true) => "killed at its timeout".to_string(),
                    (Some(c), _) => format!("exit {c}"),
                    (None, _) => "no exit status".to_string(),
                }
            ),
        );
        for (at, line) in r.lines.iter().filter(|(_, l)| l.starts_with('[')) {
            t.row(&format!("  +{at:.1} s"), line.clone());
        }
        let d = &self.delivery;
        t.section("delivery by offset, against the streams (XRANGE)");
        t.row(
            "clients judged",
            format!(
                "{} of {} (connected at the end {}); stream entries {}",
                self.started, self.clients, self.connected_at_end, self.stream_entries
            ),
        );
        t.row(
            "owed / received",
            format!(
                "{} / {} ({:.4}%)",
                d.owed,
                d.received,
                if d.owed > 0 {
                    100.0 * d.received as f64 / d.owed as f64
                } else {
                    100.0
                }
            ),
        );
        t.row(
            "missed",
            format!(
                "{} (clients {}, worst {})",
                d.missed, self.clients_missed, self.worst_missed
            ),
        );
        t.row(
            "not arrived by the end",
            format!("{} (clients {})", d.late, self.clients_late),
        );
        t.row(
            "lost to refused resumes",
            format!(
                "{} (clients {}, refused resumes {})",
                d.unrecovered, self.clients_unrecovered, self.refused_resumes
            ),
        );
        t.row(
            "duplicated",
            format!("{} (clients {})", d.duplicates, self.clients_duplicates),
        );
        t.row(
            "out of order",
            format!("{} (clients {})", d.out_of_order, self.clients_out_of_order),
        );
        if d.foreign > 0 {
            t.row("not in the stream", d.foreign.to_string());
        }
        t.section("reconnects");
        t.row(
            "reconnects",
            format!(
                "{} ({} clients moved; drain {:.1} s)",
                self.reconnects, self.clients_moved, self.drain_s
            ),
        );
        t.row("closes by code", self.closes());
        t.row(
            "with a reconnect_ms hint",
            format!(
                "{} (connect failures {}, errors {})",
                self.hinted_closes, self.connect_failures, self.errors
            ),
        );
        let (c, w) = (&self.reconnect_us, &self.wait_us);
        t.row(
            "reconnect p50/p99/max",
            format!("{} / {} / {}", us(c.p50), us(c.p99), us(c.max)),
        );
        t.row(
            "  of it waiting p50/p99/max",
            format!("{} / {} / {}", us(w.p50), us(w.p99), us(w.max)),
        );
        let a = &self.after_wait_us;
        t.row(
            "  after the wait p50/p99/max",
            format!("{} / {} / {}", us(a.p50), us(a.p99), us(a.max)),
        );
        let f = &self.first_connect_us;
        t.row(
            "first connect p50/p99/max",
            format!(
                "{} / {} / {} (phase {:.1} s)",
                us(f.p50),
                us(f.p99),
                us(f.max),
                self.connect_phase_s
            ),
        );
        t.section("redis");
        match (&self.redis, self.redis_commands_per_reconnect) {
            (Some(cost), per) => {
                t.row(
                    "commands per reconnect",
                    format!(
                        "{} ({:.0} above the baseline in {:.1} s, baseline {:.1} s)",
                        per.map_or("-".into(), |v| format!("{v:.2}")),
                        cost.excess_total,
                        cost.window_s,
                        cost.baseline_s
                    ),
                );
                let top: Vec<String> = cost
                    .top(8)
                    .into_iter()
                    .map(|(name, n)| match self.reconnects {
                        0 => format!("{name} {n:.0}"),
                        r => format!("{name} {:.2}", n / r as f64),
                    })
                    .collect();
                t.row("  by command", top.join(", "));
            }
            (None, _) => t.row("commands per reconnect", "- (INFO failed)".into()),
        }
        t.section("delivery latency (ms resolution)");
        for (name, l) in [
            ("not moved, during restart", &self.latency_restarting_us),
            ("steady, outside restart", &self.latency_steady_us),
            ("replayed on resume", &self.latency_replayed_us),
        ] {
            t.row(
                name,
                format!(
                    "p50 {} p99 {} max {} ({} deliveries)",
                    us(l.p50),
                    us(l.p99),
                    us(l.max),
                    l.count
                ),
            );
        }
        t.section("client");
        t.row(
            "CPU seconds / peak RSS",
            format!(
                "{:.2} / {:.1} MiB",
                self.client.cpu_s,
                self.client.hwm_kb as f64 / 1024.0
            ),
        );
        for a in self.anomalies.iter().take(5) {
            let v = &a.verdict;
            t.row(
                "anomaly",
                format!(
                    "client {} ({}): owed {} missed {} late {} refused {} dup {} ooo {}, reconnects {}",
                    a.client,
                    a.persona,
                    v.owed,
                    v.missed,
                    v.late,
                    v.unrecovered,
                    v.duplicates,
                    v.out_of_order,
                    a.reconnects
                ),
            );
        }
        for e in &self.error_samples {
            t.row("error sample", e.clone());
        }
        t.render()
    }

    fn closes(&self) -> String {
        let mut s: Vec<String> = self
            .close_codes
            .iter()
            .map(|(c, n)| format!("{c}: {n}"))
            .collect();
        if self.eof > 0 {
            s.push(format!("EOF: {}", self.eof));
        }
        if s.is_empty() {
            "none".into()
        } else {
            s.join(", ")
        }
    }
}
