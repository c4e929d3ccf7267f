//! `[shutdown]`: the paced drain after SIGTERM (`docs/architecture.md`,
//! "Shutdown"): a grace for the load balancer, a window over which the
//! WebSockets are closed in batches, and a deadline for all of it.

use std::time::Duration;

use humantime_serde::re::humantime::format_duration;
use serde::{Deserialize, Serialize};

use super::{nonzero, ConfigError};

/// Longest `lb_grace` or `drain_window` accepted: a drain is seconds to
/// minutes; a typo such as `10d` should not keep a process up for days.
const MAX_PHASE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// From SIGTERM (when `/readyz` turns 503) to the first WebSocket close:
    /// long enough for a load balancer's health check to take the instance
    /// out, so reconnecting clients are sent elsewhere. 0 closes at once.
    /// Default: 2s.
    #[serde(with = "humantime_serde")]
    pub lb_grace: Duration,
    /// The span over which the WebSockets are closed, in batches spread
    /// evenly, so their reconnects do not land on the rest of the fleet at
    /// once. 0 closes them all in one batch. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub drain_window: Duration,
    /// Longest the whole drain may take, from SIGTERM: connections still
    /// open then are dropped (those never asked to close get 1001 first).
    /// At least `lb_grace + drain_window`. Default: 15s (3 s after the
    /// window for the last clients' close handshakes).
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            lb_grace: Duration::from_secs(2),
            drain_window: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(15),
        }
    }
}

impl ShutdownConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("shutdown.lb_grace", self.lb_grace),
            ("shutdown.drain_window", self.drain_window),
        ] {
            if v > MAX_PHASE {
                return Err(ConfigError::new(key, "must be at most 1h"));
            }
        }
        nonzero("shutdown.drain_timeout", self.drain_timeout)?;
        let paced = self.lb_grace.saturating_add(self.drain_window);
        if self.drain_timeout < paced {
            return Err(ConfigError::new(
                "shutdown.drain_timeout",
                format!(
                    "{} is shorter than shutdown.lb_grace + shutdown.drain_window ({} + {} = {}): \
                     the drain could not close every client before the deadline",
                    format_duration(self.drain_timeout),
                    format_duration(self.lb_grace),
                    format_duration(self.drain_window),
                    format_duration(paced),
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_shorter_than_grace_and_window_is_refused_naming_the_key() {
        let config = ShutdownConfig {
            lb_grace: Duration::from_secs(2),
            drain_window: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        };
        let e = config.validate().unwrap_err();
        assert_eq!(e.key, "shutdown.drain_timeout");
        assert!(e.message.contains("2s + 10s = 12s"), "{}", e.message);
    }

    #[test]
    fn no_grace_and_no_window_close_at_once() {
        let config = ShutdownConfig {
            lb_grace: Duration::ZERO,
            drain_window: Duration::ZERO,
            drain_timeout: Duration::from_secs(1),
        };
        config.validate().expect("valid");
    }

    #[test]
    fn a_window_of_days_is_a_typo() {
        let config = ShutdownConfig {
            drain_window: Duration::from_secs(10 * 86400),
            drain_timeout: Duration::from_secs(11 * 86400),
            ..ShutdownConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().key, "shutdown.drain_window");
    }

    #[test]
    fn a_zero_deadline_is_refused() {
        let config = ShutdownConfig {
            lb_grace: Duration::ZERO,
            drain_window: Duration::ZERO,
            drain_timeout: Duration::ZERO,
        };
        assert_eq!(config.validate().unwrap_err().key, "shutdown.drain_timeout");
    }
}
