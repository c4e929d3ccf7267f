//! Persona ids and the Redis names derived from them.
//!
//! Every key and channel of a persona carries `{<persona_id>}` as a Redis
//! Cluster hash tag, so one persona lives in one slot and the Lua functions
//! touch only keys of that slot.

use std::fmt;
use std::sync::Arc;

/// A validated persona id: 1..=`max_len` characters of `[A-Za-z0-9_.-]`.
/// Braces and colons are refused because they would break the hash tag and
/// the key layout.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PersonaId(Arc<str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersonaIdError {
    #[error("persona id is empty")]
    Empty,
    #[error("persona id is longer than {0} characters")]
    TooLong(usize),
    #[error("persona id may contain only letters, digits, '_', '-' and '.'")]
    BadCharacter,
}

impl PersonaId {
    pub fn parse(raw: &str, max_len: usize) -> Result<Self, PersonaIdError> {
        if raw.is_empty() {
            return Err(PersonaIdError::Empty);
        }
        if raw.len() > max_len {
            return Err(PersonaIdError::TooLong(max_len));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(PersonaIdError::BadCharacter);
        }
        Ok(Self(raw.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PersonaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Builds Redis names from the configured prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: Arc<str>,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `pulse:{<persona>}`: the base every persona key extends (`KEYS[1]` of the Lua functions).
    pub fn base(&self, persona: &PersonaId) -> String {
        format!("{}:{{{}}}", self.prefix, persona)
    }

    /// `pulse:{<persona>}:events`: the persona's pub/sub channel.
    pub fn channel(&self, persona: &PersonaId) -> String {
        format!("{}:{{{}}}:events", self.prefix, persona)
    }

    /// `pulse:{<persona>}:stream`: the persona's event stream.
    pub fn stream(&self, persona: &PersonaId) -> String {
        format!("{}:{{{}}}:stream", self.prefix, persona)
    }

    /// `pulse:{<ns>:<id>}` for a validated `[[channels]]` channel
    /// (`channel_name::ChannelId::as_str`): its base, the whole
    /// channel as the hash tag (DECISIONS #8; `KEYS[1]` of `pulse_publish`).
    pub fn channel_base(&self, channel: &str) -> String {
        format!("{}:{{{}}}", self.prefix, channel)
    }

    /// `pulse:{<ns>:<id>}:events`: its pub/sub channel.
    pub fn channel_events(&self, channel: &str) -> String {
        format!("{}:{{{}}}:events", self.prefix, channel)
    }

    /// `pulse:{<ns>:<id>}:stream`: its history, when the namespace keeps one.
    pub fn channel_stream(&self, channel: &str) -> String {
        format!("{}:{{{}}}:stream", self.prefix, channel)
    }
}

/// The public name of a persona on the multiplexed `/ws` endpoint: `persona:<id>`.
pub fn ws_channel_name(persona: &PersonaId) -> String {
    format!("persona:{persona}")
}

/// Parses `persona:<id>` as sent in `subscribe`/`unsubscribe`.
pub fn parse_ws_channel(name: &str, max_len: usize) -> Result<PersonaId, PersonaIdError> {
    let id = name
        .strip_prefix("persona:")
        .ok_or(PersonaIdError::BadCharacter)?;
    PersonaId::parse(id, max_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persona_ids() {
        assert!(PersonaId::parse("persona_alpha-1.x", 64).is_ok());
        assert_eq!(PersonaId::parse("", 64), Err(PersonaIdError::Empty));
        assert_eq!(
            PersonaId::parse("a{b}", 64),
            Err(PersonaIdError::BadCharacter)
        );
        assert_eq!(
            PersonaId::parse("a:b", 64),
            Err(PersonaIdError::BadCharacter)
        );
        assert_eq!(PersonaId::parse("é", 64), Err(PersonaIdError::BadCharacter));
        assert_eq!(
            PersonaId::parse(&"a".repeat(65), 64),
            Err(PersonaIdError::TooLong(64))
        );
    }

    #[test]
    fn names_share_the_hash_tag() {
        let keys = Keys::new("pulse");
        let p = PersonaId::parse("p1", 64).unwrap();
        assert_eq!(keys.channel(&p), "pulse:{p1}:events");
        assert_eq!(keys.stream(&p), "pulse:{p1}:stream");
        assert_eq!(keys.base(&p), "pulse:{p1}");
        assert_eq!(parse_ws_channel("persona:p1", 64).unwrap(), p);
        assert!(parse_ws_channel("room:p1", 64).is_err());
        assert_eq!(keys.channel_events("task:7"), "pulse:{task:7}:events");
        assert_eq!(keys.channel_stream("task:7"), "pulse:{task:7}:stream");
        assert_eq!(keys.channel_base("task:7"), "pulse:{task:7}");
    }
}
