//! `http-rate`: GETs one URL at a fixed rate over keep-alive connections and
//! measures latency without coordinated omission. Request *n* falls due at
//! `start + n / rate` and goes out on connection `n mod C`, so each
//! connection sends every `C / rate` seconds on its own offset. Latency runs
//! from that scheduled time to the end of the response body: a request held
//! up by the one before it on its connection counts its wait.
//!
//! Timing: tokio's timer ticks in whole milliseconds, too coarse for a
//! sub-millisecond schedule, so one OS thread (the pacer) sleeps to each due
//! time and wakes that connection's task. Its own lateness is reported.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::sync::Notify;

use crate::cli::HttpRateArgs;
use crate::histo::{self, Hist};
use crate::http_client::{self, Conn};
use crate::pool::Counter;
use crate::report::{Percentiles, Table};
use crate::target::Url;

pub const MAX_RATE: f64 = 50_000.0;
pub const MAX_CONNECTIONS: u32 = 1_024;
pub const MAX_DURATION: Duration = Duration::from_secs(600);
pub const MAX_WARMUP: Duration = Duration::from_secs(60);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// Between connecting and the first due time.
const LEAD: Duration = Duration::from_millis(200);
/// A task not woken by the pacer this long after its due time goes anyway.
const FALLBACK: Duration = Duration::from_millis(2);
const MAX_ERROR_SAMPLES: usize = 5;

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

/// Counts for one phase (warmup or measured).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Tally {
    pub sent: u64,
    /// Complete responses by status class: "2xx", "4xx", …
    pub responses: BTreeMap<String, u64>,
    /// Requests without a complete response (connect, I/O, parse, timeout).
    pub errors: u64,
    pub timeouts: u64,
    /// Complete responses after which the server closed the connection
    /// (`Connection: close`, HTTP/1.0); the next request reconnects.
    pub server_closes: u64,
    /// Still due when the run's deadline passed (the server fell far behind).
    pub not_sent: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.sent += o.sent;
        for (k, v) in &o.responses {
            *self.responses.entry(k.clone()).or_default() += v;
        }
        self.errors += o.errors;
        self.timeouts += o.timeouts;
        self.server_closes += o.server_closes;
        self.not_sent += o.not_sent;
    }

    fn answered(&self) -> u64 {
        self.responses.values().sum()
    }
}

fn class(status: u16) -> String {
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
    fn of(h: &Hist) -> Self {
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

struct Ctx {
    addr: SocketAddr,
    request: Vec<u8>,
    sched: Schedule,
    start: Instant,
    /// No request is sent after this.
    deadline: Instant,
    timeout: Duration,
    live: Live,
}

#[derive(Default)]
struct Live {
    sent: Counter,
    answered: Counter,
    errors: Counter,
}

struct ConnOut {
    measured: Tally,
    warmup: Tally,
    latency: Hist,
    service: Hist,
    connects: u64,
    last_end: Option<Instant>,
    errors: Vec<String>,
}

pub fn validate(a: &HttpRateArgs) -> anyhow::Result<(Url, SocketAddr)> {
    let url = Url::parse(&a.url)?;
    if url.scheme != "http" {
        bail!("--url {}: http:// expected (plain HTTP/1.1, no TLS)", a.url);
    }
    let addr = url.resolve(a.allow_remote)?;
    if !(a.rate > 0.0 && a.rate <= MAX_RATE) {
        bail!("--rate must be in (0, {MAX_RATE}] requests/s");
    }
    if a.connections == 0 || a.connections > MAX_CONNECTIONS {
        bail!("--connections must be 1..={MAX_CONNECTIONS}");
    }
    if a.duration.is_zero() || a.duration > MAX_DURATION {
        bail!(
            "--duration must be more than 0 and at most {} s",
            MAX_DURATION.as_secs()
        );
    }
    if a.warmup > MAX_WARMUP {
        bail!("--warmup must be at most {} s", MAX_WARMUP.as_secs());
    }
    if a.timeout < Duration::from_millis(1) || a.timeout > MAX_TIMEOUT {
        bail!("--timeout must be 1ms..={} s", MAX_TIMEOUT.as_secs());
    }
    if a.threads == 0 || a.threads > 64 {
        bail!("--threads must be 1..=64");
    }
    for h in &a.headers {
        http_client::check_header(h)?;
    }
    Ok((url, addr))
}

pub async fn run(a: &HttpRateArgs) -> anyhow::Result<HttpRateReport> {
    let (url, addr) = validate(a)?;
    let request = http_client::get_request(&url.path, &url.host_header(), &a.headers);
    let sched = Schedule::new(a.rate, a.connections, a.warmup, a.duration);
    eprintln!(
        "pulsegate-loadtest http-rate: GET {} — {} req/s over {} connection(s) for {} s (+{} s warmup)",
        a.url,
        a.rate,
        a.connections,
        a.duration.as_secs_f64(),
        a.warmup.as_secs_f64()
    );
    let conns = open(a, addr, &request).await?;
    let start = Instant::now() + LEAD;
    let ctx = Arc::new(Ctx {
        addr,
        request,
        sched,
        start,
        deadline: start + sched.end() + a.timeout + Duration::from_secs(1),
        timeout: a.timeout,
        live: Live::default(),
    });
    let notifies: Vec<Arc<Notify>> = (0..a.connections)
        .map(|_| Arc::new(Notify::new()))
        .collect();
    let mut tasks = Vec::new();
    for (c, conn) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(connection(
            c,
            ctx.clone(),
            notifies[c].clone(),
            conn,
        )));
    }
    let pacer = tokio::task::spawn_blocking(move || pace(sched, start, notifies));
    let progress = tokio::spawn(progress(ctx.clone()));

    let mut measured = Tally::default();
    let mut warmup = Tally::default();
    let (mut latency, mut service) = (histo::new_hist(), histo::new_hist());
    let mut connects = 0;
    let mut last_end: Option<Instant> = None;
    let mut error_samples: Vec<String> = Vec::new();
    for t in tasks {
        let o = t.await.context("connection task")?;
        measured.add(&o.measured);
        warmup.add(&o.warmup);
        histo::merge(&mut latency, &o.latency);
        histo::merge(&mut service, &o.service);
        connects += o.connects;
        last_end = last_end.max(o.last_end);
        for e in o.errors {
            if error_samples.len() < MAX_ERROR_SAMPLES && !error_samples.contains(&e) {
                error_samples.push(e);
            }
        }
    }
    progress.abort();
    let pacer_lag = pacer.await.context("pacer thread")?;
    let measuring_from = start + sched.due(sched.warmup);
    let window = last_end
        .map(|e| e.saturating_duration_since(measuring_from).as_secs_f64())
        .unwrap_or(0.0);
    Ok(HttpRateReport {
        url: a.url.clone(),
        rate: a.rate,
        connections: a.connections,
        duration_s: a.duration.as_secs_f64(),
        warmup_s: a.warmup.as_secs_f64(),
        timeout_s: a.timeout.as_secs_f64(),
        achieved_rps: if window > 0.0 {
            measured.answered() as f64 / window
        } else {
            0.0
        },
        measured,
        warmup,
        connects,
        latency_ms: Millis::of(&latency),
        service_ms: Millis::of(&service),
        pacer_lag_ms: Millis::of(&pacer_lag),
        error_samples,
    })
}

/// Opens every connection, checking with one GET that the target answers.
async fn open(
    a: &HttpRateArgs,
    addr: SocketAddr,
    request: &[u8],
) -> anyhow::Result<Vec<Option<Conn>>> {
    let mut first = Conn::connect(addr)
        .await
        .with_context(|| format!("{} is unreachable; is the server running?", a.url))?;
    let r = tokio::time::timeout(a.timeout, first.exchange(request))
        .await
        .map_err(|_| anyhow::anyhow!("no response within {:?}", a.timeout))
        .and_then(|r| r)
        .with_context(|| format!("{} did not answer a first GET", a.url))?;
    if !(200..300).contains(&r.status) {
        eprintln!(
            "warning: the first GET answered {} ({} body bytes); the run measures that answer",
            r.status, r.body_len
        );
    }
    let mut conns = vec![(!r.close).then_some(first)];
    for _ in 1..a.connections {
        let c = Conn::connect(addr)
            .await
            .with_context(|| format!("open connection {} of {}", conns.len() + 1, a.connections))?;
        conns.push(Some(c));
    }
    Ok(conns)
}

/// One connection's requests, in schedule order, one at a time.
async fn connection(
    c: usize,
    ctx: Arc<Ctx>,
    notify: Arc<Notify>,
    mut conn: Option<Conn>,
) -> ConnOut {
    let mut out = ConnOut {
        measured: Tally::default(),
        warmup: Tally::default(),
        latency: histo::new_hist(),
        service: histo::new_hist(),
        connects: u64::from(conn.is_some()),
        last_end: None,
        errors: Vec::new(),
    };
    let sched = ctx.sched;
    for k in 0..sched.count_for(c) {
        let n = sched.nth(c, k);
        let measured = sched.measured(n);
        let tally = if measured {
            &mut out.measured
        } else {
            &mut out.warmup
        };
        if Instant::now() > ctx.deadline {
            tally.not_sent += 1;
            continue;
        }
        let due = ctx.start + sched.due(n);
        wait_until(due, &notify).await;
        tally.sent += 1;
        ctx.live.sent.inc();
        let sent_at = Instant::now();
        let result =
            tokio::time::timeout(ctx.timeout, attempt(&mut conn, &ctx, &mut out.connects)).await;
        let end = Instant::now();
        let error = match result {
            Ok(Ok(r)) => {
                *tally.responses.entry(class(r.status)).or_default() += 1;
                ctx.live.answered.inc();
                if r.close {
                    tally.server_closes += 1;
                    conn = None;
                }
                if measured {
                    out.latency
                        .saturating_record(end.duration_since(due).as_micros() as u64);
                    out.service
                        .saturating_record(end.duration_since(sent_at).as_micros() as u64);
                    out.last_end = Some(end);
                }
                None
            }
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(_) => {
                tally.timeouts += 1;
                Some(format!("no complete response within {:?}", ctx.timeout))
            }
        };
        if let Some(e) = error {
            tally.errors += 1;
            ctx.live.errors.inc();
            conn = None;
            if out.errors.len() < MAX_ERROR_SAMPLES && !out.errors.contains(&e) {
                out.errors.push(e);
            }
        }
    }
    out
}

/// Sends the request, reconnecting first if the connection was dropped.
async fn attempt(
    conn: &mut Option<Conn>,
    ctx: &Ctx,
    connects: &mut u64,
) -> anyhow::Result<http_client::Response> {
    if conn.is_none() {
        *connects += 1;
        *conn = Some(Conn::connect(ctx.addr).await?);
    }
    conn.as_mut()
        .expect("connected")
        .exchange(&ctx.request)
        .await
}

/// Returns at `due` (woken by the pacer; a stale wake-up just waits again).
async fn wait_until(due: Instant, notify: &Notify) {
    loop {
        if Instant::now() >= due {
            return;
        }
        let fallback = tokio::time::Instant::from_std(due + FALLBACK);
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep_until(fallback) => {}
        }
    }
}

/// The pacer thread: sleeps to each due time and wakes that connection.
/// Returns its lateness (µs) over the measured requests.
fn pace(sched: Schedule, start: Instant, notifies: Vec<Arc<Notify>>) -> Hist {
    let mut lag = histo::new_hist();
    for n in 0..sched.total {
        let due = start + sched.due(n);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if sched.measured(n) {
            lag.saturating_record(Instant::now().saturating_duration_since(due).as_micros() as u64);
        }
        notifies[sched.connection_of(n)].notify_one();
    }
    lag
}

/// A bar on a terminal; otherwise a plain line every second (every 10 s
/// for runs over a minute), so CI logs stay readable.
async fn progress(ctx: Arc<Ctx>) {
    let total = ctx.sched.end().as_secs_f64();
    let line = |ctx: &Ctx| {
        format!(
            "sent {}  answered {}  errors {}",
            ctx.live.sent.get(),
            ctx.live.answered.get(),
            ctx.live.errors.get()
        )
    };
    let tty = std::io::stderr().is_terminal();
    let every = if tty || total <= 60.0 { 1 } else { 10 };
    let bar = tty.then(|| {
        let style = indicatif::ProgressStyle::with_template(
            "http-rate [{elapsed_precise}] {wide_bar} {msg}",
        )
        .expect("progress template");
        indicatif::ProgressBar::new(total.ceil() as u64).with_style(style)
    });
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::from_std(ctx.start) + Duration::from_secs(every),
        Duration::from_secs(every),
    );
    // Dropping the bar (when the task is aborted) clears it.
    let _guard = bar.clone().map(ClearOnDrop);
    loop {
        tick.tick().await;
        let el = ctx.start.elapsed().as_secs_f64();
        match &bar {
            Some(b) => {
                b.set_position(el as u64);
                b.set_message(line(&ctx));
            }
            None => eprintln!("http-rate {el:>4.0}/{total} s  {}", line(&ctx)),
        }
    }
}

struct ClearOnDrop(indicatif::ProgressBar);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
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
                "{} req/s over {} connection(s) for {} s (+{} s warmup), timeout {} s",
                self.rate, self.connections, self.duration_s, self.warmup_s, self.timeout_s
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
        t.row(
            "responses",
            if classes.is_empty() {
                "none".into()
            } else {
                classes.join(", ")
            },
        );
        t.row(
            "errors",
            format!(
                "{} (timeouts {}); server closes {}; connections opened (whole run) {}",
                m.errors, m.timeouts, m.server_closes, self.connects
            ),
        );
        t.row(
            "achieved rate",
            format!("{:.1} responses/s", self.achieved_rps),
        );
        let l = &self.latency_ms;
        t.section("latency (scheduled send → end of body)");
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
                "{} / {} / {} ms (write → end of body)",
                ms(s.p50),
                ms(s.p99),
                ms(s.max)
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

    #[test]
    fn tallies_and_classes() {
        assert_eq!(class(204), "2xx");
        assert_eq!(class(503), "5xx");
        assert_eq!(class(0), "other");
        let mut a = Tally::default();
        a.responses.insert("2xx".into(), 3);
        let mut b = Tally {
            sent: 5,
            errors: 1,
            ..Tally::default()
        };
        b.responses.insert("2xx".into(), 2);
        b.responses.insert("4xx".into(), 2);
        a.add(&b);
        assert_eq!((a.sent, a.errors, a.answered()), (5, 1, 7));
    }

    #[test]
    fn refuses_remote_and_unbounded() {
        let args = |url: &str, rate: f64, dur: u64| HttpRateArgs {
            url: url.into(),
            rate,
            duration: Duration::from_secs(dur),
            connections: 8,
            warmup: Duration::from_secs(1),
            headers: vec![],
            timeout: Duration::from_secs(5),
            threads: 1,
            json: None,
            allow_remote: false,
        };
        assert!(validate(&args("http://127.0.0.1:8470/api/metrics/p", 1_000.0, 10)).is_ok());
        let e = validate(&args("http://10.1.2.3/x", 1_000.0, 10)).unwrap_err();
        assert!(format!("{e:#}").contains("loopback"));
        assert!(validate(&args("ws://127.0.0.1/x", 1_000.0, 10)).is_err());
        assert!(validate(&args("http://127.0.0.1/x", 1e6, 10)).is_err());
        assert!(validate(&args("http://127.0.0.1/x", 0.0, 10)).is_err());
        assert!(validate(&args("http://127.0.0.1/x", 1_000.0, 601)).is_err());
    }
}
