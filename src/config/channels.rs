//! `[[channels]]`: channel namespaces besides the built-in `persona`
//! (`docs/protocol.md`, "Channels"). Each entry declares one namespace:
//! whether its channels keep a history (a Redis stream) and how long,
//! what a fresh subscriber gets from it, how a lagging client's queue
//! conflates it, how many subscribers one channel may have, and who may
//! subscribe.

use serde::{Deserialize, Serialize};

use super::{ConfigError, Role, WsConfig};
use crate::channel_name::{valid_namespace, PERSONA, SYSTEM};

/// Longest history a namespace may keep per channel (a Redis stream).
pub const MAX_HISTORY: usize = 10_000_000;
/// Most segments of a `conflate` path.
const MAX_PATH_SEGMENTS: usize = 8;

/// What, besides the role, grants a channel of the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grant {
    /// The token's `channels` claim must list the channel (`<ns>:<id>`),
    /// its namespace (`<ns>:*`) or everything (`*`).
    Claim,
    /// The role alone.
    Role,
}

/// One `[[channels]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceConfig {
    /// The namespace: 1-32 of `[a-z0-9_-]`, not `persona` or `system`. Required.
    pub name: String,
    /// Entries kept per channel (a stream trimmed to about this length);
    /// 0: no history, so no `since` and no backlog. Default: 0.
    pub history: usize,
    /// The newest entries of history a subscribe without `since` (or a
    /// resume that cannot be had) gets; at most `history` and below
    /// `ws.max_replay`. Default: 0.
    pub recent: usize,
    /// A dot-separated JSON field path (`data.task_id`): publications with
    /// the same value there replace each other in a lagging client's queue
    /// (latest wins). None: lossless. Default: none.
    pub conflate: Option<String>,
    /// Subscribers one channel may have on this gateway process; 0: no
    /// bound. Default: 0.
    pub max_subscribers: usize,
    /// The least role that may subscribe (with auth on). Default: `viewer`.
    pub role: Role,
    /// `claim` (the token's `channels` claim must grant the channel) or
    /// `role` (the role is enough). Default: `claim`.
    pub grant: Grant,
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            history: 0,
            recent: 0,
            conflate: None,
            max_subscribers: 0,
            role: Role::Viewer,
            grant: Grant::Claim,
        }
    }
}

impl NamespaceConfig {
    /// The `conflate` path's segments (validated at start).
    pub fn conflate_path(&self) -> Option<Vec<String>> {
        self.conflate
            .as_ref()
            .map(|p| p.split('.').map(str::to_owned).collect())
    }
}

/// The demo's namespace: an agent platform's task stream (`pulsegate simulate`).
pub fn defaults() -> Vec<NamespaceConfig> {
    vec![NamespaceConfig {
        name: "task".into(),
        history: 10_000,
        recent: 1000,
        ..NamespaceConfig::default()
    }]
}

pub fn validate(namespaces: &[NamespaceConfig], ws: &WsConfig) -> Result<(), ConfigError> {
    for (i, ns) in namespaces.iter().enumerate() {
        let key = |field: &str| format!("channels[{i}].{field}");
        if !valid_namespace(&ns.name) {
            return Err(ConfigError::new(
                &key("name"),
                format!("`{}` is not 1-32 of [a-z0-9_-]", ns.name),
            ));
        }
        if ns.name == PERSONA || ns.name == SYSTEM {
            return Err(ConfigError::new(
                &key("name"),
                format!("`{}` is a reserved namespace", ns.name),
            ));
        }
        if namespaces[..i].iter().any(|n| n.name == ns.name) {
            return Err(ConfigError::new(
                &key("name"),
                format!("namespace `{}` is declared twice", ns.name),
            ));
        }
        if ns.history > MAX_HISTORY {
            return Err(ConfigError::new(
                &key("history"),
                format!("must be at most {MAX_HISTORY}"),
            ));
        }
        if ns.recent > ns.history {
            return Err(ConfigError::new(
                &key("recent"),
                "must be at most `history`",
            ));
        }
        if ns.recent >= ws.queue_max_messages || ns.recent > ws.max_replay {
            return Err(ConfigError::new(
                &key("recent"),
                "must be at most ws.max_replay (the entries must fit the client's queue)",
            ));
        }
        if let Some(path) = &ns.conflate {
            let segments: Vec<&str> = path.split('.').collect();
            let bad = segments.len() > MAX_PATH_SEGMENTS
                || segments
                    .iter()
                    .any(|s| s.is_empty() || s.len() > 64 || s.contains(char::is_whitespace));
            if bad {
                return Err(ConfigError::new(
                    &key("conflate"),
                    format!(
                        "`{path}` is not a dot-separated field path of at most {MAX_PATH_SEGMENTS} names"
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ns: NamespaceConfig) -> Result<(), String> {
        validate(&[ns], &WsConfig::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn refuses_bad_namespaces() {
        let ok = NamespaceConfig {
            name: "task".into(),
            history: 10,
            recent: 5,
            conflate: Some("data.task_id".into()),
            ..NamespaceConfig::default()
        };
        assert_eq!(check(ok.clone()), Ok(()));
        for (change, key) in [
            (
                NamespaceConfig {
                    name: "".into(),
                    ..ok.clone()
                },
                "channels[0].name",
            ),
            (
                NamespaceConfig {
                    name: "Task".into(),
                    ..ok.clone()
                },
                "channels[0].name",
            ),
            (
                NamespaceConfig {
                    name: "persona".into(),
                    ..ok.clone()
                },
                "channels[0].name",
            ),
            (
                NamespaceConfig {
                    name: "system".into(),
                    ..ok.clone()
                },
                "channels[0].name",
            ),
            (
                NamespaceConfig {
                    recent: 11,
                    ..ok.clone()
                },
                "channels[0].recent",
            ),
            (
                NamespaceConfig {
                    conflate: Some("data..x".into()),
                    ..ok.clone()
                },
                "channels[0].conflate",
            ),
        ] {
            let e = check(change).unwrap_err();
            assert!(e.contains(key), "{e}");
        }
        let twice = validate(&[ok.clone(), ok], &WsConfig::default()).unwrap_err();
        assert_eq!(twice.key, "channels[1].name");
    }
}
