//! `/ws` channel names: `<namespace>:<id>` (DECISIONS #8). `persona` is the
//! built-in namespace, `system` is reserved for the gateway's own channels;
//! every other namespace is declared in `[[channels]]`. Parsing checks the
//! syntax only: whether a namespace exists is the subscriber's question.

use std::fmt;
use std::sync::Arc;

use crate::keys::{PersonaId, PersonaIdError};

/// Longest namespace name.
pub const MAX_NAMESPACE_LEN: usize = 32;
/// The built-in namespace of persona dashboards.
pub const PERSONA: &str = "persona";
/// Reserved for the gateway's own channels (`system:runtime`).
pub const SYSTEM: &str = "system";

/// A channel of a namespace declared in `[[channels]]`: validated
/// namespace and id, and the full name `<ns>:<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelId {
    name: Arc<str>,
    colon: usize,
}

impl ChannelId {
    pub fn namespace(&self) -> &str {
        &self.name[..self.colon]
    }

    pub fn id(&self) -> &str {
        &self.name[self.colon + 1..]
    }

    /// `<ns>:<id>`, as clients send it and the outbox keys it.
    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// What a well-formed channel name is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Channel {
    /// `persona:<id>`.
    Persona(PersonaId),
    /// `system:<id>`: reserved, served by the gateway itself.
    System(ChannelId),
    /// Any other namespace (declared or not).
    Named(ChannelId),
}

impl Channel {
    /// The full name as clients write it.
    pub fn name(&self) -> String {
        match self {
            Self::Persona(p) => crate::keys::ws_channel_name(p),
            Self::System(c) | Self::Named(c) => c.as_str().to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelNameError {
    #[error("a channel is `<namespace>:<id>`")]
    NoNamespace,
    #[error("a namespace is 1-{MAX_NAMESPACE_LEN} characters of [a-z0-9_-]")]
    BadNamespace,
    #[error("channel id is empty")]
    EmptyId,
    #[error("channel id is longer than {0} characters")]
    IdTooLong(usize),
    #[error("channel id may contain only letters, digits, '_', '-' and '.'")]
    BadId,
}

impl From<PersonaIdError> for ChannelNameError {
    fn from(e: PersonaIdError) -> Self {
        match e {
            PersonaIdError::Empty => Self::EmptyId,
            PersonaIdError::TooLong(n) => Self::IdTooLong(n),
            PersonaIdError::BadCharacter => Self::BadId,
        }
    }
}

/// Whether `ns` may name a namespace (also checked on `[[channels]].name`).
pub fn valid_namespace(ns: &str) -> bool {
    (1..=MAX_NAMESPACE_LEN).contains(&ns.len())
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}

/// Parses `<namespace>:<id>`. Ids follow the persona id rule (1..=`max_len`
/// of `[A-Za-z0-9_.-]`): no braces or colons, which would break the Redis
/// hash tag `{<ns>:<id>}`.
pub fn parse(name: &str, max_len: usize) -> Result<Channel, ChannelNameError> {
    let (ns, id) = name.split_once(':').ok_or(ChannelNameError::NoNamespace)?;
    if !valid_namespace(ns) {
        return Err(ChannelNameError::BadNamespace);
    }
    // The same rule as persona ids, so one check covers both.
    let checked = PersonaId::parse(id, max_len)?;
    if ns == PERSONA {
        return Ok(Channel::Persona(checked));
    }
    let c = ChannelId {
        name: name.into(),
        colon: ns.len(),
    };
    Ok(if ns == SYSTEM {
        Channel::System(c)
    } else {
        Channel::Named(c)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespaces_and_ids() {
        let Ok(Channel::Named(c)) = parse("task:123", 64) else {
            panic!("task:123");
        };
        assert_eq!(
            (c.namespace(), c.id(), c.as_str()),
            ("task", "123", "task:123")
        );
        assert!(matches!(parse("persona:p1", 64), Ok(Channel::Persona(p)) if p.as_str() == "p1"));
        assert!(matches!(
            parse("system:runtime", 64),
            Ok(Channel::System(_))
        ));
        assert_eq!(parse("task", 64), Err(ChannelNameError::NoNamespace));
        assert_eq!(parse(":1", 64), Err(ChannelNameError::BadNamespace));
        assert_eq!(parse("Task:1", 64), Err(ChannelNameError::BadNamespace));
        assert_eq!(parse("task:", 64), Err(ChannelNameError::EmptyId));
        assert_eq!(parse("task:a:b", 64), Err(ChannelNameError::BadId));
        assert_eq!(parse("task:{x}", 64), Err(ChannelNameError::BadId));
        assert_eq!(
            parse(&format!("task:{}", "a".repeat(65)), 64),
            Err(ChannelNameError::IdTooLong(64))
        );
        assert_eq!(
            parse(&format!("{}:1", "n".repeat(33)), 64),
            Err(ChannelNameError::BadNamespace)
        );
    }
}
