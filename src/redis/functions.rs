//! The Redis Functions library (`lua/pulse.lua`), embedded at compile time and
//! loaded at start and after every reconnect: a Redis restarted without
//! persistence has forgotten it.

use std::time::Duration;

use fred::prelude::*;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::config::IngestConfig;
use crate::redis::health::RedisStatus;

/// The library source, as shipped in `lua/pulse.lua`.
pub const LIBRARY: &str = include_str!("../../lua/pulse.lua");

/// The `[ingest]` settings as the options argument of the functions.
pub fn options_json(cfg: &IngestConfig) -> String {
    serde_json::json!({
        "stream_maxlen": cfg.stream_maxlen,
        "pattern_window_ms": cfg.pattern_window.as_millis() as u64,
        "pattern_fatigue_threshold": cfg.pattern_fatigue_threshold,
        "kill_rate_window_ms": cfg.kill_rate_window.as_millis() as u64,
        "killed_ttl_s": cfg.killed_ttl.as_secs(),
        "max_variants": cfg.max_variants,
    })
    .to_string()
}

/// `FUNCTION LOAD REPLACE` the library.
pub async fn load(client: &Client) -> Result<(), fred::error::Error> {
    let _: String = client.function_load(true, LIBRARY).await?;
    Ok(())
}

/// Loads the library now and again after every reconnect, until cancelled.
pub async fn keep_loaded(client: Client, status: Arc<RedisStatus>, cancel: CancellationToken) {
    let mut reconnects = client.reconnect_rx();
    loop {
        // Retry until it sticks: the command may race a reconnect.
        loop {
            match load(&client).await {
                Ok(()) => {
                    status.set_library_loaded(true);
                    tracing::info!("Redis functions library loaded");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot load the Redis functions library; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = cancel.cancelled() => return,
                    }
                }
            }
        }
        tokio::select! {
            r = reconnects.recv() => {
                status.set_library_loaded(false);
                if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    return;
                }
            }
            _ = cancel.cancelled() => return,
        }
    }
}
