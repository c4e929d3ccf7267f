//! `[http]`: request deadlines and the REST answer cache.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{nonzero, ConfigError};

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

impl HttpConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        nonzero("http.handshake_timeout", self.handshake_timeout)?;
        nonzero("http.body_timeout", self.body_timeout)?;
        Ok(())
    }
}
