//! `[ingest]` (the rules handed to the functions library) and
//! `[optimization]` (the thresholds of the dashboard's verdicts).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{nonzero, positive, ConfigError};

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

impl IngestConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.stream_maxlen < 100 {
            return Err(ConfigError::new(
                "ingest.stream_maxlen",
                "must be at least 100",
            ));
        }
        nonzero("ingest.pattern_window", self.pattern_window)?;
        nonzero("ingest.kill_rate_window", self.kill_rate_window)?;
        if self.killed_ttl < Duration::from_secs(1) {
            return Err(ConfigError::new("ingest.killed_ttl", "must be at least 1s"));
        }
        positive("ingest.max_body_bytes", self.max_body_bytes)?;
        Ok(())
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

impl OptimizationConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.kill_rate_threshold > 0.0 && self.kill_rate_threshold < 1.0) {
            return Err(ConfigError::new(
                "optimization.kill_rate_threshold",
                "must be between 0 and 1",
            ));
        }
        if !(self.bias_threshold.is_finite() && self.bias_threshold > 0.0) {
            return Err(ConfigError::new(
                "optimization.bias_threshold",
                "must be a positive number",
            ));
        }
        positive("optimization.bias_min_variants", self.bias_min_variants)?;
        nonzero("optimization.stale_after", self.stale_after)?;
        Ok(())
    }
}
