//! `[database]` and `[audit]`: the Postgres audit trail and its consumers.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{nonzero, ConfigError};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Postgres URL for the audit trail; optional (also read from `DATABASE_URL`).
    pub url: Option<String>,
}

impl DatabaseConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(ConfigError::new(
                    "database.url",
                    "must start with postgres:// or postgresql://",
                ));
            }
        }
        Ok(())
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

impl AuditConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.group.is_empty() || self.group.contains(char::is_whitespace) {
            return Err(ConfigError::new(
                "audit.group",
                "must be a non-empty name without spaces",
            ));
        }
        if !(1..=100_000).contains(&self.batch_size) {
            return Err(ConfigError::new("audit.batch_size", "must be 1-100000"));
        }
        nonzero("audit.poll_interval", self.poll_interval)?;
        nonzero("audit.claim_idle", self.claim_idle)?;
        nonzero("audit.discover_interval", self.discover_interval)?;
        if self.pool_size == 0 {
            return Err(ConfigError::new(
                "audit.pool_size",
                "must be greater than 0",
            ));
        }
        if self.workers == 0 || self.workers > self.pool_size as usize {
            return Err(ConfigError::new(
                "audit.workers",
                "must be 1..=audit.pool_size",
            ));
        }
        Ok(())
    }
}
