//! What a client may ask of its session: ping, refresh, subscribe and
//! unsubscribe (`/ws`), and a fresh token. Answers go through the outbox;
//! nothing here waits on Redis inside the read loop.

use std::sync::{Arc, Mutex};

use super::initial::snapshot_frame;
use super::{Endpoint, Session};
use crate::app::App;
use crate::hub::outbox::{Outbox, Pushed};
use crate::hub::Mode;
use crate::keys::{parse_ws_channel, ws_channel_name, PersonaId};
use crate::protocol::{error_code, frame, ClientMessage, ServerMessage};

/// A persona to send a fresh snapshot of, and the `/ws` channel it goes on.
pub(super) type Target = (PersonaId, Option<String>);

/// The connection's refresh in flight and the one asked for meanwhile.
/// Refreshes run off the read loop (which stays deaf to nothing: close,
/// ping, shutdown), one at a time, so a client cannot pile up snapshot
/// reads; a request while one runs replaces the waiting one.
#[derive(Default)]
pub(super) struct Refreshes {
    running: bool,
    next: Option<Vec<Target>>,
}

impl Session {
    pub(super) fn on_message(&mut self, m: ClientMessage) {
        match (m, self.endpoint.clone()) {
            (ClientMessage::Ping, _) => self.reply(&ServerMessage::Pong),
            (ClientMessage::Auth { token }, _) => self.reauthenticate(&token),
            (ClientMessage::Refresh, Endpoint::Dashboard { persona, .. }) => {
                self.refresh(vec![(persona, None)]);
            }
            (ClientMessage::Refresh, Endpoint::Multiplex) => {
                let targets = self
                    .subscriptions
                    .keys()
                    .map(|p| (p.clone(), Some(ws_channel_name(p))))
                    .collect();
                self.refresh(targets);
            }
            (ClientMessage::Subscribe { channel }, Endpoint::Multiplex) => self.subscribe(&channel),
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
        let revoked: Vec<PersonaId> = self
            .subscriptions
            .keys()
            .filter(|p| {
                matches!(self.endpoint, Endpoint::Multiplex) && !claims.allows_persona(p.as_str())
            })
            .cloned()
            .collect();
        for persona in revoked {
            self.subscriptions.remove(&persona);
            let name = ws_channel_name(&persona);
            self.reply(&ServerMessage::Unsubscribed { channel: &name });
        }
        let expires_at = claims.exp;
        self.claims = Some(claims);
        self.reply(&ServerMessage::Authenticated { expires_at });
    }

    fn subscribe(&mut self, channel: &str) {
        let max_len = self.app.config.ws.max_persona_id_len;
        let persona = match parse_ws_channel(channel, max_len) {
            Ok(p) => p,
            Err(e) => {
                return self.error(
                    error_code::INVALID_CHANNEL,
                    &format!("`persona:<id>` expected: {e}"),
                )
            }
        };
        if let Some(c) = &self.claims {
            if !c.allows_persona(persona.as_str()) {
                self.app.metrics.auth_failure("forbidden");
                return self.error(
                    error_code::FORBIDDEN,
                    &format!("this token does not grant {channel}"),
                );
            }
        }
        let ack = frame::text(&ServerMessage::Subscribed { channel }.to_json());
        if self.subscriptions.contains_key(&persona) {
            self.app.hub.acknowledge(&persona, &self.outbox, ack);
            return;
        }
        let max = self.app.config.ws.max_subscriptions;
        if self.subscriptions.len() >= max {
            return self.error(
                error_code::TOO_MANY_SUBSCRIPTIONS,
                &format!("at most {max} subscriptions per connection"),
            );
        }
        let sub = self
            .app
            .hub
            .subscribe(&persona, self.outbox.clone(), Mode::Wrapped, Some(ack));
        self.subscriptions.insert(persona, sub);
    }

    fn unsubscribe(&mut self, channel: &str) {
        let max_len = self.app.config.ws.max_persona_id_len;
        let persona = match parse_ws_channel(channel, max_len) {
            Ok(p) => p,
            Err(e) => {
                return self.error(
                    error_code::INVALID_CHANNEL,
                    &format!("`persona:<id>` expected: {e}"),
                )
            }
        };
        if self.subscriptions.remove(&persona).is_none() {
            return self.error(
                error_code::NOT_SUBSCRIBED,
                &format!("not subscribed to {channel}"),
            );
        }
        self.reply(&ServerMessage::Unsubscribed { channel });
    }

    /// Sends a fresh `initial_data` for each target, from a task.
    fn refresh(&mut self, targets: Vec<Target>) {
        {
            let mut r = lock(&self.refreshes);
            if r.running {
                r.next = Some(targets);
                return;
            }
            r.running = true;
        }
        let (app, outbox, refreshes) = (
            self.app.clone(),
            self.outbox.clone(),
            self.refreshes.clone(),
        );
        self.app
            .tasks
            .spawn(run_refreshes(app, outbox, refreshes, targets));
    }
}

fn lock(r: &Mutex<Refreshes>) -> std::sync::MutexGuard<'_, Refreshes> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

async fn run_refreshes(
    app: Arc<App>,
    outbox: Arc<Outbox>,
    refreshes: Arc<Mutex<Refreshes>>,
    mut targets: Vec<Target>,
) {
    let closing = outbox.closing().clone();
    loop {
        let send = async {
            for (persona, channel) in &targets {
                let (f, _) = snapshot_frame(&app, persona, channel.as_deref(), None).await;
                if outbox.push_frame(f) == Pushed::Closed {
                    return;
                }
            }
        };
        tokio::select! {
            _ = closing.cancelled() => return,
            _ = send => {}
        }
        let mut r = lock(&refreshes);
        match r.next.take() {
            Some(next) => targets = next,
            None => {
                r.running = false;
                return;
            }
        }
    }
}
