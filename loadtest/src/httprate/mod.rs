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
//!
//! `--fresh-connections` opens a new TCP connection for each request (a
//! connection flood); the `C` connections are then `C` attempt slots.
mod attempt;
mod schedule;
mod summary;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::sync::Notify;

use crate::cli::HttpRateArgs;
use crate::histo::{self, Hist};
use crate::http_client::{self, Conn};
use crate::pool::Counter;
use crate::target::Url;
use attempt::{attempt, Failure};

pub use schedule::{parse_duration, Schedule};
use summary::class;
pub use summary::{HttpRateReport, Millis, Tally};

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

struct Ctx {
    addr: SocketAddr,
    request: Vec<u8>,
    sched: Schedule,
    start: Instant,
    /// No request is sent after this.
    deadline: Instant,
    timeout: Duration,
    fresh: bool,
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
        http_client::parse_header(h)?;
    }
    Ok((url, addr))
}

pub async fn run(a: &HttpRateArgs) -> anyhow::Result<HttpRateReport> {
    let (url, addr) = validate(a)?;
    let request = http_client::get_request(
        &url.path,
        &url.host_header(),
        &a.headers,
        a.fresh_connections,
    );
    let sched = Schedule::new(a.rate, a.connections, a.warmup, a.duration);
    eprintln!(
        "pulsegate-loadtest http-rate: GET {} — {} req/s over {} {} for {} s (+{} s warmup)",
        a.url,
        a.rate,
        a.connections,
        if a.fresh_connections {
            "slot(s), a new connection per request"
        } else {
            "connection(s)"
        },
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
        fresh: a.fresh_connections,
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
        fresh_connections: a.fresh_connections,
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

/// Opens every connection, checking with one GET that the target answers
/// (with `--fresh-connections` only that one, and closes it).
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
    if a.fresh_connections {
        return Ok((0..a.connections).map(|_| None).collect());
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
        let result = attempt(
            &mut conn,
            ctx.addr,
            &ctx.request,
            ctx.fresh,
            ctx.timeout,
            &mut out.connects,
        )
        .await;
        let end = Instant::now();
        let error = match result {
            Ok(r) => {
                *tally.responses.entry(class(r.status)).or_default() += 1;
                *tally.statuses.entry(r.status).or_default() += 1;
                ctx.live.answered.inc();
                if r.close && !ctx.fresh {
                    tally.server_closes += 1;
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
            Err(f) => {
                match f {
                    Failure::Connect(_) => tally.connect_errors += 1,
                    Failure::Timeout(_) => tally.timeouts += 1,
                    Failure::Exchange(_) => {}
                }
                Some(f.to_string())
            }
        };
        if let Some(e) = error {
            tally.errors += 1;
            ctx.live.errors.inc();
            if out.errors.len() < MAX_ERROR_SAMPLES && !out.errors.contains(&e) {
                out.errors.push(e);
            }
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_remote_and_unbounded() {
        let args = |url: &str, rate: f64, dur: u64| HttpRateArgs {
            url: url.into(),
            rate,
            duration: Duration::from_secs(dur),
            connections: 8,
            fresh_connections: false,
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
