//! What a client may ask of its session: ping, refresh, subscribe and
//! unsubscribe (`/ws`), and a fresh token. Answers go through the outbox;
//! nothing here waits on Redis inside the read loop.

use std::sync::{Arc, Mutex};

use super::initial::snapshot_frame;
use super::{Endpoint, Session};
use crate::app::App;
use crate::channel_name::Channel;
use crate::hub::outbox::{Outbox, Pushed};
use crate::keys::PersonaId;
use crate::protocol::{error_code, ClientMessage, ServerMessage};
use crate::stream::Offset;

/// The dashboard connection's refresh in flight, and whether another was
/// asked for meanwhile. Refreshes run off the read loop (which stays deaf
/// to nothing: close, ping, shutdown), one at a time, so a client cannot
/// pile up snapshot reads; requests while one runs make one more run.
/// (`/ws` refreshes its channels through `handoff.rs`.)
#[derive(Default)]
pub(super) struct Refreshes {
    running: bool,
    again: bool,
}

impl Session {
    pub(super) fn on_message(&mut self, m: ClientMessage) {
        match (m, self.endpoint.clone()) {
            (ClientMessage::Ping, _) => self.reply(&ServerMessage::Pong),
            (ClientMessage::RequestMetrics, _) => self.request_metrics(),
            (ClientMessage::Auth { token }, _) => self.reauthenticate(&token),
            (ClientMessage::Refresh, Endpoint::Dashboard { persona, .. }) => self.refresh(persona),
            (ClientMessage::Refresh, Endpoint::Multiplex) => self.refresh_channels(),
            (ClientMessage::Subscribe { channel, since }, Endpoint::Multiplex) => {
                self.subscribe(&channel, since)
            }
            (ClientMessage::Unsubscribe { channel }, Endpoint::Multiplex) => {
                self.unsubscribe(&channel)
            }
            (
                ClientMessage::Subscribe { .. } | ClientMessage::Unsubscribe { .. },
                Endpoint::Dashboard { .. },
            ) => {
                self.error(
                    error_code::UNSUPPORTED,
                    "this endpoint follows one persona; use /ws to subscribe to several",
                );
            }
        }
    }

    /// `{"type":"auth","token":...}`: a fresh token for the same `sub`.
    fn reauthenticate(&mut self, token: &str) {
        let Some(auth) = &self.app.auth else {
            return self.error(
                error_code::AUTH_DISABLED,
                "authentication is off on this server",
            );
        };
        let claims = match auth.verify(token) {
            Ok(c) => c,
            Err(e) => {
                self.app.metrics.auth_failure(e.code());
                return self.error(error_code::INVALID_TOKEN, &e.to_string());
            }
        };
        if let Some(old) = &self.claims {
            if old.sub != claims.sub {
                return self.error(
                    error_code::INVALID_TOKEN,
                    "the new token is for another subject",
                );
            }
        }
        if let Endpoint::Dashboard { persona, .. } = &self.endpoint {
            if !claims.allows_persona(persona.as_str()) {
                return self.error(
                    error_code::FORBIDDEN,
                    "the new token does not grant this persona",
                );
            }
        }
        // Subscriptions the new token no longer grants end now.
        let revoked: Vec<Channel> = match self.endpoint {
            Endpoint::Multiplex => self
                .subscriptions
                .keys()
                .filter(|c| !self.still_granted(&claims, c))
                .cloned()
                .collect(),
            Endpoint::Dashboard { .. } => Vec::new(),
        };
        for channel in revoked {
            self.leave(&channel);
            let name = channel.name();
            self.reply(&ServerMessage::Unsubscribed { channel: &name });
        }
        self.recheck_runtime(&claims);
        let expires_at = claims.exp;
        self.claims = Some(Box::new(claims));
        self.reply(&ServerMessage::Authenticated { expires_at });
    }

    fn subscribe(&mut self, name: &str, since: Option<Offset>) {
        if name == crate::runtime::CHANNEL {
            return self.watch_runtime();
        }
        let Some(channel) = self.resolve(name) else {
            return;
        };
        if !self.admit(&channel, since) {
            return;
        }
        let name = channel.name();
        if !self.subscriptions.contains_key(&channel) {
            let max = self.app.config.ws.max_subscriptions;
            if self.subscriptions.len() >= max {
                return self.error(
                    error_code::TOO_MANY_SUBSCRIPTIONS,
                    &format!("at most {max} subscriptions per connection"),
                );
            }
            // Held before the hub knows the subscriber: none of the channel's
            // messages may reach the queue ahead of its ack.
            let hold = self.outbox.hold_channel(&name);
            let Some(sub) = self.join(&channel) else {
                self.outbox.drop_channel(&name);
                return;
            };
            self.subscriptions.insert(channel.clone(), sub);
            self.start_channel(&channel, hold, since, true);
        } else {
            // Subscribing again restarts the channel (a client catching up
            // with `since` after a resync): a start still under way is
            // superseded and sends nothing.
            let hold = self.outbox.hold_channel(&name);
            self.start_channel(&channel, hold, since, true);
        }
    }

    /// Ends `channel`'s subscription and forgets it in the outbox.
    fn leave(&mut self, channel: &Channel) -> bool {
        let left = self.subscriptions.remove(channel).is_some();
        if left {
            self.outbox.drop_channel(&channel.name());
        }
        left
    }

    fn unsubscribe(&mut self, name: &str) {
        if name == crate::runtime::CHANNEL {
            return self.unwatch_runtime();
        }
        let Some(channel) = self.resolve(name) else {
            return;
        };
        if !self.leave(&channel) {
            return self.error(
                error_code::NOT_SUBSCRIBED,
                &format!("not subscribed to {name}"),
            );
        }
        self.reply(&ServerMessage::Unsubscribed { channel: name });
    }

    /// Sends the dashboard's persona a fresh `initial_data`, from a task.
    fn refresh(&mut self, persona: PersonaId) {
        if self.outbox.is_starting() {
            // The first frames are still coming, and they are read later
            // than this refresh would be.
            return;
        }
        let refreshes = self.refreshes.get_or_insert_with(Arc::default).clone();
        {
            let mut r = lock(&refreshes);
            if r.running {
                r.again = true;
                return;
            }
            r.running = true;
        }
        let (app, outbox) = (self.app.clone(), self.outbox.clone());
        self.app
            .tasks
            .spawn(run_refreshes(app, outbox, refreshes, persona));
    }
}

fn lock(r: &Mutex<Refreshes>) -> std::sync::MutexGuard<'_, Refreshes> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

async fn run_refreshes(
    app: Arc<App>,
    outbox: Arc<Outbox>,
    refreshes: Arc<Mutex<Refreshes>>,
    persona: PersonaId,
) {
    let closing = outbox.closing().clone();
    loop {
        let send = async {
            let (f, _, _) = snapshot_frame(&app, &persona, None, None, outbox.deflate()).await;
            outbox.push_frame(f) != Pushed::Closed
        };
        let sent = tokio::select! {
            _ = closing.cancelled() => return,
            sent = send => sent,
        };
        let mut r = lock(&refreshes);
        if !sent || !std::mem::take(&mut r.again) {
            r.running = false;
            return;
        }
    }
}
