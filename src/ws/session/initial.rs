//! What a client gets first: the persona's snapshot as `initial_data`, or,
//! resuming with `since`, the events it missed (`docs/decisions.md` D3).

use crate::app::App;
use crate::keys::PersonaId;
use crate::metrics::ReadPath;
use crate::protocol::frame;
use crate::redis::replay::{self, Replay};
use crate::snapshot;
use crate::stream::Offset;
use crate::undecodable;

/// The events missed since `since`, or a fresh snapshot marked
/// `recovered: false` when they cannot all be had.
pub(super) async fn resume(
    app: &App,
    persona: &PersonaId,
    since: Offset,
) -> (Vec<bytes::Bytes>, Option<Offset>) {
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
            let frames = messages.iter().map(|m| frame::text(m.as_bytes())).collect();
            return (frames, Some(last));
        }
        Ok(Replay::Unrecoverable(reason)) => reason,
        Err(e) => {
            tracing::warn!(%persona, error = %e, "cannot read the stream to resume");
            "redis_error"
        }
    };
    app.metrics.resume(reason);
    let (frame, covered) = snapshot_frame(app, persona, None, Some(false)).await;
    (vec![frame], covered)
}

/// The `initial_data` frame and the offset it covers.
pub(super) async fn snapshot_frame(
    app: &App,
    persona: &PersonaId,
    channel: Option<&str>,
    recovered: Option<bool>,
) -> (bytes::Bytes, Option<Offset>) {
    match snapshot::fetch(&app.source, persona).await {
        Ok(fetched) => (
            fetched.frame(&app.source, channel, recovered),
            fetched.covered,
        ),
        Err(e) => {
            tracing::warn!(%persona, error = %e, "snapshot unavailable");
            let snap = snapshot::Snapshot::empty();
            (frame::text(&snap.to_message(channel, recovered)), None)
        }
    }
}
