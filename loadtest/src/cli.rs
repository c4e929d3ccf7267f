//! Command line: `run <scenario>` with flags that override the scenario file,
//! `list`, `http-rate` (fixed-rate GET latency), and the hidden `worker`
//! used by `--workers`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::scenario::{self, HttpBody, Mode, Plan, Publish, Scenario};

#[derive(Debug, Parser)]
#[command(
    name = "pulsegate-loadtest",
    version,
    about = "Load-test pulsegate (or any WebSocket fan-out server) on loopback"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a scenario by name (config/loadtest/<name>.toml) or path.
    Run(Box<RunArgs>),
    /// List the scenarios.
    List {
        #[arg(long)]
        scenario_dir: Option<PathBuf>,
    },
    /// Fixed-rate HTTP GET latency (open loop, from the scheduled send time).
    HttpRate(HttpRateArgs),
    /// Internal: one subscriber process of a `--workers` run (plan on stdin).
    #[command(hide = true)]
    Worker,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Scenario name or path to a .toml file.
    pub scenario: String,
    /// Directory of scenario files. Default: ./config/loadtest.
    #[arg(long)]
    pub scenario_dir: Option<PathBuf>,
    /// WebSocket base URL (pulsegate modes) or full URL template with
    /// `{persona}` (generic mode). `rolling-restart` also takes a
    /// comma-separated list (instances without a balancer): client i
    /// connects to the (i mod n)-th, and to the next ones while that refuses.
    #[arg(long, default_value = "ws://127.0.0.1:8081")]
    pub target: String,
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Redis URL for `raw` and `ingest` publishing.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// Redis channel template.
    #[arg(long, default_value = "pulse:{{persona}}:events")]
    pub channel: String,
    /// Key prefix of the gateway (`redis.key_prefix`), for `ingest`.
    #[arg(long, default_value = "pulse")]
    pub key_prefix: String,
    #[arg(long, value_enum)]
    pub publish: Option<Publish>,
    /// URL template for `--publish http`, e.g. http://127.0.0.1:8090/pub/{persona}.
    #[arg(long)]
    pub http_url: Option<String>,
    #[arg(long, value_enum, default_value = "loadtest")]
    pub http_body: HttpBody,
    #[arg(long)]
    pub subscribers: Option<u32>,
    #[arg(long)]
    pub personas: Option<u32>,
    /// Publish rate, messages per second over all personas.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Publish duration in seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    #[arg(long)]
    pub payload_bytes: Option<usize>,
    /// New connections per second (0 = unlimited).
    #[arg(long)]
    pub ramp_rate: Option<f64>,
    #[arg(long)]
    pub connect_concurrency: Option<u32>,
    /// Seconds to hold idle connections before publishing.
    #[arg(long)]
    pub hold: Option<f64>,
    #[arg(long)]
    pub drain: Option<f64>,
    /// Worker processes for subscribers. Default: one per 18,000 subscribers.
    #[arg(long)]
    pub workers: Option<u32>,
    /// Client source addresses, e.g. 127.0.0.2-127.0.0.9. Default: spread over
    /// 127.0.0.2.. (20,000 connections each) above 20,000 subscribers.
    #[arg(long)]
    pub sources: Option<String>,
    /// Runtime threads per process. Default: the CPUs this process may use.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Prefix of persona ids.
    #[arg(long, default_value = "lt")]
    pub persona_prefix: String,
    /// Gateway process ids (comma-separated; summed) for CPU and RSS.
    #[arg(long, value_delimiter = ',')]
    pub gateway_pid: Vec<u32>,
    /// Redis process id, for its CPU seconds.
    #[arg(long)]
    pub redis_pid: Option<u32>,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// A label stored in the JSON report (e.g. the server's name).
    #[arg(long)]
    pub label: Option<String>,
    /// Allow non-loopback targets.
    #[arg(long)]
    pub allow_remote: bool,
    /// Scenarios with a rolling restart: the command that restarts every
    /// instance in turn (run with `sh -c`), e.g. `scripts/cluster.sh
    /// restart-rolling`; an empty string runs none (restart by hand).
    #[arg(long)]
    pub restart_cmd: Option<String>,
    /// Scenarios with a rolling restart: seconds of publishing before it.
    #[arg(long)]
    pub restart_at: Option<f64>,
    /// Scenarios with a rolling restart: seconds of publishing after it.
    #[arg(long)]
    pub tail: Option<f64>,
    /// Scenarios with a rolling restart: seconds without a delivery that end
    /// the drain (default 2; at most `--drain`).
    #[arg(long)]
    pub quiet: Option<f64>,
}

#[derive(Debug, Args)]
pub struct HttpRateArgs {
    /// Full http:// URL to GET (loopback unless --allow-remote), e.g.
    /// http://127.0.0.1:8470/api/metrics/bench_p.
    #[arg(long)]
    pub url: String,
    /// Requests per second over all connections.
    #[arg(long, default_value_t = 1_000.0)]
    pub rate: f64,
    /// Measured time, e.g. 10s, 500ms, 2m (a bare number is seconds).
    #[arg(long, default_value = "10s", value_parser = crate::httprate::parse_duration)]
    pub duration: std::time::Duration,
    /// Keep-alive connections; each sends on its own offset schedule. With
    /// --fresh-connections: the most attempts in flight at once.
    #[arg(long, default_value_t = 8)]
    pub connections: u32,
    /// A new TCP connection for every request, sent with `Connection: close`
    /// and dropped after the answer (or the server's close): a connection
    /// flood. Connect failures (refused, no SYN-ACK) are counted apart.
    #[arg(long)]
    pub fresh_connections: bool,
    /// Load at the same rate before measuring (not counted in the figures).
    #[arg(long, default_value = "1s", value_parser = crate::httprate::parse_duration)]
    pub warmup: std::time::Duration,
    /// Extra request header `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// A request without a complete response after this long is an error
    /// (the connection is dropped and reopened).
    #[arg(long, default_value = "5s", value_parser = crate::httprate::parse_duration)]
    pub timeout: std::time::Duration,
    /// Runtime threads (the pacer thread comes on top). The default 1 keeps
    /// the client's footprint small next to the server.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Write the summary as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Allow a non-loopback target.
    #[arg(long)]
    pub allow_remote: bool,
}

impl RunArgs {
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let dir = self
            .scenario_dir
            .clone()
            .unwrap_or_else(scenario::default_dir);
        let path = scenario::locate(&self.scenario, &dir)?;
        let s: Scenario = scenario::load(&path)?;
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let subscribers = self.subscribers.or(s.subscribers).unwrap_or(1_000);
        let workers = self
            .workers
            .unwrap_or_else(|| subscribers.div_ceil(scenario::PER_PROCESS_SOCKETS))
            .max(1);
        let sources = match &self.sources {
            Some(raw) => crate::target::parse_sources(raw)?,
            None if subscribers > scenario::PER_SOURCE_PORTS => {
                let n = subscribers.div_ceil(scenario::PER_SOURCE_PORTS);
                crate::target::parse_sources(&format!("127.0.0.2-127.0.0.{}", 1 + n))?
            }
            None => Vec::new(),
        };
        let threads = self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        });
        let plan = Plan {
            name,
            description: s.description.clone().unwrap_or_default(),
            run_id: format!("{:06x}", crate::ws_client::next_random() & 0xFF_FFFF),
            mode: self.mode.or(s.mode).unwrap_or(Mode::Pulsegate),
            target: self.target.clone(),
            subscribers,
            personas: self.personas.or(s.personas).unwrap_or(1),
            persona_prefix: self.persona_prefix.clone(),
            rate: self.rate.or(s.rate).unwrap_or(1_000.0),
            duration_s: self.duration.or(s.duration_s).unwrap_or(10.0),
            payload_bytes: self.payload_bytes.or(s.payload_bytes).unwrap_or(100),
            publish: self.publish.or(s.publish).unwrap_or(Publish::Raw),
            redis: self.redis.clone(),
            channel: self.channel.clone(),
            key_prefix: self.key_prefix.clone(),
            http_url: self.http_url.clone(),
            http_body: self.http_body,
            ramp_rate: self.ramp_rate.or(s.ramp_rate).unwrap_or(5_000.0),
            connect_concurrency: self
                .connect_concurrency
                .or(s.connect_concurrency)
                .unwrap_or(256),
            connect_timeout_s: 10.0,
            hold_s: self.hold.or(s.hold_s).unwrap_or(0.0),
            drain_s: self.drain.or(s.drain_s).unwrap_or(5.0),
            burst: s.burst.clone(),
            slow: s.slow.clone(),
            reconnect: s.reconnect.clone(),
            rolling: s.rolling.clone().map(|mut r| {
                if let Some(cmd) = &self.restart_cmd {
                    r.command = (!cmd.trim().is_empty()).then(|| cmd.clone());
                }
                r.restart_at_s = self.restart_at.unwrap_or(r.restart_at_s);
                r.tail_s = self.tail.unwrap_or(r.tail_s);
                r.quiet_s = self.quiet.unwrap_or(r.quiet_s);
                r
            }),
            workers,
            sources,
            threads,
            allow_remote: self.allow_remote,
        };
        plan.validate()?;
        Ok(plan)
    }
}
