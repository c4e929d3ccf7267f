//! One run, phase by phase: connect → subscribe (probe generic servers) →
//! hold → publish → drain → collect; then the report.

use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::RunArgs;
use crate::histo;
use crate::pool::{GroupStats, PoolResult, ProgressSnapshot};
use crate::procstat::{self, ProcSample};
use crate::publisher::Publisher;
use crate::report::{Percentiles, Report, ServerStats};
use crate::scenario::{Mode, Plan};
use crate::worker::PoolHandle;

const POLL: Duration = Duration::from_millis(100);
/// Publishing stops counting as "still delivering" after this long without a frame.
const QUIET: Duration = Duration::from_millis(500);
/// Longest wait for every connected subscriber to be subscribed.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(30);
/// Pause between probe rounds (generic servers).
const PROBE_EVERY: Duration = Duration::from_millis(250);

pub async fn run(args: &RunArgs, plan: Plan) -> anyhow::Result<Report> {
    eprintln!(
        "pulsegate-loadtest: {} — {} subscribers / {} personas, {} msg/s for {} s, publish {:?}, run id {}",
        plan.name, plan.subscribers, plan.personas, plan.rate, plan.duration_s, plan.publish, plan.run_id
    );
    let pids = args.gateway_pid.clone();
    let server_sample = || -> anyhow::Result<Option<ProcSample>> {
        if pids.is_empty() {
            return Ok(None);
        }
        Ok(Some(procstat::sample_all(&pids)?))
    };
    let before = server_sample()?;
    // The publisher connects first: `ingest` posts the variant before anyone listens.
    let mut publisher = Publisher::connect(&plan).await?;
    let mut pools = PoolHandle::start_all(&plan).await?;

    let connect_began = Instant::now();
    let ready = connect_phase(&plan, &mut pools, &mut publisher).await?;
    if ready == 0 {
        return Err(none_ready(pools).await);
    }
    let connect_phase_s = connect_began.elapsed().as_secs_f64();
    if plan.hold_s > 0.0 {
        let bar = bar(plan.hold_s.ceil() as u64, "hold");
        let began = Instant::now();
        while began.elapsed().as_secs_f64() < plan.hold_s {
            tokio::time::sleep(POLL).await;
            bar.set_position(began.elapsed().as_secs());
            bar.set_message(format!(
                "{}/{} s idle",
                began.elapsed().as_secs(),
                plan.hold_s
            ));
        }
        bar.finish_and_clear();
    }
    let idle = server_sample()?;
    let mut client_pids: Vec<u32> = pools.iter().filter_map(PoolHandle::pid).collect();
    client_pids.push(std::process::id());
    client_pids.dedup();
    let client_t0 = procstat::sample_all(&client_pids).ok();
    let publish_began = Instant::now();
    let redis_t0 = args.redis_pid.map(procstat::sample).transpose()?;

    for p in pools.iter_mut() {
        p.begin().await?;
    }
    let bar = bar((plan.duration_s * 10.0).ceil() as u64, "publish");
    let pub_report = {
        let pools_ref = &pools;
        let plan_duration = plan.duration_s;
        let bar = bar.clone();
        let mut last = Instant::now();
        publisher
            .run(move |secs, sent| {
                if last.elapsed() >= POLL {
                    last = Instant::now();
                    let p = total(pools_ref);
                    bar.set_position((secs * 10.0) as u64);
                    bar.set_message(format!(
                        "{secs:.1}/{} s, sent {sent}, delivered {}, closed {}",
                        plan_duration, p.delivered, p.closed
                    ));
                }
            })
            .await?
    };
    bar.finish_and_clear();
    let drain_s = drain(&plan, &pools).await;
    let after = server_sample()?;
    let client_t1 = procstat::sample_all(&client_pids).ok();
    let publish_wall = publish_began.elapsed().as_secs_f64();
    let redis_t1 = args.redis_pid.map(procstat::sample).transpose()?;

    let mut results = Vec::new();
    for p in pools {
        results.push(p.finish(&pub_report.published).await?);
    }
    let mut client = procstat::sample(std::process::id()).unwrap_or_default();
    let merged = merge(&results, &mut client)?;
    // Worker processes inherit this one's CPU affinity (`taskset`).
    let client_cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let client_busy = match (client_t0, client_t1) {
        (Some(a), Some(b)) if publish_wall > 0.0 => {
            (b.cpu_s - a.cpu_s).max(0.0) / (publish_wall * client_cores as f64)
        }
        _ => 0.0,
    };

    let normal = &merged.normal;
    let delivered =
        merged.normal.delivered() + merged.slow.delivered() + merged.reconnect.delivered();
    let gateway = match (before, idle, after) {
        (Some(b), Some(i), Some(a)) => {
            let cpu = (a.cpu_s - i.cpu_s).max(0.0);
            // Connections open when the idle RSS was sampled.
            let conns = ready.max(1) as f64;
            Some(ServerStats {
                pids: pids.clone(),
                cpu_s: cpu,
                cpu_s_per_million_deliveries: (delivered > 0)
                    .then(|| cpu / (delivered as f64 / 1e6)),
                rss_before_connect_kb: b.rss_kb,
                rss_idle_kb: i.rss_kb,
                rss_end_kb: a.rss_kb,
                peak_rss_kb: a.hwm_kb,
                idle_bytes_per_connection: Some(
                    (i.rss_kb as f64 - b.rss_kb as f64) * 1024.0 / conns,
                ),
                peak_bytes_per_connection: Some(
                    (a.hwm_kb as f64 - b.rss_kb as f64) * 1024.0 / conns,
                ),
            })
        }
        _ => None,
    };
    Ok(Report {
        label: args.label.clone(),
        scenario: plan.name.clone(),
        delivery_ratio: if normal.expected > 0 {
            normal.unique as f64 / normal.expected as f64
        } else {
            1.0
        },
        delivered,
        deliveries_per_s: if pub_report.elapsed_s > 0.0 {
            delivered as f64 / pub_report.elapsed_s
        } else {
            0.0
        },
        drain_s,
        latency_us: Percentiles::of(&merged.latency),
        connect_us: Percentiles::of(&merged.connect),
        subscribe_us: Percentiles::of(&merged.ready),
        reconnect_us: Percentiles::of(&merged.reconnect_time),
        connect_phase_s,
        gateway,
        redis_cpu_s: match (redis_t0, redis_t1) {
            (Some(a), Some(b)) => Some(b.cpu_s - a.cpu_s),
            _ => None,
        },
        client,
        client_cores,
        client_busy,
        error_samples: merged.errors,
        normal: merged.normal,
        slow: merged.slow,
        reconnect: merged.reconnect,
        publish: pub_report,
        plan,
    })
}

fn bar(len: u64, phase: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(&format!(
        "{phase:>8} [{{elapsed_precise}}] {{wide_bar}} {{msg}}"
    ))
    .expect("progress template");
    ProgressBar::new(len).with_style(style)
}

fn total(pools: &[PoolHandle]) -> ProgressSnapshot {
    let mut t = ProgressSnapshot::default();
    for p in pools {
        t.add(&p.progress());
    }
    t
}

/// Waits until every subscriber connected (or failed) and every connected
/// one is subscribed; generic servers get probes meanwhile. Returns the
/// number subscribed.
async fn connect_phase(
    plan: &Plan,
    pools: &mut [PoolHandle],
    publisher: &mut Publisher,
) -> anyhow::Result<u64> {
    let n = plan.subscribers as u64;
    let bar = bar(n, "connect");
    let ramp_s = if plan.ramp_rate > 0.0 {
        n as f64 / plan.ramp_rate
    } else {
        0.0
    };
    let limit = Duration::from_secs_f64(ramp_s + plan.connect_timeout_s * 3.0 + 30.0);
    let began = Instant::now();
    let mut subscribed_since: Option<Instant> = None;
    let mut last_probe = Instant::now() - Duration::from_secs(1);
    loop {
        tokio::time::sleep(POLL).await;
        let p = total(pools);
        bar.set_position(p.ready);
        bar.set_message(format!(
            "subscribed {}/{n}, upgraded {}, failed {}",
            p.ready, p.upgraded, p.failed
        ));
        let attempted = p.upgraded + p.failed >= n;
        // Probes reach every subscriber of a persona, ready or not: send
        // them only once every connection was tried, and not too often.
        if plan.mode == Mode::Generic
            && attempted
            && p.upgraded > p.ready
            && last_probe.elapsed() >= PROBE_EVERY
        {
            publisher.probe().await?;
            last_probe = Instant::now();
        }
        if attempted && p.ready >= p.upgraded {
            break;
        }
        if attempted {
            let since = *subscribed_since.get_or_insert_with(Instant::now);
            if since.elapsed() > SUBSCRIBE_WAIT {
                eprintln!(
                    "warning: {} of {} connected subscribers not subscribed after {:?}; going on",
                    p.upgraded - p.ready,
                    p.upgraded,
                    SUBSCRIBE_WAIT
                );
                break;
            }
        }
        if began.elapsed() > limit {
            eprintln!("warning: connect phase over its {limit:?} limit; going on");
            break;
        }
    }
    bar.finish_and_clear();
    Ok(total(pools).ready)
}

/// The run cannot go on: says how far the subscribers got and, from their
/// outcomes, why the first of them failed (e.g. the upgrade was refused).
async fn none_ready(pools: Vec<PoolHandle>) -> anyhow::Error {
    let p = total(&pools);
    let mut why = String::new();
    for pool in pools {
        let Ok(r) = pool.finish(&[]).await else {
            continue;
        };
        if let (true, Some(e)) = (why.is_empty(), r.error_samples.first()) {
            why = format!("; first error: {e}");
        }
    }
    anyhow::anyhow!(
        "no subscriber became ready ({} upgraded, {} failed){why}; is the target right?",
        p.upgraded,
        p.failed
    )
}

/// Waits for the last deliveries: until nothing arrived for `QUIET`, or `drain_s`.
async fn drain(plan: &Plan, pools: &[PoolHandle]) -> f64 {
    let began = Instant::now();
    let limit = Duration::from_secs_f64(plan.drain_s);
    let mut last = total(pools).delivered;
    let mut last_change = Instant::now();
    while began.elapsed() < limit {
        tokio::time::sleep(POLL).await;
        let now = total(pools).delivered;
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() >= QUIET {
            break;
        }
    }
    began.elapsed().as_secs_f64()
}

struct Merged {
    normal: GroupStats,
    slow: GroupStats,
    reconnect: GroupStats,
    latency: histo::Hist,
    connect: histo::Hist,
    ready: histo::Hist,
    reconnect_time: histo::Hist,
    errors: Vec<String>,
}

fn merge(results: &[PoolResult], client: &mut ProcSample) -> anyhow::Result<Merged> {
    let mut m = Merged {
        normal: GroupStats::default(),
        slow: GroupStats::default(),
        reconnect: GroupStats::default(),
        latency: histo::new_hist(),
        connect: histo::new_hist(),
        ready: histo::new_hist(),
        reconnect_time: histo::new_hist(),
        errors: Vec::new(),
    };
    let local = results.len() == 1;
    for r in results {
        m.normal.merge(&r.normal);
        m.slow.merge(&r.slow);
        m.reconnect.merge(&r.reconnect);
        histo::merge(
            &mut m.latency,
            &histo::decode(&r.latency).context("latency")?,
        );
        histo::merge(&mut m.connect, &histo::decode(&r.connect)?);
        histo::merge(&mut m.ready, &histo::decode(&r.ready)?);
        histo::merge(&mut m.reconnect_time, &histo::decode(&r.reconnect_time)?);
        m.errors.extend(r.error_samples.iter().take(3).cloned());
        if !local {
            // Worker processes: their cost adds to the parent's.
            client.add(&r.client);
        }
    }
    Ok(m)
}
