//! Redis connections: one multiplexed command client and one dedicated
//! subscriber connection, both with timeouts and endless reconnects.

pub mod functions;
pub mod gap;
pub mod health;
pub mod recent;
pub mod reconcile;
pub mod replay;
pub mod sharded;
pub mod slots;
pub mod subscriber;
pub mod text;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::config::UnresponsiveConfig;

use crate::config::RedisConfig;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("invalid Redis URL: {0}")]
    Url(#[source] fred::error::Error),
    #[error("cannot build the Redis client: {0}")]
    Build(#[source] fred::error::Error),
}

fn builder(cfg: &RedisConfig, resp3: bool) -> Result<Builder, RedisError> {
    let mut config = fred::prelude::Config::from_url(&cfg.url).map_err(RedisError::Url)?;
    // Keep retrying the first connection too: the gateway starts and reports
    // not-ready rather than exiting while Redis is still coming up.
    config.fail_fast = false;
    if resp3 {
        // RESP3 lets the subscriber connection also answer PING, which is
        // how a frozen Redis is noticed on an otherwise idle socket.
        config.version = fred::types::RespVersion::RESP3;
    }
    let mut b = Builder::from_config(config);
    let max_delay = cfg.reconnect_max_delay.as_millis().min(u32::MAX as u128) as u32;
    b.set_policy(ReconnectPolicy::new_exponential(
        0,
        50,
        max_delay.max(50),
        2,
    ));
    b.with_performance_config(|p| {
        p.default_command_timeout = cfg.command_timeout;
        p.broadcast_channel_capacity = cfg.broadcast_capacity;
    });
    b.with_connection_config(|c| {
        c.connection_timeout = cfg.command_timeout;
        c.internal_command_timeout = cfg.command_timeout;
        c.unresponsive = UnresponsiveConfig {
            max_timeout: Some(cfg.unresponsive_timeout),
            interval: (cfg.unresponsive_timeout / 4).max(std::time::Duration::from_millis(100)),
        };
    });
    Ok(b)
}

/// The client for commands (snapshots, ingest, health probe).
pub fn command_client(cfg: &RedisConfig) -> Result<Client, RedisError> {
    builder(cfg, false)?.build().map_err(RedisError::Build)
}

/// The dedicated pub/sub connection.
pub fn subscriber_client(cfg: &RedisConfig) -> Result<SubscriberClient, RedisError> {
    builder(cfg, true)?
        .build_subscriber_client()
        .map_err(RedisError::Build)
}
