//! What a client gets first on a channel: the persona's snapshot as
//! `initial_data`, or, resuming with `since`, the events it missed
//! (`docs/decisions.md` D3, D6). On `/ws` (`channel` given) the snapshot
//! names its channel and the missed events come in `message` envelopes.

use bytes::Bytes;

use crate::app::App;
use crate::hub::message;
use crate::keys::PersonaId;
use crate::metrics::ReadPath;
use crate::protocol::frame;
use crate::redis::replay::{self, Replay};
use crate::snapshot;
use crate::stream::{format_offset, parse_offset, Offset};
use crate::undecodable;

/// A channel's first frames and the point they are current to.
pub(super) struct First {
    /// The snapshot, or the missed events in order.
    pub frames: Vec<Bytes>,
    /// Publications at or before this offset are in `frames` already.
    pub covered: Option<Offset>,
    /// The offset a `/ws` `subscribed` ack names: the snapshot's, or `since`
    /// when the missed events follow.
    pub offset: Option<String>,
    /// True when `frames` are the events after `since` (no snapshot).
    pub recovered: bool,
}

/// The snapshot, or with `since` the events missed since then (a fresh
/// snapshot marked `recovered: false` when they cannot all be had).
pub(super) async fn first(
    app: &App,
    persona: &PersonaId,
    since: Option<Offset>,
    channel: Option<&str>,
) -> First {
    let recovered = match since {
        Some(since) => match resume(app, persona, since, channel).await {
            Some(first) => return first,
            None => Some(false),
        },
        None => None,
    };
    let (frame, covered, offset) = snapshot_frame(app, persona, channel, recovered).await;
    First {
        frames: vec![frame],
        covered,
        offset,
        recovered: false,
    }
}

/// The events missed since `since`; `None` (counted by reason) when they
/// cannot all be had.
async fn resume(
    app: &App,
    persona: &PersonaId,
    since: Offset,
    channel: Option<&str>,
) -> Option<First> {
    let key = app.hub.keys().stream(persona);
    let max = app.config.ws.max_replay;
    let reason = match replay::since(&app.redis, &key, since, max).await {
        Ok(Replay::Complete {
            messages,
            last,
            undecodable,
        }) => {
            for (id, action) in &undecodable {
                let (metrics, p) = (&app.metrics, persona.as_str());
                undecodable::report(metrics, ReadPath::Replay, *action, p, Some(id));
            }
            app.metrics.resume("complete");
            let frames = messages
                .iter()
                .map(|(offset, m)| match channel {
                    Some(channel) => message::wrap(m.as_bytes(), Some(*offset), channel),
                    None => frame::text(m.as_bytes()),
                })
                .collect();
            return Some(First {
                frames,
                covered: Some(last),
                offset: Some(format_offset(since)),
                recovered: true,
            });
        }
        Ok(Replay::Unrecoverable(reason)) => reason,
        Err(e) => {
            tracing::warn!(%persona, error = %e, "cannot read the stream to resume");
            "redis_error"
        }
    };
    app.metrics.resume(reason);
    None
}

/// The `initial_data` frame, the offset it covers and that offset's text.
pub(super) async fn snapshot_frame(
    app: &App,
    persona: &PersonaId,
    channel: Option<&str>,
    recovered: Option<bool>,
) -> (Bytes, Option<Offset>, Option<String>) {
    let snap = match snapshot::fetch(&app.source, persona).await {
        Ok(snap) => snap,
        Err(e) => {
            tracing::warn!(%persona, error = %e, "snapshot unavailable");
            snapshot::Snapshot::empty()
        }
    };
    let covered = snap.offset.as_deref().and_then(parse_offset);
    let frame = frame::text(&snap.to_message(channel, recovered));
    (frame, covered, snap.offset)
}
