//! Typed configuration, one file per section: each holds its struct, its
//! `Default` and its validation together, and the doc comment of each field
//! says what it is for and its default. `docs/configuration.md` lists every
//! key; `tests::every_key_is_documented_with_its_default` holds it to the code.
//!
//! Layers (`load.rs`): defaults → `config/pulsegate.toml` (or `--config`) →
//! `REDIS_URL`/`DATABASE_URL` → `PULSEGATE_*` environment → command-line flags.
//! Everything is validated before any port is bound; a bad value is reported
//! with the key that holds it, and the binary exits with status 64.

mod audit;
mod auth;
mod channels;
mod http;
mod ingest;
mod limits;
mod load;
mod redis;
mod runtime;
mod shutdown;
mod sse;
mod ws;

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use audit::{AuditConfig, DatabaseConfig};
pub use auth::{AuthConfig, AuthMode, DecodingKeys, Role};
pub use channels::{Grant, NamespaceConfig};
pub use http::HttpConfig;
pub use ingest::{IngestConfig, OptimizationConfig};
pub use limits::{LimitsConfig, Rate};
pub use load::{Overrides, DEFAULT_CONFIG_PATH};
pub use redis::{RedisConfig, Topology};
pub use runtime::RuntimeConfig;
pub use shutdown::ShutdownConfig;
pub use sse::SseConfig;
pub use ws::{Compression, WsConfig};

/// A bad value, and the key that holds it.
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: &str, message: impl Into<String>) -> Self {
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
    pub sse: SseConfig,
    pub http: HttpConfig,
    pub shutdown: ShutdownConfig,
    pub ingest: IngestConfig,
    pub optimization: OptimizationConfig,
    pub audit: AuditConfig,
    pub limits: LimitsConfig,
    pub auth: AuthConfig,
    /// `[[channels]]`: the namespaces besides `persona` (`config/channels.rs`).
    pub channels: Vec<NamespaceConfig>,
    pub runtime: RuntimeConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".into(),
            redis: RedisConfig::default(),
            database: DatabaseConfig::default(),
            log: LogConfig::default(),
            ws: WsConfig::default(),
            sse: SseConfig::default(),
            http: HttpConfig::default(),
            shutdown: ShutdownConfig::default(),
            ingest: IngestConfig::default(),
            optimization: OptimizationConfig::default(),
            audit: AuditConfig::default(),
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            channels: channels::defaults(),
            runtime: RuntimeConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info` or `pulsegate=debug,info`. Default: `info`.
    pub level: String,
    /// `text` or `json`. Default: `text`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// The listen address, parsed (validated by [`Config::validate`]).
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|e| {
            ConfigError::new(
                "listen",
                format!("`{}` is not host:port ({e})", self.listen),
            )
        })
    }

    /// Checks every section, then the rules that tie two sections together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.redis.validate()?;
        self.database.validate()?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ConfigError::new("log.level", e.to_string()))?;
        self.ws.validate()?;
        self.sse.validate()?;
        self.http.validate()?;
        self.shutdown.validate()?;
        self.ingest.validate()?;
        self.optimization.validate()?;
        self.audit.validate()?;
        if self.audit.backlog_margin >= self.ingest.stream_maxlen {
            return Err(ConfigError::new(
                "audit.backlog_margin",
                "must be below ingest.stream_maxlen",
            ));
        }
        self.limits.validate()?;
        self.auth.validate()?;
        channels::validate(&self.channels, &self.ws)?;
        self.runtime.validate()?;
        Ok(())
    }

    /// The `[[channels]]` namespace called `name`.
    pub fn namespace(&self, name: &str) -> Option<&NamespaceConfig> {
        self.channels.iter().find(|n| n.name == name)
    }
}

/// `key` must be greater than 0.
fn positive(key: &str, v: usize) -> Result<(), ConfigError> {
    if v == 0 {
        return Err(ConfigError::new(key, "must be greater than 0"));
    }
    Ok(())
}

/// `key` must be a positive duration.
fn nonzero(key: &str, v: Duration) -> Result<(), ConfigError> {
    if v.is_zero() {
        return Err(ConfigError::new(
            key,
            "must be a positive duration such as `5s`",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
