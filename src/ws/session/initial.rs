//! What a client gets first: the persona's snapshot as `initial_data`, or,
//! resuming with `since`, the events it missed (`docs/decisions.md` D3).

use crate::app::App;
use crate::keys::PersonaId;
use crate::protocol::frame;
use crate::redis::replay::Replayed;
use crate::snapshot;
use crate::stream::Offset;

/// The events missed since `since`, or a fresh snapshot marked
/// `recovered: false` when they cannot all be had.
pub(super) async fn resume(
    app: &App,
    persona: &PersonaId,
    since: Offset,
) -> (Vec<bytes::Bytes>, Option<Offset>) {
    let reason = match app.replays.since(&app.redis, persona, since).await {
        Ok(replayed) => match &*replayed {
            Replayed::Complete { frames, last } => {
                app.metrics.resume("complete");
                return (frames.clone(), Some(*last));
            }
            Replayed::Unrecoverable(reason) => *reason,
        },
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
