//! The gap-free start of one `/ws` channel, for a `subscribe` (with or
//! without `since`) and for each channel of a `refresh`; and of a
//! connection that follows one persona (`/dashboard/ws/{persona}`,
//! `/sse/{persona}`), whose whole queue is held instead ([`spawn_whole`]).
//!
//! The channel is held in the outbox first (its publications wait aside,
//! the other channels' keep flowing), then, off the read loop: wait until
//! Redis confirmed the subscription, read the snapshot or the missed events,
//! wait for room in the queue, and release the channel with its first frames
//! (`subscribed`, then `initial_data` or the missed events). The outbox then
//! drops the held and later publications those frames already cover, so
//! every event after the ack's offset arrives once, in order.

use std::sync::Arc;

use tokio::sync::{watch, Semaphore};

use super::initial::first;
use super::{history, Session};
use crate::app::App;
use crate::channel_name::Channel;
use crate::hub::outbox::{HoldId, Outbox};
use crate::keys::PersonaId;
use crate::protocol::{frame, ServerMessage};
use crate::stream::Offset;

/// One start of a channel (also of each channel of a `/sse?channel=`
/// stream, `sse/`).
pub(crate) struct Start {
    pub target: Channel,
    /// `<namespace>:<id>`, as the outbox holds it.
    pub channel: String,
    /// Resume after this offset instead of sending a snapshot.
    pub since: Option<Offset>,
    /// A `subscribe` sends its `subscribed` ack first; a `refresh` does not.
    pub ack: bool,
    /// The hold this start releases; a newer one makes it a no-op.
    pub hold: HoldId,
    /// Whether Redis confirmed the channel's subscription: reading before
    /// that could miss a publication made between the read and the SUBSCRIBE.
    pub live: watch::Receiver<bool>,
}

impl Session {
    /// Starts `channel`, already held with `hold` (before the hub
    /// subscription existed, for a new one) and in `subscriptions`.
    pub(super) fn start_channel(
        &self,
        channel: &Channel,
        hold: HoldId,
        since: Option<Offset>,
        ack: bool,
    ) {
        let Some(sub) = self.subscriptions.get(channel) else {
            return;
        };
        let start = Start {
            target: channel.clone(),
            channel: channel.name(),
            since,
            ack,
            hold,
            live: sub.live(),
        };
        spawn(&self.app, self.outbox.clone(), self.reads.clone(), start);
    }

    /// `refresh` on `/ws`: a fresh `initial_data` per subscription, each
    /// started like a subscribe (so it is exact too), except channels whose
    /// start is still under way: their first frames are coming anyway.
    pub(super) fn refresh_channels(&self) {
        for channel in self.subscriptions.keys() {
            let name = channel.name();
            if self.outbox.is_held(&name) {
                continue;
            }
            let hold = self.outbox.hold_channel(&name);
            self.start_channel(channel, hold, None, false);
        }
    }
}

/// Runs `start` on the connection's `outbox` in a task of its own, one
/// Redis read at a time per connection (`reads`).
pub(crate) fn spawn(app: &Arc<App>, outbox: Arc<Outbox>, reads: Arc<Semaphore>, start: Start) {
    app.tasks.spawn(run(app.clone(), outbox, reads, start));
}

async fn run(app: Arc<App>, outbox: Arc<Outbox>, reads: Arc<Semaphore>, mut start: Start) {
    let closing = outbox.closing().clone();
    tokio::select! {
        _ = closing.cancelled() => {}
        _ = handoff(&app, &outbox, &reads, &mut start) => {}
    }
}

async fn handoff(app: &App, outbox: &Outbox, reads: &Semaphore, start: &mut Start) {
    if start.live.wait_for(|live| *live).await.is_err() {
        // Nobody on this process follows the channel any more.
        return;
    }
    let Ok(_one_read_at_a_time) = reads.acquire().await else {
        return;
    };
    if !outbox.holds(&start.channel, start.hold) {
        // Unsubscribed, or subscribed again, meanwhile.
        return;
    }
    let first = match &start.target {
        Channel::Persona(persona) => {
            let channel = Some(start.channel.as_str());
            first(app, persona, start.since, channel, outbox.deflate()).await
        }
        Channel::Named(channel) => history::first(app, channel, start.since).await,
        // Never subscribed (`admit.rs`).
        Channel::System(_) => return,
    };
    let mut frames = Vec::with_capacity(first.frames.len() + 1);
    if start.ack {
        let ack = ServerMessage::Subscribed {
            channel: &start.channel,
            offset: first.offset.as_deref(),
            recovered: first.recovered,
        };
        frames.push(frame::text(&ack.to_json()));
    }
    frames.extend(first.frames);
    // A replay is at most `ws.max_replay` < `ws.queue_max_messages` frames:
    // wait until the writer made room for it rather than trip the bound.
    outbox.wait_room(frames.len()).await;
    outbox.release_channel(&start.channel, start.hold, frames, first.covered);
}

/// Starts a connection that follows `persona` alone: its queue is held (an
/// outbox starts held) until the snapshot, or the events missed since
/// `since`, are in place. They are read only once Redis confirmed the
/// channel's subscription (`live`), however long that takes: a read before
/// it would lose, without a word to the client, whatever was published
/// between the read and the `SUBSCRIBE`. Off the connection's own task, so
/// the client is heard meanwhile; it ends when the connection closes.
pub(crate) fn spawn_whole(
    app: &Arc<App>,
    outbox: Arc<Outbox>,
    persona: PersonaId,
    since: Option<Offset>,
    mut live: watch::Receiver<bool>,
) {
    let task_app = app.clone();
    app.tasks.spawn(async move {
        let closing = outbox.closing().clone();
        let start = async {
            if live.wait_for(|live| *live).await.is_err() {
                // Nobody on this process follows the channel any more.
                return;
            }
            let first = first(&task_app, &persona, since, None, outbox.deflate()).await;
            outbox.release(first.frames, first.covered);
        };
        tokio::select! {
            _ = closing.cancelled() => {}
            _ = start => {}
        }
    });
}
