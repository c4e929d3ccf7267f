//! `[redis]`: the connection to Redis and what the gateway accepts from it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{nonzero, positive, ConfigError};

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

impl RedisConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.url.starts_with("redis://") || self.url.starts_with("rediss://")) {
            return Err(ConfigError::new(
                "redis.url",
                format!("`{}` must start with redis:// or rediss://", self.url),
            ));
        }
        fred::prelude::Config::from_url(&self.url)
            .map_err(|e| ConfigError::new("redis.url", e.to_string()))?;
        let p = &self.key_prefix;
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
        positive("redis.broadcast_capacity", self.broadcast_capacity)?;
        nonzero("redis.command_timeout", self.command_timeout)?;
        nonzero("redis.unresponsive_timeout", self.unresponsive_timeout)?;
        nonzero("redis.probe_interval", self.probe_interval)?;
        nonzero("redis.reconnect_max_delay", self.reconnect_max_delay)?;
        if self.max_message_bytes < 1024 {
            return Err(ConfigError::new(
                "redis.max_message_bytes",
                "must be at least 1024",
            ));
        }
        Ok(())
    }
}
