//! Typed configuration: defaults → `config/pulsegate.toml` (or `--config`) →
//! `REDIS_URL`/`DATABASE_URL` → `PULSEGATE_*` environment → command-line flags.
//!
//! Everything is validated before any port is bound; a bad value is reported
//! with the key that holds it, and the binary exits with status 64.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The default config file, read when it exists and no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "config/pulsegate.toml";

/// Sections of the config; `PULSEGATE_<SECTION>_<KEY>` maps to `<section>.<key>`.
const SECTIONS: &[&str] = &[
    "redis",
    "database",
    "log",
    "ws",
    "http",
    "shutdown",
    "ingest",
    "optimization",
    "audit",
    "limits",
    "auth",
];

#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP/WebSocket listener binds. Default: `127.0.0.1:8081`.
    pub listen: String,
    pub redis: RedisConfig,
    pub database: DatabaseConfig,
    pub log: LogConfig,
    pub ws: WsConfig,
    pub http: HttpConfig,
    pub shutdown: ShutdownConfig,
    pub ingest: IngestConfig,
    pub optimization: OptimizationConfig,
    pub audit: AuditConfig,
    pub limits: crate::ratelimit::LimitsConfig,
    pub auth: crate::auth::AuthConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Default: `redis://127.0.0.1:6379` (also read from `REDIS_URL`).
    pub url: String,
    /// Prefix of every key and channel. Default: `pulse`.
    pub key_prefix: String,
    /// Capacity of fred's pub/sub broadcast channel. fred's default of 32
    /// loses messages on any burst; lags are counted and clients told to resync.
    /// Default: 65536.
    pub broadcast_capacity: usize,
    /// Timeout of every Redis command and of the health probe. Default: 3s.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// A connection with a command unanswered this long is closed and
    /// re-established (catches a frozen Redis that keeps its socket open).
    /// Default: 5s.
    #[serde(with = "humantime_serde")]
    pub unresponsive_timeout: Duration,
    /// How often the health probe pings Redis. Default: 1s.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Longest delay between reconnect attempts (exponential backoff). Default: 2s.
    #[serde(with = "humantime_serde")]
    pub reconnect_max_delay: Duration,
    /// Largest publication forwarded to clients; a larger one is dropped and
    /// counted (`reason="too_large"`) before it is parsed or queued for
    /// anyone. Default: 1 MiB (1048576).
    pub max_message_bytes: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Postgres URL for the audit trail; optional (also read from `DATABASE_URL`).
    pub url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info` or `pulsegate=debug,info`. Default: `info`.
    pub level: String,
    /// `text` or `json`. Default: `text`.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WsConfig {
    /// Open WebSocket connections allowed in this process; past it the
    /// upgrade answers 503. Default: 50000.
    pub max_connections: usize,
    /// Largest inbound message, summed over its fragments; larger closes
    /// with 1009. Default: 65536 (64 KiB).
    pub max_message_bytes: usize,
    /// Server ping interval; a client silent for two intervals is closed. Default: 30s.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// Subscriptions one `/ws` connection may hold. Default: 100.
    pub max_subscriptions: usize,
    /// Lossless messages queued for one client before it is disconnected
    /// with 4008. Default: 4096.
    pub queue_max_messages: usize,
    /// Distinct variants with a conflated update pending for one client
    /// before it is disconnected with 4008. Default: 10000.
    pub queue_max_conflated: usize,
    /// How long a slow client gets to take its close frame before the
    /// socket is dropped. Default: 5s.
    #[serde(with = "humantime_serde")]
    pub slow_close_grace: Duration,
    /// Most missed events a `?since=` resume replays; more and the client
    /// gets a fresh snapshot with `recovered: false`. Must stay below
    /// `queue_max_messages`. Default: 2000.
    pub max_replay: usize,
    /// Persona ids longer than this are refused with 400. Default: 64.
    pub max_persona_id_len: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Time allowed to send a complete request head (slowloris guard). Default: 10s.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Time allowed to send a request body once its head is in: a body still
    /// incomplete then is answered 408 and the connection closed (the same
    /// guard for a client that sends its head promptly). Default: 10s.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// How far a cached REST read answer may trail the persona's newest
    /// event while its background rebuild runs; past it, readers wait for
    /// the rebuild. Default: 100ms.
    #[serde(with = "humantime_serde")]
    pub api_cache_max_lag: Duration,
    /// Personas whose REST answers are kept current (each costs one shared
    /// Redis subscription); reads of others are built per request. Default: 1000.
    pub api_cache_personas: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Longest wait for connections to close after SIGTERM. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".into(),
            redis: RedisConfig::default(),
            database: DatabaseConfig::default(),
            log: LogConfig::default(),
            ws: WsConfig::default(),
            http: HttpConfig::default(),
            shutdown: ShutdownConfig::default(),
            ingest: IngestConfig::default(),
            optimization: OptimizationConfig::default(),
            audit: AuditConfig::default(),
            limits: Default::default(),
            auth: Default::default(),
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "pulse".into(),
            broadcast_capacity: 65536,
            command_timeout: Duration::from_secs(3),
            unresponsive_timeout: Duration::from_secs(5),
            probe_interval: Duration::from_secs(1),
            reconnect_max_delay: Duration::from_secs(2),
            max_message_bytes: 1024 * 1024,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            max_connections: 50_000,
            max_message_bytes: 64 * 1024,
            ping_interval: Duration::from_secs(30),
            max_subscriptions: 100,
            queue_max_messages: 4096,
            queue_max_conflated: 10_000,
            slow_close_grace: Duration::from_secs(5),
            max_replay: 2000,
            max_persona_id_len: 64,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            api_cache_max_lag: Duration::from_millis(100),
            api_cache_personas: 1000,
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Ingest rules, handed to the Lua functions with every call the gateway makes.
/// Every instance of a deployment must use the same values.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Stream entries kept per persona (`XADD MAXLEN ~`). Default: 100000.
    pub stream_maxlen: u64,
    /// Rolling window for pattern usage. Default: 24h.
    #[serde(with = "humantime_serde")]
    pub pattern_window: Duration,
    /// A pattern used more than this many times in the window is fatigued. Default: 5.
    pub pattern_fatigue_threshold: u64,
    /// Window for the early-kill rate (killed ÷ posted among variants posted in it). Default: 24h.
    #[serde(with = "humantime_serde")]
    pub kill_rate_window: Duration,
    /// How long a killed variant's data is kept. Default: 7 days.
    #[serde(with = "humantime_serde")]
    pub killed_ttl: Duration,
    /// Most active variants in one snapshot. Default: 1000.
    pub max_variants: u64,
    /// Largest accepted HTTP ingest body. Default: 65536.
    pub max_body_bytes: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            stream_maxlen: 100_000,
            pattern_window: Duration::from_secs(24 * 3600),
            pattern_fatigue_threshold: 5,
            kill_rate_window: Duration::from_secs(24 * 3600),
            killed_ttl: Duration::from_secs(7 * 24 * 3600),
            max_variants: 1000,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Thresholds of the optimization rules (docs/api.md explains each).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizationConfig {
    /// Early-kill rate above which predictions need calibrating. Default: 0.30.
    pub kill_rate_threshold: f64,
    /// Variants posted in the window before the kill rate is judged. Default: 5.
    pub kill_rate_min_posted: u64,
    /// |mean performance vs prediction| that counts as bias. Default: 0.15.
    pub bias_threshold: f64,
    /// Variants (each with `min_views`) needed to judge bias. Default: 3.
    pub bias_min_variants: usize,
    /// Views before a variant's ER is judged at all. Default: 100.
    pub min_views: u64,
    /// An active variant without an update this long is stale. Default: 30m.
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// Leaders listed in `performance_leaders`. Default: 5.
    pub leaders: usize,
}

impl Default for OptimizationConfig {
    fn default() -> Self {
        Self {
            kill_rate_threshold: 0.30,
            kill_rate_min_posted: 5,
            bias_threshold: 0.15,
            bias_min_variants: 3,
            min_views: 100,
            stale_after: Duration::from_secs(30 * 60),
            leaders: 5,
        }
    }
}

/// The audit consumer (active when `database.url` is set and `enabled`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Consume streams into Postgres on this instance. Default: true.
    pub enabled: bool,
    /// Redis consumer group shared by every instance. Default: `audit`.
    pub group: String,
    /// This instance's consumer name; must differ between instances and stay
    /// the same across restarts of one. Default: `<hostname>-<listen port>`
    /// (`<hostname>-pid<pid>` when listening on port 0).
    pub consumer: Option<String>,
    /// Most entries written in one transaction. Default: 1000.
    pub batch_size: usize,
    /// Longest pause between reads when streams are idle. Default: 200ms.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Entries pending this long with another consumer are claimed. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub claim_idle: Duration,
    /// How often new persona streams are looked for. Default: 5s.
    #[serde(with = "humantime_serde")]
    pub discover_interval: Duration,
    /// Postgres connections. Default: 4.
    pub pool_size: u32,
    /// Consumer tasks; streams are split among them, each stream keeps one
    /// writer, different personas are written in parallel. Default: 4.
    pub workers: usize,
    /// Ingest is refused when the un-audited backlog of a stream comes within
    /// this many entries of `ingest.stream_maxlen`. Default: 10000.
    pub backlog_margin: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            group: "audit".into(),
            consumer: None,
            batch_size: 1000,
            poll_interval: Duration::from_millis(200),
            claim_idle: Duration::from_secs(10),
            discover_interval: Duration::from_secs(5),
            pool_size: 4,
            workers: 4,
            backlog_margin: 10_000,
        }
    }
}

/// Values given on the command line; only those present override.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
}

impl Overrides {
    fn into_figment(self, figment: Figment) -> Figment {
        let mut f = figment;
        if let Some(v) = self.listen {
            f = f.merge(Serialized::default("listen", v));
        }
        if let Some(v) = self.redis_url {
            f = f.merge(Serialized::default("redis.url", v));
        }
        if let Some(v) = self.database_url {
            f = f.merge(Serialized::default("database.url", v));
        }
        if let Some(v) = self.log_level {
            f = f.merge(Serialized::default("log.level", v));
        }
        if let Some(v) = self.log_format {
            f = f.merge(Serialized::default("log.format", v));
        }
        f
    }
}

/// Maps `PULSEGATE_REDIS_URL` → `redis.url`, `PULSEGATE_LISTEN` → `listen`.
fn pulsegate_env() -> Env {
    Env::prefixed("PULSEGATE_")
        .ignore(&["CONFIG", "REDIS_SERVER", "PG_BIN", "BIN"])
        .map(|key| {
            let k = key.as_str().to_ascii_lowercase();
            for section in SECTIONS {
                if let Some(rest) = k.strip_prefix(section).and_then(|r| r.strip_prefix('_')) {
                    return format!("{section}.{rest}").into();
                }
            }
            k.into()
        })
}

impl Config {
    /// Loads the layered config. `path` is an explicit `--config`; without it
    /// the default file is read only if present.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match path {
            Some(p) if !p.exists() => {
                return Err(ConfigError::new(
                    "config",
                    format!("file {} does not exist", p.display()),
                ))
            }
            Some(p) => figment = figment.merge(Toml::file(p)),
            None => {
                let default = PathBuf::from(DEFAULT_CONFIG_PATH);
                if default.exists() {
                    figment = figment.merge(Toml::file(default));
                }
            }
        }
        figment = figment
            .merge(Env::raw().only(&["REDIS_URL"]).map(|_| "redis.url".into()))
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "database.url".into()),
            )
            .merge(pulsegate_env());
        figment = overrides.into_figment(figment);
        let config: Config = figment.extract().map_err(from_figment)?;
        config.validate()?;
        Ok(config)
    }

    /// The listen address, parsed (validated by [`Config::validate`]).
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|e| {
            ConfigError::new(
                "listen",
                format!("`{}` is not host:port ({e})", self.listen),
            )
        })
    }

    /// A copy safe to print: passwords in URLs replaced by `***`.
    pub fn redacted(&self) -> Self {
        let mut c = self.clone();
        c.redis.url = redact_url(&c.redis.url);
        c.database.url = c.database.url.as_deref().map(redact_url);
        c.auth.secret = c.auth.secret.as_ref().map(|_| "***".into());
        c
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if !(self.redis.url.starts_with("redis://") || self.redis.url.starts_with("rediss://")) {
            return Err(ConfigError::new(
                "redis.url",
                format!("`{}` must start with redis:// or rediss://", self.redis.url),
            ));
        }
        fred::prelude::Config::from_url(&self.redis.url)
            .map_err(|e| ConfigError::new("redis.url", e.to_string()))?;
        let p = &self.redis.key_prefix;
        if p.is_empty()
            || p.len() > 32
            || !p
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        {
            return Err(ConfigError::new(
                "redis.key_prefix",
                "must be 1-32 characters of [A-Za-z0-9_.-]",
            ));
        }
        if let Some(url) = &self.database.url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(ConfigError::new(
                    "database.url",
                    "must start with postgres:// or postgresql://",
                ));
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ConfigError::new("log.level", e.to_string()))?;
        positive("redis.broadcast_capacity", self.redis.broadcast_capacity)?;
        nonzero("redis.command_timeout", self.redis.command_timeout)?;
        nonzero(
            "redis.unresponsive_timeout",
            self.redis.unresponsive_timeout,
        )?;
        nonzero("redis.probe_interval", self.redis.probe_interval)?;
        nonzero("redis.reconnect_max_delay", self.redis.reconnect_max_delay)?;
        if self.redis.max_message_bytes < 1024 {
            return Err(ConfigError::new(
                "redis.max_message_bytes",
                "must be at least 1024",
            ));
        }
        positive("ws.max_connections", self.ws.max_connections)?;
        if self.ws.max_message_bytes < 128 {
            return Err(ConfigError::new(
                "ws.max_message_bytes",
                "must be at least 128",
            ));
        }
        nonzero("ws.ping_interval", self.ws.ping_interval)?;
        positive("ws.max_subscriptions", self.ws.max_subscriptions)?;
        positive("ws.queue_max_messages", self.ws.queue_max_messages)?;
        positive("ws.queue_max_conflated", self.ws.queue_max_conflated)?;
        if self.ws.max_replay >= self.ws.queue_max_messages {
            return Err(ConfigError::new(
                "ws.max_replay",
                "must be below ws.queue_max_messages (a replay must fit the client's queue)",
            ));
        }
        // 128: the functions library's own bound (lua/pulse.lua).
        if !(1..=128).contains(&self.ws.max_persona_id_len) {
            return Err(ConfigError::new("ws.max_persona_id_len", "must be 1-128"));
        }
        nonzero("http.handshake_timeout", self.http.handshake_timeout)?;
        nonzero("http.body_timeout", self.http.body_timeout)?;
        if self.ingest.stream_maxlen < 100 {
            return Err(ConfigError::new(
                "ingest.stream_maxlen",
                "must be at least 100",
            ));
        }
        nonzero("ingest.pattern_window", self.ingest.pattern_window)?;
        nonzero("ingest.kill_rate_window", self.ingest.kill_rate_window)?;
        if self.ingest.killed_ttl < Duration::from_secs(1) {
            return Err(ConfigError::new("ingest.killed_ttl", "must be at least 1s"));
        }
        positive("ingest.max_body_bytes", self.ingest.max_body_bytes)?;
        let o = &self.optimization;
        if !(o.kill_rate_threshold > 0.0 && o.kill_rate_threshold < 1.0) {
            return Err(ConfigError::new(
                "optimization.kill_rate_threshold",
                "must be between 0 and 1",
            ));
        }
        if !(o.bias_threshold.is_finite() && o.bias_threshold > 0.0) {
            return Err(ConfigError::new(
                "optimization.bias_threshold",
                "must be a positive number",
            ));
        }
        positive("optimization.bias_min_variants", o.bias_min_variants)?;
        let a = &self.audit;
        if a.group.is_empty() || a.group.contains(char::is_whitespace) {
            return Err(ConfigError::new(
                "audit.group",
                "must be a non-empty name without spaces",
            ));
        }
        if !(1..=100_000).contains(&a.batch_size) {
            return Err(ConfigError::new("audit.batch_size", "must be 1-100000"));
        }
        nonzero("audit.poll_interval", a.poll_interval)?;
        nonzero("audit.claim_idle", a.claim_idle)?;
        nonzero("audit.discover_interval", a.discover_interval)?;
        if a.workers == 0 || a.workers > a.pool_size as usize {
            return Err(ConfigError::new(
                "audit.workers",
                "must be 1..=audit.pool_size",
            ));
        }
        if a.pool_size == 0 {
            return Err(ConfigError::new(
                "audit.pool_size",
                "must be greater than 0",
            ));
        }
        if a.backlog_margin >= self.ingest.stream_maxlen {
            return Err(ConfigError::new(
                "audit.backlog_margin",
                "must be below ingest.stream_maxlen",
            ));
        }
        nonzero("optimization.stale_after", o.stale_after)?;
        self.limits.validate()?;
        self.auth.validate()?;
        Ok(())
    }
}

fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => raw.to_owned(),
    }
}

fn positive(key: &str, v: usize) -> Result<(), ConfigError> {
    if v == 0 {
        return Err(ConfigError::new(key, "must be greater than 0"));
    }
    Ok(())
}

fn nonzero(key: &str, v: Duration) -> Result<(), ConfigError> {
    if v.is_zero() {
        return Err(ConfigError::new(
            key,
            "must be a positive duration such as `5s`",
        ));
    }
    Ok(())
}

fn from_figment(e: figment::Error) -> ConfigError {
    let key = if e.path.is_empty() {
        "config".to_owned()
    } else {
        e.path.join(".")
    };
    ConfigError {
        key,
        message: e.kind.to_string(),
    }
}
