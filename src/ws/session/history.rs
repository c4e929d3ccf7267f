//! A `[[channels]]` channel's first frames. Such a channel has no aggregate
//! snapshot: a subscribe without `since` gets the newest `recent` entries
//! of its history (none without history) and an ack naming the newest
//! offset; `since` resumes exactly as for personas (the missed entries,
//! `recovered: true`), and when the offset is gone the client gets the
//! newest `recent` entries with `recovered: false`.

use crate::app::App;
use crate::channel_name::ChannelId;
use crate::hub::message::{self, Bounds};
use crate::redis::recent;
use crate::redis::replay::Replayed;
use crate::stream::{format_offset, Offset};

use super::initial::First;

pub(super) async fn first(app: &App, channel: &ChannelId, since: Option<Offset>) -> First {
    let (history, recent) = app
        .config
        .namespace(channel.namespace())
        .map_or((0, 0), |ns| (ns.history, ns.recent));
    if history == 0 {
        return First {
            frames: Vec::new(),
            covered: None,
            offset: None,
            recovered: false,
        };
    }
    if let Some(since) = since {
        if let Some(first) = resume(app, channel, since).await {
            return first;
        }
    }
    newest(app, channel, recent).await
}

/// The entries after `since`; `None` (counted by reason) when they cannot all be had.
async fn resume(app: &App, channel: &ChannelId, since: Offset) -> Option<First> {
    let stream = app.hub.keys().channel_stream(channel.as_str());
    let reason = match app
        .replays
        .since_in(&app.redis, stream, channel.as_str(), since)
        .await
    {
        Ok(replayed) => match &*replayed {
            Replayed::Complete { messages, last, .. } => {
                app.metrics.resume("complete");
                return Some(First {
                    frames: messages
                        .iter()
                        .map(|(o, m)| message::wrap(m.as_bytes(), Some(*o), channel.as_str()))
                        .collect(),
                    covered: Some(*last),
                    offset: Some(format_offset(since)),
                    recovered: true,
                });
            }
            Replayed::Unrecoverable(reason) => *reason,
        },
        Err(e) => {
            tracing::warn!(%channel, error = %e, "cannot read the channel's history to resume");
            "redis_error"
        }
    };
    app.metrics.resume(reason);
    None
}

/// The newest `n` entries, and the newest offset as what they cover.
async fn newest(app: &App, channel: &ChannelId, n: usize) -> First {
    let stream = app.hub.keys().channel_stream(channel.as_str());
    let bounds = Bounds {
        max_bytes: app.config.redis.max_message_bytes,
        max_depth: app.config.limits.max_json_depth,
    };
    let label = channel.as_str();
    match recent::read(&app.redis, &stream, n, bounds, &app.metrics, label).await {
        Ok(r) => First {
            frames: r
                .messages
                .iter()
                .map(|(o, m)| message::wrap(m.as_bytes(), Some(*o), label))
                .collect(),
            covered: r.newest,
            offset: r.newest.map(format_offset),
            recovered: false,
        },
        Err(e) => {
            tracing::warn!(%channel, error = %e, "cannot read the channel's history");
            First {
                frames: Vec::new(),
                covered: None,
                offset: None,
                recovered: false,
            }
        }
    }
}
