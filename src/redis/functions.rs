//! The Redis Functions library (`lua/pulse.lua`), embedded at compile time and
//! loaded on every new command connection: a Redis restarted without
//! persistence has forgotten it.

use std::time::Duration;

use fred::prelude::*;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Topology};
use crate::redis::health::{Health, Signal};

/// The library source, as shipped in `lua/pulse.lua`.
pub const LIBRARY: &str = include_str!("../../lua/pulse.lua");

/// The `[ingest]` settings (and the limits the functions enforce) as the
/// functions' options: passed with every call, and loaded as the library's
/// defaults (see [`library_with_defaults`]).
pub fn options(config: &Config) -> serde_json::Map<String, serde_json::Value> {
    let cfg = &config.ingest;
    let serde_json::Value::Object(options) = serde_json::json!({
        "stream_maxlen": cfg.stream_maxlen,
        "pattern_window_ms": cfg.pattern_window.as_millis() as u64,
        "pattern_fatigue_threshold": cfg.pattern_fatigue_threshold,
        "kill_rate_window_ms": cfg.kill_rate_window.as_millis() as u64,
        "killed_ttl_s": cfg.killed_ttl.as_secs(),
        "max_variants": cfg.max_variants,
        "backlog_margin": config.audit.backlog_margin,
        "max_persona_id_len": config.ws.max_persona_id_len,
    }) else {
        unreachable!("json!({{...}}) is an object")
    };
    options
}

/// [`options`] as the options argument of the functions.
pub fn options_json(config: &Config) -> String {
    serde_json::Value::Object(options(config)).to_string()
}

/// The library with `options` as its defaults, so a publisher calling
/// `FCALL pulse_ingest` without options (any language, not through the
/// gateway) gets the same stream bound, windows and backlog margin as the
/// gateway's own calls.
///
/// `audit_group`: the audit's consumer group when the deployment keeps an
/// audit trail; the library then creates each new stream with it.
///
/// They go in as `local CONFIGURED = {...}; ` in front of the library's
/// second line, which `lua/pulse.lua` merges over its built-in `DEFAULTS`
/// (and refuses, failing every call, if a name is not an option). The
/// shebang has to stay the first line, and keeping the table on the second
/// keeps Lua's error line numbers those of the file.
pub fn library_with_defaults(
    options: &serde_json::Map<String, serde_json::Value>,
    audit_group: Option<&str>,
) -> String {
    library_with(options, audit_group, false)
}

/// [`library_with_defaults`], and `sharded` (the library publishes with
/// `SPUBLISH`: a Redis Cluster, where a plain `PUBLISH` would be copied to
/// every node and the gateway subscribes with `SSUBSCRIBE`).
fn library_with(
    options: &serde_json::Map<String, serde_json::Value>,
    audit_group: Option<&str>,
    sharded: bool,
) -> String {
    let mut table = configured_table(options, audit_group);
    if sharded {
        let sep = if table == "{}" { "" } else { ", " };
        table.insert_str(table.len() - 1, &format!("{sep}['sharded'] = true"));
    }
    let (shebang, rest) = LIBRARY
        .split_once('\n')
        .expect("lua/pulse.lua has a shebang line");
    format!("{shebang}\nlocal CONFIGURED = {table};{rest}")
}

/// The library as this instance loads it: with the audit group when the
/// instance runs the audit (an instance with the audit off loads it without,
/// so a deployment whose audit is off everywhere never creates a group that
/// nothing would consume, which would block ingest at the backlog bound).
pub fn configured_library(config: &Config) -> String {
    let audit_group = (config.database.url.is_some() && config.audit.enabled)
        .then_some(config.audit.group.as_str());
    let sharded = config.redis.topology() == Topology::Cluster;
    library_with(&configured(config), audit_group, sharded)
}

/// What the library is loaded with: [`options`], and what no call passes:
/// `pulse_publish` takes no options argument, so the `[[channels]]`
/// namespaces' history lengths (`channels`) and the publication bound
/// (`max_publish_bytes`) reach it only here.
pub fn configured(config: &Config) -> serde_json::Map<String, serde_json::Value> {
    let mut configured = options(config);
    let channels: serde_json::Map<String, serde_json::Value> = config
        .channels
        .iter()
        .map(|ns| (ns.name.clone(), ns.history.into()))
        .collect();
    configured.insert("channels".into(), channels.into());
    configured.insert(
        "max_publish_bytes".into(),
        config.redis.max_message_bytes.into(),
    );
    configured
}

/// A Lua table constructor, on one line, of `options` and the audit group.
fn configured_table(
    options: &serde_json::Map<String, serde_json::Value>,
    audit_group: Option<&str>,
) -> String {
    let mut fields: Vec<String> = options
        .iter()
        .map(|(name, value)| format!("[{}] = {}", lua_string(name), lua_value(value)))
        .collect();
    if let Some(group) = audit_group {
        fields.push(format!("['audit_group'] = {}", lua_string(group)));
    }
    format!("{{{}}}", fields.join(", "))
}

/// A Lua literal of a JSON value. JSON number text is a Lua number;
/// `null` is `nil`, which leaves the option at its built-in default, as a
/// `null` option does in a call.
fn lua_value(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Null => "nil".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua_value).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(map) => configured_table(map, None),
    }
}

/// A Lua string literal of `s`, on one line: every byte outside printable
/// ASCII, and the quote and backslash, as a decimal escape.
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

/// `FUNCTION LOAD REPLACE` the library with the built-in defaults.
pub async fn load(client: &Client) -> Result<(), fred::error::Error> {
    load_configured(client, LIBRARY).await
}

/// `FUNCTION LOAD REPLACE` a library source (see [`configured_library`]),
/// on every primary of a Cluster (fred sends it to each), or on the one
/// server otherwise.
pub async fn load_configured(client: &Client, library: &str) -> Result<(), fred::error::Error> {
    let _: Value = client.function_load_cluster(true, library).await?;
    Ok(())
}

/// The `VERSION` of `lua/pulse.lua`, what `pulse_version` answers.
pub fn library_version() -> &'static str {
    LIBRARY
        .split_once("local VERSION = '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .map(|(v, _)| v)
        .unwrap_or("")
}

/// How often a Cluster's primaries are asked for `pulse_version`: a replica
/// promoted by a failover, or a node added later, has no library until the
/// gateway loads it there, and fred reports no reconnect for it when its
/// other connections stay up.
const VERIFY_EVERY: Duration = Duration::from_secs(1);

/// `FCALL_RO pulse_version` on every primary fred knows; loads the library
/// where it is missing (or another version). Returns how many primaries
/// were checked, or the first error.
pub async fn verify_primaries(client: &Client, library: &str) -> Result<usize, fred::error::Error> {
    let Some(state) = client.cached_cluster_state() else {
        return Ok(0);
    };
    let primaries = state.unique_primary_nodes();
    for server in &primaries {
        let node = client.with_cluster_node(server.clone());
        let version: Result<String, _> = node
            .fcall_ro("pulse_version", Vec::<String>::new(), Vec::<String>::new())
            .await;
        if version.as_deref().ok() != Some(library_version()) {
            let _: Value = node.function_load(true, library).await?;
            tracing::info!(%server, "Redis functions library loaded on a primary that lacked it");
        }
    }
    Ok(primaries.len())
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
    let clustered = client.is_clustered();
    let mut verify = tokio::time::interval(VERIFY_EVERY);
    verify.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
            _ = verify.tick(), if clustered => {
                if let Err(e) = verify_primaries(&client, &library).await {
                    tracing::warn!(error = %e, "cannot check the library on every primary; retrying");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config with every option the functions get changed from its default.
    fn every_option_changed() -> Config {
        let mut config = Config::default();
        config.ingest.stream_maxlen = 1234;
        config.ingest.pattern_window = Duration::from_secs(61);
        config.ingest.pattern_fatigue_threshold = 9;
        config.ingest.kill_rate_window = Duration::from_secs(62);
        config.ingest.killed_ttl = Duration::from_secs(63);
        config.ingest.max_variants = 7;
        config.audit.backlog_margin = 56;
        config.ws.max_persona_id_len = 12;
        config
    }

    /// Every key of `options_json` is in the generated table with the
    /// configured value: an option added to `options` without a change
    /// above fails here, so it cannot be left out of the table unseen.
    #[test]
    fn the_table_holds_every_option() {
        let built_in = options(&Config::default());
        let changed = options(&every_option_changed());
        let sent: serde_json::Value =
            serde_json::from_str(&options_json(&every_option_changed())).unwrap();
        assert_eq!(sent, serde_json::Value::Object(changed.clone()));
        let table = configured_table(&changed, None);
        for (name, value) in &changed {
            assert_ne!(
                built_in[name], *value,
                "change {name} in every_option_changed"
            );
            assert!(
                table.contains(&format!("['{name}'] = {value}")),
                "{name} = {value} in {table}"
            );
        }
        assert_eq!(table.matches(" = ").count(), changed.len(), "{table}");
        assert!(!table.contains("['audit_group']"));
    }

    #[test]
    fn the_table_follows_the_shebang_on_the_second_line() {
        let mut config = every_option_changed();
        config.database.url = Some("postgres://unused".into());
        let lib = configured_library(&config);
        let (first, rest) = lib.split_once('\n').unwrap();
        assert_eq!(first, "#!lua name=pulse");
        assert_eq!(first, LIBRARY.lines().next().unwrap());
        let table = configured_table(&configured(&config), Some("audit"));
        assert!(
            table.contains("['channels'] = {['task'] = 10000}"),
            "{table}"
        );
        assert!(table.contains("['max_publish_bytes'] = 1048576"), "{table}");
        let second = LIBRARY.lines().nth(1).unwrap();
        assert_eq!(
            rest.lines().next().unwrap(),
            format!("local CONFIGURED = {table};{second}")
        );
        assert!(table.ends_with(", ['audit_group'] = 'audit'}"), "{table}");
        // Lua's error line numbers stay those of lua/pulse.lua.
        assert_eq!(lib.lines().count(), LIBRARY.lines().count());
        assert!(lib.ends_with(&LIBRARY[LIBRARY.find('\n').unwrap() + second.len() + 1..]));

        config.audit.enabled = false;
        assert!(!configured_library(&config).contains("['audit_group']"));
    }

    #[test]
    fn the_version_is_read_from_the_library() {
        assert!(!library_version().is_empty());
        assert!(LIBRARY.contains(&format!("local VERSION = '{}'", library_version())));
    }

    #[test]
    fn a_cluster_library_publishes_sharded() {
        let mut config = Config::default();
        assert!(!configured_library(&config).contains("['sharded']"));
        config.redis.url = "redis-cluster://127.0.0.1:7000".into();
        let lib = configured_library(&config);
        let second = lib.lines().nth(1).unwrap();
        assert!(second.contains(", ['sharded'] = true};"), "{second}");
        let bare = library_with(&serde_json::Map::new(), None, true);
        assert!(bare.contains("local CONFIGURED = {['sharded'] = true};"));
    }

    #[test]
    fn strings_are_safe_lua_literals_on_one_line() {
        assert_eq!(
            lua_string("it's a \\ ]] \n group é"),
            "'it\\039s a \\092 ]] \\010 group \\195\\169'"
        );
        let lib = library_with_defaults(&serde_json::Map::new(), Some("a'b"));
        assert!(lib.contains("local CONFIGURED = {['audit_group'] = 'a\\039b'};--[["));
        let value = serde_json::json!({"n": null, "b": true, "x": [1.5, "s"]});
        assert_eq!(
            lua_value(&value),
            "{['b'] = true, ['n'] = nil, ['x'] = {1.5, 's'}}"
        );
    }
}
