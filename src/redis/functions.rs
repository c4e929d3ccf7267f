//! The Redis Functions library (`lua/pulse.lua`), embedded at compile time and
//! loaded at start and after every reconnect: a Redis restarted without
//! persistence has forgotten it.

use std::time::Duration;

use fred::prelude::*;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::config::Config;
use crate::redis::health::RedisStatus;

/// The library source, as shipped in `lua/pulse.lua`.
pub const LIBRARY: &str = include_str!("../../lua/pulse.lua");

/// The `[ingest]` settings as the options argument of the functions.
pub fn options_json(config: &Config) -> String {
    let cfg = &config.ingest;
    serde_json::json!({
        "stream_maxlen": cfg.stream_maxlen,
        "pattern_window_ms": cfg.pattern_window.as_millis() as u64,
        "pattern_fatigue_threshold": cfg.pattern_fatigue_threshold,
        "kill_rate_window_ms": cfg.kill_rate_window.as_millis() as u64,
        "killed_ttl_s": cfg.killed_ttl.as_secs(),
        "max_variants": cfg.max_variants,
        "backlog_margin": config.audit.backlog_margin,
        "max_persona_id_len": config.ws.max_persona_id_len,
    })
    .to_string()
}

/// The library with its option defaults set to this deployment's values, so
/// a publisher calling `FCALL pulse_ingest` without options (any language,
/// not through the gateway) gets the same stream bound, windows and backlog
/// margin as the gateway's own calls.
pub fn library_with_defaults(options: &str) -> String {
    let Ok(serde_json::Value::Object(opts)) = serde_json::from_str::<serde_json::Value>(options)
    else {
        return LIBRARY.to_owned();
    };
    let mut out = String::with_capacity(LIBRARY.len());
    for line in LIBRARY.split_inclusive('\n') {
        out.push_str(&with_default(line, &opts).unwrap_or_else(|| line.to_owned()));
    }
    out
}

/// `  name = {lo, hi, default},` with `default` replaced, if `name` is configured.
fn with_default(line: &str, opts: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    let (name, rest) = line.trim_start().split_once('=')?;
    let value = opts.get(name.trim())?.as_u64()?;
    let inner = rest.trim().strip_prefix('{')?.strip_suffix("},")?;
    let parts: Vec<&str> = inner.split(',').map(str::trim).collect();
    let [lo, hi, _] = parts.as_slice() else {
        return None;
    };
    let indent = &line[..line.len() - line.trim_start().len()];
    Some(format!("{indent}{name}= {{{lo}, {hi}, {value}}},\n"))
}

/// `FUNCTION LOAD REPLACE` the library with the built-in defaults.
pub async fn load(client: &Client) -> Result<(), fred::error::Error> {
    let _: String = client.function_load(true, LIBRARY).await?;
    Ok(())
}

/// `FUNCTION LOAD REPLACE` the library with this deployment's defaults.
pub async fn load_configured(client: &Client, options: &str) -> Result<(), fred::error::Error> {
    let _: String = client
        .function_load(true, library_with_defaults(options))
        .await?;
    Ok(())
}

/// Loads the library now and again after every reconnect, until cancelled.
pub async fn keep_loaded(
    client: Client,
    options: String,
    status: Arc<RedisStatus>,
    cancel: CancellationToken,
) {
    let mut reconnects = client.reconnect_rx();
    loop {
        // Retry until it sticks: the command may race a reconnect.
        loop {
            match load_configured(&client, &options).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_config() {
        let lib = library_with_defaults(r#"{"stream_maxlen": 1234, "backlog_margin": 56}"#);
        assert!(
            lib.contains("stream_maxlen             = {1, MAX_INT, 1234},"),
            "stream_maxlen line"
        );
        assert!(lib.contains("backlog_margin            = {0, MAX_INT, 56},"));
        assert!(
            lib.contains("pattern_window_ms         = {1, MAX_INT, 86400000},"),
            "others untouched"
        );
        assert_eq!(lib.lines().count(), LIBRARY.lines().count());
        assert_eq!(library_with_defaults("not json"), LIBRARY);
    }
}
