//! `[sse]`: the Server-Sent Events endpoints (`/sse/{persona}`, `/sse`).
//! Their queues, connection limit, Origin and token rules are the
//! WebSocket ones (`[ws]`, `[auth]`, `[limits]`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{nonzero, ConfigError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SseConfig {
    /// How often a quiet stream gets a `: keep-alive` comment, so proxies
    /// keep it open and a client that has gone is noticed. Default: 15s.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
}

impl Default for SseConfig {
    fn default() -> Self {
        Self {
            keepalive_interval: Duration::from_secs(15),
        }
    }
}

impl SseConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        nonzero("sse.keepalive_interval", self.keepalive_interval)
    }
}
