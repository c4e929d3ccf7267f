//! The run's report: one struct, printed as a table for people and written
//! as JSON for machines.

use std::fmt::Write as _;

use serde::Serialize;

use crate::histo::Hist;
use crate::pool::GroupStats;
use crate::procstat::ProcSample;
use crate::publisher::PubReport;
use crate::scenario::Plan;

#[derive(Debug, Default, Clone, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(h: &Hist) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// The measured server (all given pids summed).
#[derive(Debug, Default, Clone, Serialize)]
pub struct ServerStats {
    pub pids: Vec<u32>,
    /// CPU seconds from the first publish to the end of the drain.
    pub cpu_s: f64,
    pub cpu_s_per_million_deliveries: Option<f64>,
    pub rss_before_connect_kb: u64,
    /// RSS with every subscriber connected, before publishing.
    pub rss_idle_kb: u64,
    pub rss_end_kb: u64,
    /// VmHWM at the end (peak since the process started).
    pub peak_rss_kb: u64,
    /// (idle RSS - RSS before connecting) / ready connections.
    pub idle_bytes_per_connection: Option<f64>,
    pub peak_bytes_per_connection: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub label: Option<String>,
    pub scenario: String,
    pub plan: Plan,
    pub publish: PubReport,
    /// Readers that read everything: delivery is judged on these.
    pub normal: GroupStats,
    pub slow: GroupStats,
    pub reconnect: GroupStats,
    /// Frames delivered to every subscriber, all groups.
    pub delivered: u64,
    pub deliveries_per_s: f64,
    /// normal.unique / normal.expected.
    pub delivery_ratio: f64,
    pub drain_s: f64,
    /// End-to-end latency of normal readers, microseconds.
    pub latency_us: Percentiles,
    /// TCP connect + upgrade, microseconds.
    pub connect_us: Percentiles,
    /// Upgrade done → subscribed (initial_data / subscribed / first probe).
    pub subscribe_us: Percentiles,
    pub reconnect_us: Percentiles,
    pub connect_phase_s: f64,
    pub gateway: Option<ServerStats>,
    pub redis_cpu_s: Option<f64>,
    /// The harness's own cost (all its processes).
    pub client: ProcSample,
    /// CPUs the harness may run on (its affinity).
    pub client_cores: usize,
    /// The harness's CPU while publishing and draining ÷ (that time ×
    /// `client_cores`): near 1, its own queueing is part of every latency
    /// it measures.
    pub client_busy: f64,
    pub error_samples: Vec<String>,
}

/// Past this share of its CPUs the harness's own queueing shows in latency.
pub const CLIENT_SATURATED: f64 = 0.8;

impl Report {
    pub fn table(&self) -> String {
        let mut t = Table::default();
        let p = &self.plan;
        let n = &self.normal;
        t.section("load");
        t.row(
            "scenario",
            format!("{} ({:?}, publish {:?})", self.scenario, p.mode, p.publish),
        );
        if let Some(l) = &self.label {
            t.row("label", l.clone());
        }
        t.row(
            "subscribers",
            format!(
                "{} over {} persona(s), {} worker process(es), {} source address(es)",
                p.subscribers,
                p.personas,
                p.workers,
                p.sources.len().max(1)
            ),
        );
        t.row(
            "rate / duration / payload",
            format!(
                "{} msg/s for {} s, {} bytes",
                p.rate, p.duration_s, p.payload_bytes
            ),
        );
        t.row(
            "published",
            format!(
                "{} in {:.2} s (errors {}, publisher lag p99 {} max {})",
                self.publish.sent,
                self.publish.elapsed_s,
                self.publish.errors,
                us(self.publish.lag_p99_us),
                us(self.publish.lag_max_us)
            ),
        );
        t.section("delivery (normal readers)");
        t.row(
            "ready / failed",
            format!("{} / {} ({} late)", n.ready, n.failed, n.late),
        );
        t.row("expected", n.expected.to_string());
        t.row(
            "delivered",
            format!("{} ({:.4}%)", n.unique, 100.0 * self.delivery_ratio),
        );
        t.row(
            "lost / dup / out-of-order",
            format!(
                "{} / {} / {} (subscribers with loss {}, worst {})",
                n.lost,
                n.duplicates,
                n.out_of_order,
                n.subscribers_with_loss,
                n.max_lost_one_subscriber
            ),
        );
        if !n.close_codes.is_empty() || n.eof > 0 {
            t.row("closed by server", closes(n));
        }
        t.row(
            "deliveries/s (all)",
            format!(
                "{:.0} ({} frames, drain {:.2} s)",
                self.deliveries_per_s, self.delivered, self.drain_s
            ),
        );
        let l = &self.latency_us;
        t.row(
            "latency p50/p90/p99",
            format!("{} / {} / {}", us(l.p50), us(l.p90), us(l.p99)),
        );
        t.row(
            "latency p99.9/max",
            format!("{} / {}", us(l.p999), us(l.max)),
        );
        for (name, g) in [
            ("slow readers", &self.slow),
            ("reconnecting", &self.reconnect),
        ] {
            if g.subscribers == 0 {
                continue;
            }
            t.section(name);
            t.row(
                "subscribers / ready",
                format!(
                    "{} / {} (reconnects {})",
                    g.subscribers, g.ready, g.reconnects
                ),
            );
            t.row(
                "delivered / expected",
                format!(
                    "{} / {} (skipped while away {})",
                    g.unique, g.expected, g.skipped
                ),
            );
            t.row(
                "lost / dup / out-of-order",
                format!("{} / {} / {}", g.lost, g.duplicates, g.out_of_order),
            );
            t.row("closed by server", closes(g));
        }
        t.section("connections");
        let (c, s) = (&self.connect_us, &self.subscribe_us);
        t.row(
            "connect+upgrade p50/p99/max",
            format!("{} / {} / {}", us(c.p50), us(c.p99), us(c.max)),
        );
        t.row(
            "subscribe p50/p99/max",
            format!("{} / {} / {}", us(s.p50), us(s.p99), us(s.max)),
        );
        if self.reconnect_us.count > 0 {
            let r = &self.reconnect_us;
            t.row(
                "reconnect p50/p99/max",
                format!("{} / {} / {}", us(r.p50), us(r.p99), us(r.max)),
            );
        }
        t.row("connect phase", format!("{:.2} s", self.connect_phase_s));
        if let Some(g) = &self.gateway {
            t.section("server");
            t.row(
                "CPU seconds",
                format!(
                    "{:.2} ({} per million deliveries)",
                    g.cpu_s,
                    g.cpu_s_per_million_deliveries
                        .map_or("-".into(), |v| format!("{v:.3}"))
                ),
            );
            t.row(
                "RSS before / idle / end / peak",
                format!(
                    "{} / {} / {} / {}",
                    mib(g.rss_before_connect_kb),
                    mib(g.rss_idle_kb),
                    mib(g.rss_end_kb),
                    mib(g.peak_rss_kb)
                ),
            );
            t.row(
                "per connection idle / peak",
                format!(
                    "{} / {}",
                    g.idle_bytes_per_connection.map_or("-".into(), bytes),
                    g.peak_bytes_per_connection.map_or("-".into(), bytes)
                ),
            );
        }
        if let Some(r) = self.redis_cpu_s {
            t.row("redis CPU seconds", format!("{r:.2}"));
        }
        t.section("client");
        t.row(
            "CPU seconds / peak RSS",
            format!("{:.2} / {}", self.client.cpu_s, mib(self.client.hwm_kb)),
        );
        t.row(
            "busy (of its CPUs, publish + drain)",
            format!(
                "{:.0}% of {}{}",
                self.client_busy * 100.0,
                self.client_cores,
                if self.client_busy >= CLIENT_SATURATED {
                    " — SATURATED: latency includes the client's own lag"
                } else {
                    ""
                }
            ),
        );
        for e in &self.error_samples {
            t.row("error sample", e.clone());
        }
        t.render()
    }
}

fn closes(g: &GroupStats) -> String {
    let mut s: Vec<String> = g
        .close_codes
        .iter()
        .map(|(c, n)| format!("{c}: {n}"))
        .collect();
    if g.eof > 0 {
        s.push(format!("EOF: {}", g.eof));
    }
    if s.is_empty() {
        "none".into()
    } else {
        s.join(", ")
    }
}

pub fn us(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1} ms", v as f64 / 1_000.0)
    } else if v >= 1_000 {
        format!("{:.2} ms", v as f64 / 1_000.0)
    } else {
        format!("{v} µs")
    }
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

fn bytes(b: f64) -> String {
    if b >= 1024.0 {
        format!("{:.2} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

/// A two-column table with section headers.
#[derive(Default)]
pub(crate) struct Table {
    rows: Vec<(String, String)>,
}

impl Table {
    pub(crate) fn section(&mut self, name: &str) {
        self.rows.push((String::new(), name.to_uppercase()));
    }
    pub(crate) fn row(&mut self, k: &str, v: String) {
        self.rows.push((k.to_string(), v));
    }
    pub(crate) fn render(&self) -> String {
        let w = self
            .rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (k, v) in &self.rows {
            if k.is_empty() {
                let _ = writeln!(
                    out,
                    "── {v} {}",
                    "─".repeat(60usize.saturating_sub(v.len()))
                );
            } else {
                let _ = writeln!(out, "  {k:<w$}  {v}");
            }
        }
        out
    }
}
