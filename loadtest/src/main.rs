//! pulsegate-loadtest: opens many WebSocket subscribers, publishes at a fixed
//! rate through Redis or HTTP, and measures delivery, latency and the
//! server's cost. See loadtest/README.md.
#![forbid(unsafe_code)]

mod cli;
mod clock;
mod histo;
mod http_client;
mod httprate;
mod pool;
mod procstat;
mod publisher;
mod report;
mod resp;
mod rolling;
mod run;
mod scenario;
mod seq;
mod subscriber;
mod target;
mod worker;
mod ws_client;

use std::io::BufRead;

use clap::Parser;

use cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    // Sockets are files: take the whole hard limit (20,000 here).
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let code = match cli.command {
        Command::List { scenario_dir } => list(scenario_dir),
        Command::Run(args) => run_main(&args),
        Command::HttpRate(args) => http_rate_main(&args),
        Command::Worker => worker_main(),
    };
    std::process::exit(code);
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn list(dir: Option<std::path::PathBuf>) -> i32 {
    let dir = dir.unwrap_or_else(scenario::default_dir);
    match scenario::list(&dir) {
        Ok(items) => {
            for (name, desc) in items {
                println!("{name:<20} {desc}");
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            64
        }
    }
}

fn run_main(args: &cli::RunArgs) -> i32 {
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let plan = match args.plan() {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 1;
        }
    };
    if plan.rolling.is_some() {
        return block_on_interruptible(threads, rolling::run(args, plan), |report| {
            output(&report.table(), &report, args.json.as_deref())
        });
    }
    block_on_interruptible(threads, run::run(args, plan), |report| {
        output(&report.table(), &report, args.json.as_deref())
    })
}

fn http_rate_main(args: &cli::HttpRateArgs) -> i32 {
    block_on_interruptible(args.threads, httprate::run(args), |report| {
        output(&report.table(), &report, args.json.as_deref())
    })
}

/// Runs `work` on a runtime of `threads` until it ends or Ctrl-C, then
/// hands its result to `done`; errors print and exit 1.
fn block_on_interruptible<R>(
    threads: usize,
    work: impl std::future::Future<Output = anyhow::Result<R>>,
    done: impl FnOnce(R) -> i32,
) -> i32 {
    let rt = runtime(threads);
    let result = rt.block_on(async {
        tokio::select! {
            r = work => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    // Tasks may still hold sockets; don't wait for them.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(report) => done(report),
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// Prints the table and writes the JSON report if asked; the exit code.
fn output(table: &str, report: &impl serde::Serialize, json: Option<&std::path::Path>) -> i32 {
    print!("{table}");
    if let Some(path) = json {
        let json = serde_json::to_string_pretty(report).expect("report serialises");
        if let Err(e) = std::fs::write(path, json) {
            eprintln!("error: write {}: {e}", path.display());
            return 1;
        }
    }
    0
}

fn worker_main() -> i32 {
    // The assignment names the thread count, so read it before the runtime
    // exists; the tokio side reads the rest of stdin through the same buffer.
    let mut first = String::new();
    if std::io::stdin().lock().read_line(&mut first).is_err() {
        return 64;
    }
    let threads = serde_json::from_str::<worker::Assignment>(&first)
        .map(|a| a.plan.threads)
        .unwrap_or(1);
    let rt = runtime(threads);
    let result = rt.block_on(worker::child_main(Some(first)));
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("worker error: {e:#}");
            1
        }
    }
}
