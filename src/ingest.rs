//! Event ingest over HTTP: the body is parsed (simd-json), checked for what
//! the gateway itself needs (`persona_id`, the event type of the route), and
//! handed to `FCALL pulse_ingest`, which validates the rest and applies it
//! atomically. Errors name the field.

use fred::prelude::*;
use simd_json::prelude::*;

use crate::app::App;
use crate::keys::PersonaId;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body or a field of it is wrong: 400.
    #[error("{message}")]
    Invalid { field: String, message: String },
    /// The caller's token does not grant the persona of the event: 403.
    #[error("{0}")]
    Forbidden(String),
    /// The event names a variant Redis does not know: 404.
    #[error("{message}")]
    UnknownVariant { field: String, message: String },
    /// The event conflicts with the variant's state (duplicate post, already killed): 409.
    #[error("{message}")]
    Conflict {
        code: String,
        field: String,
        message: String,
    },
    /// The audit trail is too far behind to take more without losing history: 503.
    #[error("{0}")]
    BacklogFull(String),
    /// Ingest is refused for now (Redis unreachable): 503.
    #[error("{0}")]
    Unavailable(String),
}

/// An accepted event: its stream id.
pub struct Accepted {
    pub event_id: String,
    pub persona: PersonaId,
}

fn invalid(field: &str, message: impl Into<String>) -> IngestError {
    IngestError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Parses `body` as an event of `event_type` and ingests it.
pub async fn ingest(
    app: &App,
    event_type: &str,
    body: &mut [u8],
    claims: Option<&crate::auth::Claims>,
) -> Result<Accepted, IngestError> {
    let (persona, event) = prepare(
        event_type,
        body,
        app.config.ws.max_persona_id_len,
        app.config.limits.max_json_depth,
    )?;
    if let Some(c) = claims {
        if !c.allows_persona(persona.as_str()) {
            return Err(IngestError::Forbidden(format!(
                "this token does not grant persona `{persona}`"
            )));
        }
    }
    let base = app.hub.keys().base(&persona);
    let result: Result<String, fred::error::Error> = app
        .redis
        .fcall(
            "pulse_ingest",
            vec![base],
            vec![event.as_str(), &*app.source.options],
        )
        .await;
    match result {
        Ok(event_id) => Ok(Accepted { event_id, persona }),
        Err(e) => Err(from_redis(&e)),
    }
}

/// Checks the body and returns the persona and the event JSON for the function.
/// Nesting past `max_depth` is refused before the parser recurses into it.
pub fn prepare(
    event_type: &str,
    body: &mut [u8],
    max_persona_len: usize,
    max_depth: usize,
) -> Result<(PersonaId, String), IngestError> {
    crate::json_limit::check_depth(body, max_depth)
        .map_err(|e| invalid("body", format!("body is not valid JSON: {e}")))?;
    let mut value = simd_json::to_borrowed_value(body)
        .map_err(|e| invalid("body", format!("body is not valid JSON: {e}")))?;
    let Some(obj) = value.as_object_mut() else {
        return Err(invalid("body", "body must be a JSON object"));
    };
    let persona = match obj.remove("persona_id") {
        Some(v) => match v.as_str() {
            Some(s) => PersonaId::parse(s, max_persona_len)
                .map_err(|e| invalid("persona_id", e.to_string()))?,
            None => return Err(invalid("persona_id", "persona_id must be a string")),
        },
        None => return Err(invalid("persona_id", "persona_id is required")),
    };
    match obj.get("type").map(|t| t.as_str()) {
        None => {
            obj.insert("type".into(), event_type.into());
        }
        Some(Some(t)) if t == event_type => {}
        Some(_) => {
            return Err(invalid(
                "type",
                format!("this route takes `{event_type}` events; omit `type` or set it to that"),
            ))
        }
    }
    let json = simd_json::to_string(&value).map_err(|e| invalid("body", e.to_string()))?;
    Ok((persona, json))
}

/// Maps the function's error (`<CODE> field=<field>: <what>`) to an [`IngestError`].
pub fn from_redis(e: &fred::error::Error) -> IngestError {
    let details = e.details();
    let (code, rest) = details.split_once(' ').unwrap_or((details, ""));
    let field = rest
        .strip_prefix("field=")
        .and_then(|r| r.split_once(':'))
        .map(|(f, _)| f.to_owned())
        .unwrap_or_default();
    let message = details.to_owned();
    match code {
        "INVALID" => IngestError::Invalid { field, message },
        "UNKNOWN_VARIANT" => IngestError::UnknownVariant { field, message },
        "DUPLICATE" | "ALREADY_KILLED" => IngestError::Conflict {
            code: code.to_ascii_lowercase(),
            field,
            message,
        },
        "BACKLOG" => IngestError::BacklogFull(message),
        _ => IngestError::Unavailable(format!("Redis could not ingest the event: {details}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prep(t: &str, body: &str) -> Result<(PersonaId, String), IngestError> {
        prepare(t, &mut body.as_bytes().to_vec(), 64, 64)
    }

    #[test]
    fn refuses_deep_bodies_naming_the_body() {
        for (open, close) in [("{\"a\":", "}"), ("[", "]")] {
            let body = format!(
                r#"{{"persona_id":"p1","x":{}1{}}}"#,
                open.repeat(100_000),
                close.repeat(100_000)
            );
            match prep("performance_update", &body) {
                Err(IngestError::Invalid { field, message }) => {
                    assert_eq!(field, "body");
                    assert!(message.contains("deeper than 64"), "{message}");
                }
                other => panic!("{:?}", other.map(|(p, j)| (p.to_string(), j))),
            }
        }
    }

    #[test]
    fn prepares_events() {
        let (p, json) = prep("early_kill", r#"{"persona_id":"p1","variant_id":"v"}"#).unwrap();
        assert_eq!(p.as_str(), "p1");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"variant_id": "v", "type": "early_kill"})
        );
        assert!(prep("early_kill", r#"{"persona_id":"p1","type":"early_kill"}"#).is_ok());
        let field = |r: Result<(PersonaId, String), IngestError>| match r {
            Err(IngestError::Invalid { field, .. }) => field,
            _ => "ok".into(),
        };
        assert_eq!(field(prep("early_kill", "nope")), "body");
        assert_eq!(field(prep("early_kill", "[]")), "body");
        assert_eq!(
            field(prep("early_kill", r#"{"variant_id":"v"}"#)),
            "persona_id"
        );
        assert_eq!(
            field(prep("early_kill", r#"{"persona_id":"a b"}"#)),
            "persona_id"
        );
        assert_eq!(
            field(prep("early_kill", r#"{"persona_id":7}"#)),
            "persona_id"
        );
        assert_eq!(
            field(prep(
                "early_kill",
                r#"{"persona_id":"p","type":"variant_posted"}"#
            )),
            "type"
        );
    }
}
