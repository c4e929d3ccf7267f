//! The `rolling-restart` scenario: clients spread over N gateway instances
//! through a balancer, events published through `FCALL pulse_ingest` at a
//! fixed rate, and every instance restarted in turn mid-run (by a command
//! the scenario runs, e.g. `scripts/cluster.sh restart-rolling`). Each
//! client behaves as the protocol says (`client.rs`) and is judged by
//! offset against its channel's stream (`ledger.rs`); Redis's own
//! `INFO commandstats` gives the cost of the reconnects (`redis.rs`).
//!
//! Phases: connect (every client has its first snapshot) → publish, with
//! the baseline window, then the restart, then the tail → drain (every
//! client connected again, deliveries quiet) → read the streams → judge.

mod client;
pub mod handle;
mod ledger;
pub mod pool;
mod redis;
mod report;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::cli::RunArgs;
use crate::publisher::Publisher;
use crate::scenario::{Plan, Rolling};
use handle::PoolHandle;
use pool::{PoolResult, ProgressSnapshot};
use redis::{CommandStats, ReconnectCost, Redis};
pub use report::Report;
use report::{Hists, RestartRun};

const POLL: Duration = Duration::from_millis(100);

pub async fn run(args: &RunArgs, plan: Plan) -> anyhow::Result<Report> {
    let Some(rolling) = plan.rolling.clone() else {
        bail!("not a rolling-restart plan");
    };
    eprintln!(
        "pulsegate-loadtest: {} — {} clients / {} personas through {}, {} events/s, restart {} at {} s, run id {}",
        plan.name,
        plan.subscribers,
        plan.personas,
        plan.target,
        plan.rate,
        rolling.command.as_deref().unwrap_or("(by hand)"),
        rolling.restart_at_s,
        plan.run_id
    );
    let mut redis = Redis::connect(&plan.redis, plan.allow_remote).await?;
    let mut publisher = Publisher::connect(&plan).await?;
    let pools = PoolHandle::start_all(&plan).await?;

    let began = Instant::now();
    let started = connect_phase(&plan, &pools).await;
    if started == 0 {
        let mut why = String::new();
        for p in pools {
            if let Ok(r) = p.finish(&[], &[]).await {
                if let (true, Some(e)) = (why.is_empty(), r.error_samples.first()) {
                    why = format!("; first error: {e}");
                }
            }
        }
        bail!("no client got its first snapshot{why}; is the target right?");
    }
    let connect_phase_s = began.elapsed().as_secs_f64();

    // Every client subscribed before this: a start for those the gateway
    // gave no offset (`/ws` before DECISIONS #6).
    let keys: Vec<String> = (0..plan.personas)
        .map(|p| format!("{}:{{{}}}:stream", plan.key_prefix, plan.persona(p)))
        .collect();
    let mut floors = Vec::with_capacity(keys.len());
    for key in &keys {
        floors.push(redis.last_id(key).await?);
    }
    let stop = CancellationToken::new();
    let t0 = redis.commandstats().await?;
    let bar = bar((plan.duration_s * 10.0).ceil() as u64, "publish");
    let publishing = {
        let (pools, bar) = (&pools, bar.clone());
        let mut last = Instant::now();
        publisher.run_until(&stop, move |secs, sent| {
            if last.elapsed() >= POLL {
                last = Instant::now();
                let p = handle::total(pools);
                bar.set_position((secs * 10.0) as u64);
                bar.set_message(format!(
                    "{secs:.1} s, sent {sent}, connected {}, reconnects {}, delivered {}",
                    p.connected, p.reconnects, p.delivered
                ));
            }
        })
    };
    let driving = drive(&plan, &rolling, &pools, &mut redis, &stop, &bar);
    let (published, driven) = tokio::join!(publishing, driving);
    bar.finish_and_clear();
    let pub_report = published?;
    let (restart, t1, t2, baseline_s, window_s) = driven?;
    if restart.started_at_s + restart.duration_s > pub_report.elapsed_s + 0.5 {
        eprintln!(
            "warning: publishing ended ({:.1} s, the plan's duration) before the restart did; \
             raise --duration",
            pub_report.elapsed_s
        );
    }
    let drain_s = drain(&plan, rolling.quiet_s, &pools).await;

    let mut streams = Vec::with_capacity(keys.len());
    for key in &keys {
        streams.push(redis.stream_ids(key).await?);
    }
    let mut merged = PoolResult::default();
    let mut client = crate::procstat::sample(std::process::id()).unwrap_or_default();
    let local = pools.len() == 1 && matches!(pools[0], PoolHandle::Local(_));
    for p in pools {
        let r = p.finish(&streams, &floors).await?;
        if !local {
            client.add(&r.client);
        }
        merged.merge(&r)?;
    }
    let cost = match (t0, t1, t2) {
        (t0, Some(t1), Some(t2)) => {
            Some(ReconnectCost::between(&t0, &t1, &t2, baseline_s, window_s))
        }
        _ => None,
    };
    let h = Hists::of(&merged)?;
    Ok(Report {
        label: args.label.clone(),
        scenario: plan.name.clone(),
        stream_entries: streams.iter().map(|s| s.len() as u64).sum(),
        clients: merged.clients,
        started: merged.started,
        connected_at_end: merged.connected_at_end,
        delivery: merged.total,
        clients_missed: merged.clients_missed,
        clients_late: merged.clients_late,
        clients_unrecovered: merged.clients_unrecovered,
        clients_duplicates: merged.clients_duplicates,
        clients_out_of_order: merged.clients_out_of_order,
        worst_missed: merged.worst_missed,
        clients_moved: merged.clients_moved,
        reconnects: merged.reconnects,
        hinted_closes: merged.hinted,
        refused_resumes: merged.refused_resumes,
        eof: merged.eof,
        connect_failures: merged.connect_failures,
        errors: merged.errors,
        close_codes: merged.close_codes,
        connect_phase_s,
        drain_s,
        first_connect_us: h.first_connect,
        reconnect_us: h.reconnect,
        wait_us: h.wait,
        after_wait_us: h.after_wait,
        latency_restarting_us: h.restarting,
        latency_steady_us: h.steady,
        latency_replayed_us: h.replayed,
        redis_commands_per_reconnect: cost
            .as_ref()
            .filter(|_| merged.reconnects > 0)
            .map(|c| c.excess_total / merged.reconnects as f64),
        redis: cost,
        client,
        anomalies: merged.anomalies,
        error_samples: merged.error_samples,
        publish: pub_report,
        restart,
        plan,
    })
}

/// Commandstats at the restart's start and at the end of its window, and
/// the lengths of the baseline and restart windows.
type Driven = (
    RestartRun,
    Option<CommandStats>,
    Option<CommandStats>,
    f64,
    f64,
);

/// Beside the publisher: the baseline window, the restart command (the
/// clients are told, to sort their latency), the tail; then stops publishing.
async fn drive(
    plan: &Plan,
    rolling: &Rolling,
    pools: &[PoolHandle],
    redis: &mut Redis,
    stop: &CancellationToken,
    bar: &ProgressBar,
) -> anyhow::Result<Driven> {
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(rolling.restart_at_s)).await;
    let baseline_s = t0.elapsed().as_secs_f64();
    let t1 = redis.commandstats().await.ok();
    let window = Instant::now();
    for p in pools {
        p.set_restarting(true).await?;
    }
    let mut restart = RestartRun {
        command: rolling.command.clone(),
        started_at_s: baseline_s,
        ..RestartRun::default()
    };
    match &rolling.command {
        Some(cmd) => {
            run_command(cmd, rolling.command_timeout_s, &mut restart, bar).await?;
        }
        // Someone restarts by hand: the window is the rest of the plan.
        None => {
            let end = t0 + Duration::from_secs_f64(plan.duration_s - rolling.tail_s);
            tokio::time::sleep_until(end.into()).await;
        }
    }
    restart.duration_s = window.elapsed().as_secs_f64();
    for p in pools {
        p.set_restarting(false).await?;
    }
    tokio::time::sleep(Duration::from_secs_f64(rolling.tail_s)).await;
    let t2 = redis.commandstats().await.ok();
    let window_s = window.elapsed().as_secs_f64();
    stop.cancel();
    Ok((restart, t1, t2, baseline_s, window_s))
}

/// Runs `cmd` with `sh -c`, its output timestamped into `restart` (and
/// above the progress bar), killed at `timeout_s`.
async fn run_command(
    cmd: &str,
    timeout_s: f64,
    restart: &mut RestartRun,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    use std::process::Stdio;
    let began = Instant::now();
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        // Both streams into one pipe, in order.
        .arg(format!("exec 2>&1; {cmd}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = tokio::time::sleep(Duration::from_secs_f64(timeout_s));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => {
                    let at = began.elapsed().as_secs_f64();
                    if !line.trim().is_empty() {
                        bar.suspend(|| eprintln!("  restart +{at:5.1} s  {line}"));
                    }
                    restart.lines.push((at, line));
                }
                _ => break,
            },
            _ = &mut deadline => {
                restart.timed_out = true;
                let _ = child.kill().await;
                return Ok(());
            }
        }
    }
    tokio::select! {
        status = child.wait() => restart.exit_code = status?.code(),
        _ = &mut deadline => {
            restart.timed_out = true;
            let _ = child.kill().await;
        }
    }
    Ok(())
}

fn bar(len: u64, phase: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(&format!(
        "{phase:>8} [{{elapsed_precise}}] {{wide_bar}} {{msg}}"
    ))
    .expect("progress template");
    ProgressBar::new(len).with_style(style)
}

/// Waits until every client has its first snapshot, or the time the ramp
/// and a few connect timeouts allow; returns how many have.
async fn connect_phase(plan: &Plan, pools: &[PoolHandle]) -> u64 {
    let n = plan.subscribers as u64;
    let bar = bar(n, "connect");
    let ramp_s = if plan.ramp_rate > 0.0 {
        n as f64 / plan.ramp_rate
    } else {
        0.0
    };
    let limit = Duration::from_secs_f64(ramp_s + plan.connect_timeout_s * 3.0 + 30.0);
    let began = Instant::now();
    let mut p = ProgressSnapshot::default();
    while began.elapsed() < limit {
        tokio::time::sleep(POLL).await;
        p = handle::total(pools);
        bar.set_position(p.started);
        bar.set_message(format!(
            "started {}/{n}, upgraded {}, connect failures {}",
            p.started, p.upgraded, p.connect_failures
        ));
        if p.started >= n {
            break;
        }
    }
    bar.finish_and_clear();
    if p.started < n {
        eprintln!(
            "warning: {} of {n} clients without a first snapshot after {limit:?}; going on",
            n - p.started
        );
    }
    p.started
}

/// After publishing: until every started client is connected again and no
/// delivery came for the plan's `quiet_s`, at most its `drain_s`.
async fn drain(plan: &Plan, quiet_s: f64, pools: &[PoolHandle]) -> f64 {
    let began = Instant::now();
    let limit = Duration::from_secs_f64(plan.drain_s);
    let quiet = Duration::from_secs_f64(quiet_s);
    let mut last = handle::total(pools).delivered;
    let mut last_change = Instant::now();
    while began.elapsed() < limit {
        tokio::time::sleep(POLL).await;
        let p = handle::total(pools);
        if p.delivered != last {
            last = p.delivered;
            last_change = Instant::now();
        } else if p.connected >= p.started && last_change.elapsed() >= quiet {
            break;
        }
    }
    began.elapsed().as_secs_f64()
}
