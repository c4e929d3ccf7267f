//! Scenarios: TOML files under `config/loadtest/`, layered as built-in
//! defaults < scenario file < command-line flags, resolved into one `Plan`
//! that is validated (bounds, loopback) before anything connects.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// Hard caps: the harness must stay bounded whatever a file or flag says.
pub const MAX_SUBSCRIBERS: u32 = 100_000;
pub const MAX_DURATION_S: f64 = 600.0;
pub const MAX_RATE: f64 = 2_000_000.0;
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Connections one process may hold: the open-file limit is 20,000 here.
pub const PER_PROCESS_SOCKETS: u32 = 18_000;
/// Ephemeral ports handed out per source address (about 28k exist).
pub const PER_SOURCE_PORTS: u32 = 20_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// pulsegate's `/dashboard/ws/{persona}`: ready on `initial_data`.
    Pulsegate,
    /// pulsegate's multiplexed `/ws`: subscribe, ready on `subscribed`.
    PulsegateMux,
    /// Any server: the target URL as given (with `{persona}`), ready once a
    /// probe message published after the upgrade has arrived.
    Generic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Publish {
    /// `PUBLISH <channel> <payload>`, pipelined on one connection.
    Raw,
    /// `FCALL pulse_ingest 1 <prefix>:{<persona>} <performance_update>`.
    Ingest,
    /// `POST` to `http_url` (keep-alive, pipelined).
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum HttpBody {
    /// `{"type":"loadtest","seq":..,"sent_ns":..,"pad":".."}` (generic servers).
    Loadtest,
    /// A `performance_update` event with `persona_id`, for pulsegate's
    /// `POST /api/events/performance-update`.
    PerformanceUpdate,
}

/// Extra messages on top of the steady rate: `size` at once every `every_s`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    pub size: u32,
    pub every_s: f64,
}

/// A fraction of subscribers that stop reading (or read slowly).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slow {
    pub fraction: f64,
    /// Milliseconds slept between reads of at most 4 KiB; 0 stops reading entirely.
    #[serde(default)]
    pub read_delay_ms: u64,
}

/// `count` subscribers drop their connection `at_s` into the publish phase
/// and reconnect at once, spread over `spread_ms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reconnect {
    pub count: u32,
    pub at_s: f64,
    #[serde(default)]
    pub spread_ms: u64,
}

/// A rolling restart of the instances behind the balancer, mid-run: the
/// `rolling-restart` scenario (`crate::rolling`). Clients then reconnect on
/// every close, as the protocol says, and are judged by stream offset.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rolling {
    /// Seconds of steady publishing before the restart: the baseline the
    /// Redis cost of the reconnects is measured against. Default: 5.
    #[serde(default = "Rolling::default_restart_at")]
    pub restart_at_s: f64,
    /// Publishing goes on this long after the restart command ends, so the
    /// last clients moved are back and judged under load. Default: 5.
    #[serde(default = "Rolling::default_tail")]
    pub tail_s: f64,
    /// Run with `sh -c` at `restart_at_s`; restarts every instance in turn
    /// and exits when the last is ready again, e.g.
    /// `scripts/cluster.sh restart-rolling`. None: the restart is done by
    /// someone else, and publishing lasts `duration_s`.
    #[serde(default)]
    pub command: Option<String>,
    /// Longest the command may run before it is killed. Default: 300.
    #[serde(default = "Rolling::default_command_timeout")]
    pub command_timeout_s: f64,
    /// Most jitter added to the server's `reconnect_ms` hint, as a fraction
    /// of the hint, plus 100 ms. Default: 0.1, what the client library
    /// (`clients/js`) adds, so the figures are those of real clients.
    #[serde(default = "Rolling::default_jitter")]
    pub jitter: f64,
    /// After publishing, the drain ends once every client is connected and
    /// no delivery came for this long (or at `drain_s`). A client whose
    /// first frames wait on a busy gateway receives nothing meanwhile, so
    /// too short a spell judges it before its events could come: they show
    /// as "not arrived by the end". Default: 2.
    #[serde(default = "Rolling::default_quiet")]
    pub quiet_s: f64,
}

impl Rolling {
    fn default_restart_at() -> f64 {
        5.0
    }
    fn default_tail() -> f64 {
        5.0
    }
    fn default_command_timeout() -> f64 {
        300.0
    }
    fn default_jitter() -> f64 {
        0.1
    }
    fn default_quiet() -> f64 {
        2.0
    }
}

/// A scenario file: every key optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub description: Option<String>,
    pub subscribers: Option<u32>,
    pub personas: Option<u32>,
    pub rate: Option<f64>,
    pub duration_s: Option<f64>,
    pub payload_bytes: Option<usize>,
    pub publish: Option<Publish>,
    pub mode: Option<Mode>,
    pub ramp_rate: Option<f64>,
    pub connect_concurrency: Option<u32>,
    pub hold_s: Option<f64>,
    pub drain_s: Option<f64>,
    pub burst: Option<Burst>,
    pub slow: Option<Slow>,
    pub reconnect: Option<Reconnect>,
    pub rolling: Option<Rolling>,
}

/// Everything one run needs, fully resolved. Sent to worker processes as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    pub description: String,
    /// Random id in persona names, so runs never see each other's messages.
    pub run_id: String,
    pub mode: Mode,
    pub target: String,
    pub subscribers: u32,
    pub personas: u32,
    pub persona_prefix: String,
    /// Messages per second over all personas (round-robin).
    pub rate: f64,
    pub duration_s: f64,
    pub payload_bytes: usize,
    pub publish: Publish,
    pub redis: String,
    /// Redis channel, `{persona}` replaced.
    pub channel: String,
    /// Key prefix for `pulse_ingest`'s `KEYS[1]` (`<prefix>:{<persona>}`).
    pub key_prefix: String,
    pub http_url: Option<String>,
    pub http_body: HttpBody,
    /// New connections per second; 0 = as fast as `connect_concurrency` allows.
    pub ramp_rate: f64,
    pub connect_concurrency: u32,
    pub connect_timeout_s: f64,
    /// Idle time after every subscriber is ready, before publishing (memory at rest).
    pub hold_s: f64,
    /// Longest wait for deliveries after the last publish.
    pub drain_s: f64,
    pub burst: Option<Burst>,
    pub slow: Option<Slow>,
    pub reconnect: Option<Reconnect>,
    pub rolling: Option<Rolling>,
    pub workers: u32,
    /// Client source addresses; empty = let the kernel choose.
    pub sources: Vec<std::net::IpAddr>,
    pub threads: usize,
    pub allow_remote: bool,
}

impl Plan {
    pub fn persona(&self, index: u32) -> String {
        format!("{}{}-{}", self.persona_prefix, self.run_id, index)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.subscribers == 0 || self.subscribers > MAX_SUBSCRIBERS {
            bail!("subscribers must be 1..={MAX_SUBSCRIBERS}");
        }
        if self.personas == 0 || self.personas > self.subscribers {
            bail!("personas must be 1..=subscribers");
        }
        if !(0.0..=MAX_DURATION_S).contains(&self.duration_s) {
            bail!("duration must be 0..={MAX_DURATION_S} s");
        }
        if !(0.0..=MAX_RATE).contains(&self.rate) {
            bail!("rate must be 0..={MAX_RATE} msg/s");
        }
        if self.payload_bytes > MAX_PAYLOAD {
            bail!("payload_bytes must be at most {MAX_PAYLOAD}");
        }
        if !(0.0..=MAX_DURATION_S).contains(&self.hold_s) || !(0.0..=60.0).contains(&self.drain_s) {
            bail!("hold_s must be 0..=600 and drain_s 0..=60");
        }
        if self.connect_concurrency == 0 {
            bail!("connect_concurrency must be at least 1");
        }
        if let Some(s) = &self.slow {
            if !(0.0..1.0).contains(&s.fraction) {
                bail!("slow.fraction must be in [0, 1)");
            }
        }
        if let Some(r) = &self.reconnect {
            if r.count > self.subscribers || r.at_s > self.duration_s {
                bail!("reconnect.count must be <= subscribers and reconnect.at_s <= duration");
            }
        }
        if let Some(b) = &self.burst {
            if b.every_s <= 0.0 || b.size as f64 > MAX_RATE {
                bail!("burst.every_s must be > 0 and burst.size bounded");
            }
        }
        if let Some(r) = &self.rolling {
            if self.publish != Publish::Ingest || self.mode == Mode::Generic {
                bail!(
                    "a rolling restart is judged by stream offset: it needs --publish ingest \
                     and a pulsegate mode"
                );
            }
            if !(0.0..=self.duration_s).contains(&r.restart_at_s)
                || !(0.0..=60.0).contains(&r.tail_s)
                || !(1.0..=MAX_DURATION_S).contains(&r.command_timeout_s)
                || !(0.0..=10.0).contains(&r.jitter)
                || !(0.0..=60.0).contains(&r.quiet_s)
            {
                bail!(
                    "rolling: restart_at_s must be 0..=duration, tail_s 0..=60, \
                     command_timeout_s 1..=600, jitter 0..=10 and quiet_s 0..=60"
                );
            }
        }
        if self.publish == Publish::Http && self.http_url.is_none() {
            bail!("--publish http needs --http-url");
        }
        let per_worker = self.subscribers.div_ceil(self.workers.max(1));
        if per_worker > PER_PROCESS_SOCKETS + 1_000 {
            bail!(
                "{per_worker} subscribers per process exceeds the open-file limit \
                 (~19k sockets per process here): use --workers {}",
                self.subscribers.div_ceil(PER_PROCESS_SOCKETS)
            );
        }
        let targets = crate::target::parse_list(&self.target)?;
        if targets.len() > 1 && self.rolling.is_none() {
            bail!("a list of targets is for the rolling-restart scenario only");
        }
        for ws in targets {
            if ws.scheme != "ws" {
                bail!("--target must be a ws:// URL");
            }
            ws.resolve(self.allow_remote)?;
        }
        if self.publish != Publish::Http {
            crate::target::Url::parse(&self.redis)?.resolve(self.allow_remote)?;
        }
        if let Some(u) = &self.http_url {
            crate::target::Url::parse(u)?.resolve(self.allow_remote)?;
        }
        for ip in &self.sources {
            if !self.allow_remote && !ip.is_loopback() {
                bail!("source address {ip} is not loopback");
            }
        }
        Ok(())
    }
}

/// Finds a scenario by name (`steady` → `<dir>/steady.toml`) or path.
pub fn locate(name: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    let as_path = PathBuf::from(name);
    if as_path.extension().is_some_and(|e| e == "toml") && as_path.exists() {
        return Ok(as_path);
    }
    let file = dir.join(format!("{name}.toml"));
    if file.exists() {
        return Ok(file);
    }
    bail!(
        "no scenario `{name}` in {} (try `pulsegate-loadtest list`)",
        dir.display()
    )
}

pub fn load(path: &Path) -> anyhow::Result<Scenario> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

/// Default scenario directory: `./config/loadtest` when present, else the
/// one in the source tree the binary was built from.
pub fn default_dir() -> PathBuf {
    let local = PathBuf::from("config/loadtest");
    if local.is_dir() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/loadtest")
}

/// `(name, description)` of every scenario in `dir`.
pub fn list(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let name = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let desc = load(&path)?.description.unwrap_or_default();
            out.push((name, desc));
        }
    }
    out.sort();
    Ok(out)
}
