//! Command-line interface (clap). Flags override the config file and the environment.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Overrides;

#[derive(Debug, Parser)]
#[command(
    name = "pulsegate",
    version,
    about = "Redis-backed real-time pub/sub gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Print the effective configuration (after every layer) as JSON, or
    /// exit 64 naming the bad key.
    Config(ServeArgs),
    /// Apply the audit schema migrations to `database.url` and exit.
    Migrate(ServeArgs),
    /// Publish realistic demo events for a few personas until interrupted.
    Simulate(SimulateArgs),
    /// Watch a running gateway's own metrics live (`system:runtime`).
    Top(crate::top::TopArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file (TOML). Default: `config/pulsegate.toml` when it exists.
    #[arg(long, env = "PULSEGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listen address. Default: 127.0.0.1:8081.
    #[arg(long)]
    pub listen: Option<String>,
    /// Redis URL. Default: redis://127.0.0.1:6379 (or REDIS_URL).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Postgres URL for the audit trail (or DATABASE_URL).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Log filter, e.g. `info` or `pulsegate=debug`.
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log format: `text` or `json`.
    #[arg(long)]
    pub log_format: Option<String>,
}

impl ServeArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            redis_url: self.redis_url.clone(),
            database_url: self.database_url.clone(),
            log_level: self.log_level.clone(),
            log_format: self.log_format.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Redis URL to publish to.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Key prefix (must match the gateway's `redis.key_prefix`).
    #[arg(long, default_value = "pulse")]
    pub key_prefix: String,
    /// Personas to simulate, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "persona_alpha,persona_beta,persona_gamma"
    )]
    pub personas: Vec<String>,
    /// Events per second, over all personas.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Stop once this many events were accepted (benchmarks fill a backlog
    /// with it; default: no limit).
    #[arg(long)]
    pub events: Option<u64>,
    /// Agent tasks running at once, publishing on `<task-namespace>:<id>`
    /// through `pulse_publish` (0: none).
    #[arg(long, default_value_t = 3)]
    pub tasks: usize,
    /// Task lines per second, over all tasks (0: none).
    #[arg(long, default_value_t = 2.0)]
    pub task_rate: f64,
    /// The `[[channels]]` namespace the tasks publish in.
    #[arg(long, default_value = "task")]
    pub task_namespace: String,
}
