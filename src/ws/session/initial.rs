//! What a client gets first on a channel: the persona's snapshot as
//! `initial_data`, or, resuming with `since`, the events it missed
//! (`docs/decisions.md` D3, D6): from the channel's recent publications
//! when this process saw them all, from Redis otherwise. On `/ws` (`channel` given) the snapshot
//! names its channel and the missed events come in `message` envelopes.

use std::time::Duration;

use bytes::Bytes;

use crate::app::App;
use crate::hub::message;
use crate::hub::recent::Lookup;
use crate::keys::PersonaId;
use crate::metrics::Read;
use crate::protocol::extension::Deflate;
use crate::protocol::frame;
use crate::redis::replay::Replayed;
use crate::snapshot;
use crate::stream::{format_offset, Offset};

/// Longest a resume waits for a new channel's window (one `XREVRANGE`
/// after the `SUBSCRIBE`, queued behind the other channels' first reads)
/// before it replays from Redis on its own.
const PRIME_WAIT: Duration = Duration::from_secs(2);
/// Attempts at a snapshot or replay that Redis fails (a command timeout
/// while it or this gateway is overloaded) before the client gets what a
/// failure gives: an empty snapshot, or `recovered: false`. A short stall
/// then costs the client a wait, not its history.
const READ_ATTEMPTS: u32 = 3;
/// The pause before the second attempt; doubled before each later one.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Runs `read` until it succeeds or [`READ_ATTEMPTS`] have failed, pausing
/// between attempts; each retry is counted as `kind`. Concurrent callers
/// that failed together retry together, so they share the next read too.
async fn with_retries<T, E, F, Fut>(app: &App, kind: Read, mut read: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut pause = RETRY_PAUSE;
    let mut attempt = 1;
    loop {
        match read().await {
            Err(_) if attempt < READ_ATTEMPTS => {
                app.metrics.reads.retried(kind);
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            done => return done,
        }
    }
}

/// A channel's first frames and the point they are current to.
pub(crate) struct First {
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
/// `deflate`: the connection's permessage-deflate, for the snapshot's
/// compressed form, shared with the other clients of its read.
pub(crate) async fn first(
    app: &App,
    persona: &PersonaId,
    since: Option<Offset>,
    channel: Option<&str>,
    deflate: Option<Deflate>,
) -> First {
    let recovered = match since {
        Some(since) => match resume(app, persona, since, channel).await {
            Some(first) => return first,
            None => Some(false),
        },
        None => None,
    };
    let (frame, covered, offset) = snapshot_frame(app, persona, channel, recovered, deflate).await;
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
    let max = app.config.ws.max_replay;
    // A channel this process has just started following reads its window
    // once: the resumes that arrive meanwhile share that read.
    if app.hub.primed_within(persona, PRIME_WAIT).await {
        app.metrics.reads.recent_waited.inc();
    }
    if let Lookup::Missed(missed) = app.hub.recent_since(persona, since, max) {
        app.metrics.reads.replay_recent.inc();
        app.metrics.resume("complete");
        let last = missed.last().map_or(since, |(offset, _)| *offset);
        let frames = missed
            .iter()
            .map(|(offset, m)| match channel {
                Some(channel) => message::wrap(m, Some(*offset), channel),
                None => frame::text(m),
            })
            .collect();
        return Some(First {
            frames,
            covered: Some(last),
            offset: Some(format_offset(since)),
            recovered: true,
        });
    }
    // Resumes of one persona from one offset share a replay (and, on the
    // dashboard endpoint, its encoded frames).
    let replayed = with_retries(app, Read::Replay, || {
        app.replays.since(&app.redis, persona, since)
    })
    .await;
    let reason = match replayed {
        Ok(replayed) => match &*replayed {
            Replayed::Complete {
                messages,
                frames,
                last,
            } => {
                app.metrics.resume("complete");
                let frames = match channel {
                    Some(channel) => messages
                        .iter()
                        .map(|(offset, m)| message::wrap(m.as_bytes(), Some(*offset), channel))
                        .collect(),
                    None => frames.clone(),
                };
                return Some(First {
                    frames,
                    covered: Some(*last),
                    offset: Some(format_offset(since)),
                    recovered: true,
                });
            }
            Replayed::Unrecoverable(reason) => *reason,
        },
        Err(e) => {
            tracing::warn!(%persona, error = %e, "cannot read the stream to resume");
            "redis_error"
        }
    };
    app.metrics.resume(reason);
    None
}

/// The `initial_data` frame (compressed when `deflate` takes it), the
/// offset it covers and that offset's text.
pub(super) async fn snapshot_frame(
    app: &App,
    persona: &PersonaId,
    channel: Option<&str>,
    recovered: Option<bool>,
    deflate: Option<Deflate>,
) -> (Bytes, Option<Offset>, Option<String>) {
    match with_retries(app, Read::Snapshot, || {
        snapshot::fetch(&app.source, persona)
    })
    .await
    {
        Ok(fetched) => (
            fetched
                .frame(&app.source, channel, recovered)
                .for_connection(deflate, &app.metrics),
            fetched.covered,
            fetched.raw.offset.clone(),
        ),
        Err(e) => {
            tracing::warn!(%persona, error = %e, "snapshot unavailable");
            let snap = snapshot::Snapshot::empty();
            (
                frame::text(&snap.to_message(channel, recovered)),
                None,
                None,
            )
        }
    }
}
