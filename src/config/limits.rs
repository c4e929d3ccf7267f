//! `[limits]`: rate limits, connection bounds and the JSON depth bound. The
//! limiters themselves are `crate::ratelimit`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::Quota;
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// One rate: `per_second` sustained, `burst` at once. `per_second = 0` turns
/// the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl Rate {
    pub const fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second, burst }
    }

    /// The governor quota, or `None` when the limit is off.
    pub fn quota(&self) -> Option<Quota> {
        let rate = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst.max(1))?;
        Some(Quota::per_second(rate).allow_burst(burst))
    }
}

/// `[limits]`: every rate limit and connection bound. 0 turns a limit off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Peers whose `X-Forwarded-For` / `Forwarded` headers name the client
    /// (the load balancers). Any other peer is the client itself. Default: none.
    pub trusted_proxies: Vec<IpAddr>,
    /// New TCP connections per second to this process, all clients together;
    /// tames reconnect storms after a restart. Default: 5000/s, burst 20000.
    pub accept: Rate,
    /// New connections per client IP. Default: off (the demo, the tests and
    /// the load tests all connect from 127.0.0.1).
    pub connections_per_ip: Rate,
    /// WebSockets open at once per client IP. Default: 0 (off).
    pub max_connections_per_ip: usize,
    /// Inbound WebSocket messages (text, binary, ping) per connection; past
    /// it each message is refused with an error `rate_limited`.
    /// Default: 100/s, burst 200.
    pub ws_messages: Rate,
    /// Refused messages within 10 s after which the connection is closed
    /// with 1008. Default: 20.
    pub ws_message_strikes: u32,
    /// REST requests (`/api/*`, `/metrics`) per client IP. Default: off.
    pub rest_per_ip: Rate,
    /// Ingest requests (`POST /api/events/*`) per API key (the token's `sub`,
    /// else `X-Api-Key`, else the client IP). Default: off.
    pub ingest_per_key: Rate,
    /// How often idle keys are dropped from the keyed limiters. Default: 5s.
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
    /// Deepest nesting of arrays and objects accepted in any JSON that enters
    /// (client messages, ingest bodies, Redis publications), checked before
    /// parsing: deeper documents are refused, or dropped and counted.
    /// Default: 64 (1–1000).
    pub max_json_depth: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            accept: Rate::new(5000, 20_000),
            connections_per_ip: Rate::new(0, 0),
            max_connections_per_ip: 0,
            ws_messages: Rate::new(100, 200),
            ws_message_strikes: 20,
            rest_per_ip: Rate::new(0, 0),
            ingest_per_key: Rate::new(0, 0),
            prune_interval: Duration::from_secs(5),
            max_json_depth: crate::json_limit::DEFAULT_MAX_DEPTH,
        }
    }
}

impl LimitsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, rate) in [
            ("limits.accept", self.accept),
            ("limits.connections_per_ip", self.connections_per_ip),
            ("limits.ws_messages", self.ws_messages),
            ("limits.rest_per_ip", self.rest_per_ip),
            ("limits.ingest_per_key", self.ingest_per_key),
        ] {
            if rate.per_second > 0 && rate.burst == 0 {
                return Err(ConfigError::new(
                    &format!("{key}.burst"),
                    "must be at least 1 when per_second is set",
                ));
            }
        }
        if self.ws_messages.per_second > 0 && self.ws_message_strikes == 0 {
            return Err(ConfigError::new(
                "limits.ws_message_strikes",
                "must be greater than 0",
            ));
        }
        if !(1..=1000).contains(&self.max_json_depth) {
            return Err(ConfigError::new(
                "limits.max_json_depth",
                "must be between 1 and 1000",
            ));
        }
        if self.prune_interval.is_zero() {
            return Err(ConfigError::new(
                "limits.prune_interval",
                "must be a positive duration such as `5s`",
            ));
        }
        Ok(())
    }
}
