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
    /// Least time between two rounds of SUBSCRIBE/UNSUBSCRIBE on the
    /// subscriber connection: channels wanted meanwhile (many clients of
    /// many personas arriving at once, as in a rolling restart) wait for
    /// the next round and share its one SUBSCRIBE and PING. A change after
    /// a quiet spell goes at once. Default: 50ms; 0: no pause.
    #[serde(with = "humantime_serde")]
    pub subscribe_batch_interval: Duration,
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
            subscribe_batch_interval: Duration::from_millis(50),
        }
    }
}

/// Which Redis deployment `redis.url` names: its scheme alone decides
/// (DECISIONS #10), as fred parses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Topology {
    /// `redis://`, `rediss://`: one server.
    Standalone,
    /// `redis-sentinel://`, `rediss-sentinel://`: the primary the sentinels name.
    Sentinel,
    /// `redis-cluster://`, `rediss-cluster://`: every primary of a Cluster,
    /// with sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`).
    Cluster,
}

impl Topology {
    /// The topology of `url`, or why the URL cannot be used.
    pub fn of(url: &str) -> Result<Self, ConfigError> {
        let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
        let topology = match scheme {
            "redis" | "rediss" => Self::Standalone,
            "redis-sentinel" | "rediss-sentinel" => Self::Sentinel,
            "redis-cluster" | "rediss-cluster" => Self::Cluster,
            _ => {
                return Err(ConfigError::new(
                    "redis.url",
                    format!(
                        "`{}` must start with redis://, redis-sentinel:// or redis-cluster:// (or their rediss forms)",
                        super::load::redact_url(url)
                    ),
                ))
            }
        };
        // fred's own parser, so what is accepted here is what connects.
        let config = fred::prelude::Config::from_url(url).map_err(|e| {
            ConfigError::new(
                "redis.url",
                format!("`{}`: {}", super::load::redact_url(url), e.details()),
            )
        })?;
        if topology == Self::Sentinel {
            let named = url
                .split_once('?')
                .map(|(_, q)| {
                    q.split('&').any(|kv| {
                        kv.strip_prefix("sentinelServiceName=")
                            .is_some_and(|v| !v.is_empty())
                    })
                })
                .unwrap_or(false);
            if !named {
                return Err(ConfigError::new(
                    "redis.url",
                    "a redis-sentinel:// URL needs ?sentinelServiceName=<name>",
                ));
            }
        }
        debug_assert_eq!(config.server.is_clustered(), topology == Self::Cluster);
        Ok(topology)
    }
}

impl RedisConfig {
    /// The deployment `url` names (validated at start, so `Standalone` on a
    /// URL that somehow fails is never used to connect).
    pub fn topology(&self) -> Topology {
        Topology::of(&self.url).unwrap_or(Topology::Standalone)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        Topology::of(&self.url)?;
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
        if self.subscribe_batch_interval > MAX_SUBSCRIBE_BATCH_INTERVAL {
            return Err(ConfigError::new(
                "redis.subscribe_batch_interval",
                "must be at most 5s (a new channel's first client waits up to this long)",
            ));
        }
        Ok(())
    }
}

/// A new channel's first client may wait this long at most for its SUBSCRIBE.
const MAX_SUBSCRIBE_BATCH_INTERVAL: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::Topology;

    #[test]
    fn the_scheme_alone_chooses_the_topology() {
        let ok = [
            ("redis://127.0.0.1:6379", Topology::Standalone),
            ("rediss://:pw@h:6380/2", Topology::Standalone),
            (
                "redis-sentinel://127.0.0.1:26379?sentinelServiceName=pulse&node=127.0.0.1:26380",
                Topology::Sentinel,
            ),
            (
                "rediss-sentinel://h:26379/0?sentinelServiceName=pulse",
                Topology::Sentinel,
            ),
            (
                "redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001",
                Topology::Cluster,
            ),
            ("rediss-cluster://h:7000", Topology::Cluster),
        ];
        for (url, topology) in ok {
            assert_eq!(Topology::of(url).unwrap(), topology, "{url}");
        }
        let bad = [
            "http://x",
            "nope",
            "redis-sentinel://127.0.0.1:26379",
            "redis-sentinel://127.0.0.1:26379?sentinelServiceName=",
            "redis-cluster://",
            "unix:///tmp/redis.sock",
        ];
        for url in bad {
            let e = Topology::of(url).unwrap_err();
            assert_eq!(e.key, "redis.url", "{url}");
        }
        let e = Topology::of("http://u:secret@h").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}
