//! The `pulsegate` binary: parses the command line, loads and validates the
//! config (exit 64 when it is bad), and runs the chosen command.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use pulsegate::cli::{Cli, Command};
use pulsegate::config::Config;

/// `EX_CONFIG`-style status for bad configuration (sysexits' EX_USAGE = 64).
const EXIT_BAD_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = match Config::load(args.config.as_deref(), args.overrides()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("pulsegate: invalid configuration: {e}");
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
            };
            if let Err(e) = pulsegate::telemetry::init(&config.log) {
                eprintln!("pulsegate: {e}");
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
            run(pulsegate::server::serve(config))
        }
        Command::Config(args) => match Config::load(args.config.as_deref(), args.overrides()) {
            Ok(c) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&c.redacted()).unwrap_or_default()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("pulsegate: invalid configuration: {e}");
                ExitCode::from(EXIT_BAD_CONFIG)
            }
        },
        Command::Migrate(args) => {
            let config = match Config::load(args.config.as_deref(), args.overrides()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("pulsegate: invalid configuration: {e}");
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
            };
            let _ = pulsegate::telemetry::init(&config.log);
            let Some(url) = config.database.url.clone() else {
                eprintln!("pulsegate: invalid configuration: config key `database.url`: required by `migrate` (or set DATABASE_URL)");
                return ExitCode::from(EXIT_BAD_CONFIG);
            };
            run(async move {
                let applied = pulsegate::audit::migrate(&url).await?;
                println!("migrations applied: {applied:?} (schema is current)");
                Ok(())
            })
        }
        Command::Top(args) => run(pulsegate::top::run(args)),
        Command::Simulate(args) => {
            let _ = pulsegate::telemetry::init(&Default::default());
            run(pulsegate::simulate::run(args))
        }
    }
}

fn run(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pulsegate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(fut);
    // Everything that must finish has (the drain joined every task). Dropping
    // the runtime instead waited for its blocking threads: the process
    // lingered 1.7 s after "shutdown complete" with clients, and a rolling
    // restart's instance stayed down that much longer.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("pulsegate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
