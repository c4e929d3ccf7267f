//! One WebSocket connection after the upgrade: starts its writer, subscribes,
//! sends the snapshot, then reads client messages until either side closes.
//! What each message does is `commands.rs`; the first frames, `initial.rs`;
//! the gap-free start of each `/ws` channel, `handoff.rs`.

mod admit;
mod commands;
pub(crate) mod handoff;
mod history;
pub(crate) mod initial;
mod runtime;
mod subscriptions;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::io::ClientRead;
use super::reader::{Inbound, MessageReader, ReadError};
use crate::app::App;
use crate::auth::Claims;
use crate::channel_name::Channel;
use crate::hub::outbox::Outbox;
use crate::hub::registry::Registration;
use crate::hub::{Mode, Subscription};
use crate::keys::PersonaId;
use crate::protocol::{close, error_code, frame, parse_client_message, ServerMessage};
use crate::ratelimit::{IpSlot, MessageLimiter, Verdict};
use crate::stream::Offset;

/// How long to wait for the client's close reply after ours.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Which endpoint the connection came through.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// `/dashboard/ws/{persona}`: one persona, verbatim payloads; `since`
    /// resumes after the given stream offset.
    Dashboard {
        persona: PersonaId,
        since: Option<Offset>,
    },
    /// `/ws`: subscribe/unsubscribe to any number of personas.
    Multiplex,
}

pub struct Session {
    app: Arc<App>,
    outbox: Arc<Outbox>,
    /// Read in the session's own task: no second task, no boxed stream
    /// (the reader is cancel-safe, so `select!` may drop its future).
    inbound: MessageReader<ClientRead>,
    endpoint: Endpoint,
    subscriptions: subscriptions::Subscriptions,
    /// The token's claims (auth on): what may be subscribed, and when the
    /// connection must close with 4001 unless an `auth` message renews them.
    claims: Option<Box<Claims>>,
    /// Inbound message rate (`limits.ws_messages`); `None` when off.
    rate: Option<MessageLimiter>,
    /// `refresh` requests, served off the read loop (made on the first).
    refreshes: Option<Arc<Mutex<commands::Refreshes>>>,
    /// One snapshot or replay read at a time per connection, for the starts
    /// of its `/ws` channels: a client cannot pile up Redis reads.
    reads: Arc<Semaphore>,
    /// Watching `system:runtime` (`runtime.rs`).
    runtime: Option<Box<Subscription>>,
}

impl Session {
    pub fn new(
        app: Arc<App>,
        outbox: Arc<Outbox>,
        inbound: MessageReader<ClientRead>,
        endpoint: Endpoint,
        claims: Option<Claims>,
    ) -> Self {
        let rate = app.limits.ws_messages();
        Self {
            app,
            outbox,
            inbound,
            endpoint,
            subscriptions: Default::default(),
            claims: claims.map(Box::new),
            rate,
            refreshes: None,
            reads: Arc::new(Semaphore::new(1)),
            runtime: None,
        }
    }

    /// When the current token stops being valid (far future without auth).
    fn token_deadline(&self) -> Instant {
        match (&self.app.auth, &self.claims) {
            (Some(auth), Some(c)) => Instant::now() + auth.expires_in(c),
            _ => Instant::now() + Duration::from_secs(365 * 24 * 3600),
        }
    }

    /// Runs the connection to its end, then lets `writer` flush what is
    /// queued (the close frame) for at most `ws.slow_close_grace`.
    /// `_registration` and `_ip_slot` keep it counted while it lives.
    ///
    /// Spawned as the connection's task by itself, so the task holds this
    /// future and nothing more: an idle connection costs what it must.
    pub async fn run(
        mut self,
        _registration: Registration,
        _ip_slot: IpSlot,
        mut writer: JoinHandle<()>,
    ) {
        let metrics = self.app.metrics.clone();
        metrics.connections_total.inc();
        metrics.connections_active.inc();
        let _open = metrics
            .transports
            .open(crate::metrics::Transport::WebSocket);
        self.start();
        self.read_loop().await;
        self.subscriptions.clear();
        self.runtime = None;
        metrics.connections_active.dec();
        if !self.outbox.is_closing() {
            self.outbox.abandon();
        }
        let grace = self.app.config.ws.slow_close_grace;
        if tokio::time::timeout(grace, &mut writer).await.is_err() {
            writer.abort();
        }
    }

    /// Subscribes and starts the first frames (off this task: the client
    /// is heard while they wait for Redis); a client arriving while Redis
    /// is unreachable is told so at once.
    fn start(&mut self) {
        if let Endpoint::Dashboard { persona, since } = self.endpoint.clone() {
            // Subscribed before anything is read from Redis, so nothing
            // falls between the read and the live messages; duplicates are
            // dropped by offset.
            let sub = self
                .app
                .hub
                .subscribe(&persona, self.outbox.clone(), Mode::Verbatim);
            let live = sub.live();
            self.subscriptions
                .insert(Channel::Persona(persona.clone()), sub);
            handoff::spawn_whole(&self.app, self.outbox.clone(), persona, since, live);
        } else {
            self.outbox.release(Vec::new(), None);
        }
        if !self.app.redis_status.is_up() {
            let status = ServerMessage::Status {
                redis: Some("down"),
                resync: None,
            };
            self.outbox.push_ahead(frame::text(&status.to_json()));
        }
    }

    async fn read_loop(&mut self) {
        let ping_interval = self.app.config.ws.ping_interval;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
        let mut last_seen = Instant::now();
        let closing = self.outbox.closing().clone();
        // Only a token expires; without auth there is no timer to keep.
        let mut expiry = self
            .app
            .auth
            .is_some()
            .then(|| Box::pin(tokio::time::sleep_until(self.token_deadline())));
        loop {
            tokio::select! {
                biased;
                _ = closing.cancelled() => break,
                _ = expired(&mut expiry) => {
                    // Renewed meanwhile? Then wait for the new deadline.
                    let deadline = self.token_deadline();
                    if deadline > Instant::now() {
                        if let Some(timer) = expiry.as_mut() {
                            timer.as_mut().reset(deadline);
                        }
                        continue;
                    }
                    self.close(close::TOKEN_EXPIRED, "token expired");
                    break;
                }
                _ = heartbeat.tick() => {
                    if last_seen.elapsed() > ping_interval * 2 {
                        self.close(close::PING_TIMEOUT, "no answer to pings");
                        break;
                    }
                    self.outbox.push_frame(frame::ping(b""));
                }
                inbound = self.inbound.next() => {
                    last_seen = Instant::now();
                    match inbound {
                        Ok(msg) => {
                            match self.rate_check(&msg) {
                                RateCheck::Pass => {}
                                RateCheck::Dropped => continue,
                                RateCheck::Close => {
                                    // The `rate_limited` answers already queued go
                                    // out first, so the client sees why.
                                    self.app.metrics.close_sent(close::POLICY);
                                    self.outbox
                                        .close_after_queued(close::POLICY, "message rate limit exceeded");
                                    break;
                                }
                            }
                            if !self.on_inbound(msg) {
                                // The client closed and our echo is queued.
                                return;
                            }
                        }
                        Err(e) => {
                            self.on_read_error(e);
                            return;
                        }
                    }
                }
            }
        }
        // We asked to close: give the client a moment to answer, then drop.
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Ok(msg) = self.inbound.next().await {
                if matches!(msg, Inbound::Close { .. }) {
                    break;
                }
            }
        })
        .await;
    }

    /// Applies the inbound message rate (`limits.ws_messages`) to text,
    /// binary and ping frames. A refused message is answered `rate_limited`
    /// and dropped: nothing it asks for happens (a refused ping gets no pong).
    fn rate_check(&mut self, msg: &Inbound) -> RateCheck {
        if !matches!(msg, Inbound::Text(_) | Inbound::Binary | Inbound::Ping(_)) {
            return RateCheck::Pass;
        }
        let Some(rate) = self.rate.as_mut() else {
            return RateCheck::Pass;
        };
        match rate.check() {
            Verdict::Pass => RateCheck::Pass,
            Verdict::Refuse => {
                self.app.metrics.rate_limited("ws_messages");
                self.error(
                    error_code::RATE_LIMITED,
                    "too many messages; this one was dropped",
                );
                RateCheck::Dropped
            }
            Verdict::Close => {
                self.app.metrics.rate_limited("ws_messages");
                RateCheck::Close
            }
        }
    }

    fn on_read_error(&mut self, e: ReadError) {
        match e.close_code() {
            Some(code) => {
                tracing::debug!(error = %e, code, "closing connection on a bad frame");
                self.close(code, &e.to_string());
            }
            None => {
                tracing::debug!(error = %e, "connection ended");
                self.outbox.abandon();
            }
        }
    }

    /// Handles one inbound message; false ends the read loop.
    fn on_inbound(&mut self, msg: Inbound) -> bool {
        match msg {
            Inbound::Text(mut text) => {
                match parse_client_message(&mut text, self.app.config.limits.max_json_depth) {
                    Ok(m) => self.on_message(m),
                    Err(e) => self.error(e.code(), &e.to_string()),
                }
                true
            }
            Inbound::Binary => {
                self.error(error_code::BINARY_NOT_SUPPORTED, "send JSON text frames");
                true
            }
            Inbound::Ping(payload) => {
                self.outbox.push_frame(frame::pong(&payload));
                true
            }
            Inbound::Pong => true,
            Inbound::Close { echo } => {
                self.outbox.close_with(frame::close_raw(&echo));
                false
            }
        }
    }

    fn reply(&self, m: &ServerMessage<'_>) {
        self.outbox.push_frame(frame::text(&m.to_json()));
    }

    fn error(&self, code: &'static str, message: &str) {
        self.app.metrics.client_error(code);
        self.reply(&ServerMessage::Error { code, message });
    }

    fn close(&self, code: u16, reason: &str) {
        // Counted only when it is this close that goes out (not, say, after
        // the drain's 1012 was already queued).
        if self.outbox.close(code, reason) {
            self.app.metrics.close_sent(code);
        }
    }
}

/// Resolves when the token's timer fires; never without one.
async fn expired(expiry: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>) {
    match expiry {
        Some(timer) => timer.as_mut().await,
        None => std::future::pending().await,
    }
}

/// What the inbound rate allows for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RateCheck {
    /// Within the rate: carry it out.
    Pass,
    /// Over the rate: answered `rate_limited`, not carried out.
    Dropped,
    /// Over the rate past `limits.ws_message_strikes`: close with 1008.
    Close,
}
