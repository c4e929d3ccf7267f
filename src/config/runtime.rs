//! `[runtime]`: the gateway's own live metrics on `system:runtime`
//! (`src/runtime/`, `docs/protocol.md`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The shortest interval: a sample reads a few `/proc` files and walks the
/// open connections, so a tighter loop would cost the fan-out it measures.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// The longest interval: a chart over a 60 s window needs a few points.
pub const MAX_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Time between two samples on `system:runtime`, while at least one
    /// client watches it (nothing is sampled otherwise). Default: 1s.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
        }
    }
}

impl RuntimeConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.interval < MIN_INTERVAL || self.interval > MAX_INTERVAL {
            return Err(ConfigError::new(
                "runtime.interval",
                "must be between 100ms and 60s",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_bounded() {
        for (ms, ok) in [
            (99, false),
            (100, true),
            (1000, true),
            (60_000, true),
            (60_001, false),
        ] {
            let c = RuntimeConfig {
                interval: Duration::from_millis(ms),
            };
            assert_eq!(c.validate().is_ok(), ok, "{ms} ms");
        }
    }
}
