//! Publishing to a `[[channels]]` channel over HTTP: the channel name, its
//! namespace and the token's grant are checked here; the body goes as it
//! is to `FCALL pulse_publish`, which validates it (UTF-8, JSON object,
//! size), appends it to the channel's history when the namespace keeps one
//! and publishes it. Errors name the field.

use fred::prelude::*;

use crate::app::App;
use crate::auth::{Claims, Role};
use crate::channel_name::{self, Channel};
use crate::ingest::{from_redis, IngestError};
use crate::metrics::PublishRejection;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Not `<namespace>:<id>`, or a namespace not published this way: 400.
    #[error("{0}")]
    InvalidChannel(String),
    /// A namespace no `[[channels]]` entry declares: 404.
    #[error("{0}")]
    UnknownNamespace(String),
    /// What the function refused, or the token's grant.
    #[error(transparent)]
    Function(#[from] IngestError),
}

impl PublishError {
    pub fn label(&self) -> PublishRejection {
        match self {
            Self::InvalidChannel(_) => PublishRejection::InvalidChannel,
            Self::UnknownNamespace(_) => PublishRejection::UnknownNamespace,
            Self::Function(e) => match e {
                IngestError::Forbidden(_) => PublishRejection::Forbidden,
                IngestError::BacklogFull(_) => PublishRejection::AuditBacklogFull,
                IngestError::Unavailable(_) => PublishRejection::Unavailable,
                _ => PublishRejection::Invalid,
            },
        }
    }
}

/// An accepted publication: its offset when the namespace keeps history.
pub struct Published {
    pub channel: String,
    pub offset: Option<String>,
}

/// Publishes `body` (a JSON object) on channel `name`.
pub async fn publish(
    app: &App,
    name: &str,
    body: &[u8],
    claims: Option<&Claims>,
) -> Result<Published, PublishError> {
    let channel = match channel_name::parse(name, app.config.ws.max_persona_id_len) {
        Ok(Channel::Named(c)) => c,
        Ok(Channel::Persona(_)) => {
            return Err(PublishError::InvalidChannel(
                "persona channels take events through POST /api/events/*".into(),
            ))
        }
        Ok(Channel::System(_)) => {
            return Err(PublishError::InvalidChannel(
                "`system:` channels are the gateway's own".into(),
            ))
        }
        Err(e) => {
            return Err(PublishError::InvalidChannel(format!(
                "`<namespace>:<id>` expected: {e}"
            )))
        }
    };
    let Some(ns) = app.config.namespace(channel.namespace()) else {
        return Err(PublishError::UnknownNamespace(format!(
            "no namespace `{}` on this gateway",
            channel.namespace()
        )));
    };
    if let Some(c) = claims {
        if !c.allows_channel(ns, &channel, Role::Publisher) {
            return Err(
                IngestError::Forbidden(format!("this token does not grant {channel}")).into(),
            );
        }
    }
    // The function refuses what is not UTF-8 too; this names the field the
    // same way before a round trip.
    let text = std::str::from_utf8(body).map_err(|_| IngestError::Invalid {
        field: "message".into(),
        message: "INVALID field=message: is not valid UTF-8".into(),
    })?;
    crate::json_limit::check_depth(body, app.config.limits.max_json_depth).map_err(|e| {
        IngestError::Invalid {
            field: "message".into(),
            message: format!("INVALID field=message: {e}"),
        }
    })?;
    let base = app.hub.keys().channel_base(channel.as_str());
    let offset: Option<String> = app
        .redis
        .fcall("pulse_publish", vec![base], vec![text])
        .await
        .map_err(|e| from_redis(&e))?;
    Ok(Published {
        channel: channel.to_string(),
        offset,
    })
}
