//! Whether a `/ws` channel may be subscribed: its name, its namespace, the
//! token's grant, `since` against the namespace's history, and the
//! channel's subscriber bound. Each refusal is answered with its own error
//! code (`docs/protocol.md`, "Errors") and subscribes nothing.

use std::sync::Arc;

use super::Session;
use crate::channel_name::{self, Channel};
use crate::hub::{Mode, Subscription};
use crate::protocol::error_code;
use crate::stream::Offset;

impl Session {
    /// The channel `name` means, or `None` after answering `invalid_channel`.
    pub(super) fn resolve(&self, name: &str) -> Option<Channel> {
        let max_len = self.app.config.ws.max_persona_id_len;
        match channel_name::parse(name, max_len) {
            Ok(c) => Some(c),
            Err(e) => {
                self.error(
                    error_code::INVALID_CHANNEL,
                    &format!("`<namespace>:<id>` expected: {e}"),
                );
                None
            }
        }
    }

    /// Whether the connection may subscribe to `channel` (from `since`);
    /// false after answering why not.
    pub(super) fn admit(&self, channel: &Channel, since: Option<Offset>) -> bool {
        let refuse = |code: &'static str, message: String| {
            if code == error_code::FORBIDDEN {
                self.app.metrics.auth_failure("forbidden");
            }
            self.error(code, &message);
            false
        };
        match channel {
            Channel::Persona(p) => match &self.claims {
                Some(c) if !c.allows_persona(p.as_str()) => refuse(
                    error_code::FORBIDDEN,
                    format!("this token does not grant {}", channel.name()),
                ),
                _ => true,
            },
            Channel::System(c) => refuse(
                error_code::UNKNOWN_CHANNEL,
                format!("`{c}` is not served by this gateway"),
            ),
            Channel::Named(c) => {
                let Some(ns) = self.app.config.namespace(c.namespace()) else {
                    return refuse(
                        error_code::UNKNOWN_NAMESPACE,
                        format!("no namespace `{}` on this gateway", c.namespace()),
                    );
                };
                if let Some(claims) = &self.claims {
                    if !claims.allows_channel(ns, c, ns.role) {
                        return refuse(
                            error_code::FORBIDDEN,
                            format!("this token does not grant {c}"),
                        );
                    }
                }
                if since.is_some() && ns.history == 0 {
                    return refuse(
                        error_code::NO_HISTORY,
                        format!(
                            "namespace `{}` keeps no history: subscribe without `since`",
                            ns.name
                        ),
                    );
                }
                true
            }
        }
    }

    /// The hub subscription of an admitted channel; `None` after answering
    /// `channel_full`.
    pub(super) fn join(&self, channel: &Channel) -> Option<Subscription> {
        let hub = &self.app.hub;
        match channel {
            Channel::Persona(p) => Some(hub.subscribe(p, self.outbox.clone(), Mode::Wrapped)),
            Channel::System(_) => None,
            Channel::Named(c) => {
                let ns = self.app.config.namespace(c.namespace())?;
                let conflate = ns.conflate_path().map(Arc::from);
                let sub =
                    hub.subscribe_channel(c, conflate, ns.max_subscribers, self.outbox.clone());
                if sub.is_none() {
                    self.error(
                        error_code::CHANNEL_FULL,
                        &format!("{c} has {} subscribers already", ns.max_subscribers),
                    );
                }
                sub
            }
        }
    }

    /// Whether the connection's (new) token still grants `channel`.
    pub(super) fn still_granted(&self, claims: &crate::auth::Claims, channel: &Channel) -> bool {
        match channel {
            Channel::Persona(p) => claims.allows_persona(p.as_str()),
            Channel::System(_) => true,
            Channel::Named(c) => self
                .app
                .config
                .namespace(c.namespace())
                .is_some_and(|ns| claims.allows_channel(ns, c, ns.role)),
        }
    }
}
