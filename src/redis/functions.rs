//! The Redis Functions library (`lua/pulse.lua`), embedded at compile time and
//! loaded on every new command connection: a Redis restarted without
//! persistence has forgotten it.

use std::time::Duration;

use fred::prelude::*;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::redis::health::{Health, Signal};

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
///
/// `audit_group`: the audit's consumer group when the deployment keeps an
/// audit trail; the library then creates each new stream with it.
pub fn library_with_defaults(options: &str, audit_group: Option<&str>) -> String {
    let opts = match serde_json::from_str::<serde_json::Value>(options) {
        Ok(serde_json::Value::Object(opts)) => opts,
        _ => serde_json::Map::new(),
    };
    let mut out = String::with_capacity(LIBRARY.len());
    for line in LIBRARY.split_inclusive('\n') {
        let replaced = match (line.strip_prefix("local AUDIT_GROUP = ''"), audit_group) {
            (Some(rest), Some(group)) => {
                Some(format!("local AUDIT_GROUP = {}{rest}", lua_string(group)))
            }
            _ => with_default(line, &opts),
        };
        out.push_str(&replaced.unwrap_or_else(|| line.to_owned()));
    }
    out
}

/// The library as this instance loads it: with the audit group when the
/// instance runs the audit (an instance with the audit off loads it without,
/// so a deployment whose audit is off everywhere never creates a group that
/// nothing would consume, which would block ingest at the backlog bound).
pub fn configured_library(config: &Config) -> String {
    let audit_group = (config.database.url.is_some() && config.audit.enabled)
        .then_some(config.audit.group.as_str());
    library_with_defaults(&options_json(config), audit_group)
}

/// A Lua string literal of `s`: every byte outside printable ASCII, and the
/// quote and backslash, as a decimal escape.
fn lua_string(s: &str) -> String {
    let mut out = String::from("'");
    for b in s.bytes() {
        if b.is_ascii_graphic() && b != b'\'' && b != b'\\' || b == b' ' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\{b:03}"));
        }
    }
    out.push('\'');
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
    load_configured(client, LIBRARY).await
}

/// `FUNCTION LOAD REPLACE` a library source (see [`configured_library`]).
pub async fn load_configured(client: &Client, library: &str) -> Result<(), fred::error::Error> {
    let _: String = client.function_load(true, library).await?;
    Ok(())
}

/// Pause before retrying a load that failed (Redis down or slow).
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// Loads the library on every new command connection (a Redis restarted
/// without persistence has forgotten it) and reports each success, with the
/// connection's epoch, to the health monitor: `/readyz` and the clients'
/// `up` wait for it. Runs until cancelled.
pub async fn keep_loaded(
    client: Client,
    library: String,
    health: Health,
    cancel: CancellationToken,
) {
    let mut links = health.links();
    // The command epoch the library was last loaded for.
    let mut loaded: Option<u64> = None;
    loop {
        let link = links.borrow_and_update().command;
        if link.connected && loaded != Some(link.epoch) {
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = load_configured(&client, &library) => r,
            };
            match result {
                Ok(()) => {
                    loaded = Some(link.epoch);
                    tracing::info!(epoch = link.epoch, "Redis functions library loaded");
                    let signal = Signal::LibraryLoaded { epoch: link.epoch };
                    if health.report(signal).await.is_err() {
                        return;
                    }
                    // A reconnect during the load is seen at the loop's top.
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot load the Redis functions library; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(RETRY_DELAY) => {}
                        r = links.changed() => if r.is_err() { return },
                    }
                    continue;
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = links.changed() => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_config() {
        let lib = library_with_defaults(r#"{"stream_maxlen": 1234, "backlog_margin": 56}"#, None);
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
        assert_eq!(library_with_defaults("not json", None), LIBRARY);
    }

    #[test]
    fn the_audit_group_is_a_safe_lua_literal() {
        assert!(!LIBRARY.contains("local AUDIT_GROUP = 'audit'"));
        let lib = library_with_defaults("{}", Some("audit"));
        assert!(lib.contains("\nlocal AUDIT_GROUP = 'audit'\n"));
        assert_eq!(lib.lines().count(), LIBRARY.lines().count());
        let lib = library_with_defaults("{}", Some("it's a \\ ]] group"));
        assert!(lib.contains("local AUDIT_GROUP = 'it\\039s a \\092 ]] group'\n"));
    }
}
