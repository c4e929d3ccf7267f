//! One Server-Sent Events stream (`/sse/{persona}`, `/sse?channel=`), from
//! admission to its last event (`docs/protocol.md`, "Server-Sent Events").
//!
//! It is a WebSocket without the read half: the same outbox, registry slot
//! and hub subscription (in an SSE mode, so the hub encodes each
//! publication's event once for all SSE clients), and the same first frames
//! (`ws/session/initial.rs`, `handoff.rs`). No task of its own: the response
//! body *is* the writer, polled by the HTTP connection's task, draining the
//! outbox into events (`protocol/sse.rs`). A client that stops reading stops
//! the polling; its queue then overflows like a WebSocket's, and the HTTP
//! connection is dropped `ws.slow_close_grace` after the close was asked
//! for (`server.rs`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::app::App;
use crate::auth::Claims;
use crate::channel_name::Channel;
use crate::hub::outbox::{Drained, Outbox};
use crate::hub::registry::Registration;
use crate::hub::{Mode, Subscription};
use crate::keys::{ws_channel_name, PersonaId};
use crate::metrics::transport::Open;
use crate::metrics::{SseError, Transport};
use crate::protocol::sse::{self, Ids};
use crate::protocol::{close, frame, ServerMessage};
use crate::ratelimit::IpSlot;
use crate::stream::Offset;
use crate::ws::session::handoff::{self, Start};

/// Upper bound of one chunk of the response, as for a WebSocket write.
const MAX_CHUNK_BYTES: usize = 64 * 1024;

/// What the stream follows.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// `/sse/{persona}`: one persona, verbatim payloads, ids are offsets.
    Dashboard {
        persona: PersonaId,
        since: Option<Offset>,
    },
    /// `/sse?channel=`: these channels, each resumed after its offset when
    /// one is given, in `message` envelopes.
    Multiplex {
        channels: Vec<(PersonaId, Option<Offset>)>,
    },
}

/// An admitted stream: what it holds for as long as it lives.
pub struct Connection {
    pub app: Arc<App>,
    pub outbox: Arc<Outbox>,
    pub claims: Option<Claims>,
    pub registration: Registration,
    pub ip_slot: IpSlot,
}

struct State {
    app: Arc<App>,
    outbox: Arc<Outbox>,
    endpoint: Option<Endpoint>,
    ids: Ids,
    subscriptions: Vec<Subscription>,
    /// When the token stops being valid (`None`: auth off).
    expires: Option<Instant>,
    /// When a quiet stream gets its next keep-alive comment.
    quiet_until: Instant,
    opened: bool,
    done: bool,
    _registration: Registration,
    _ip_slot: IpSlot,
    _open: Open,
}

/// The response body of an admitted stream: its events, as they come.
pub fn events(conn: Connection, endpoint: Endpoint) -> impl Stream<Item = Bytes> + Send {
    let app = conn.app;
    app.metrics.connections_total.inc();
    app.metrics.connections_active.inc();
    let expires = match (&app.auth, &conn.claims) {
        (Some(auth), Some(c)) => Some(Instant::now() + auth.expires_in(c)),
        _ => None,
    };
    let ids = match endpoint {
        Endpoint::Dashboard { .. } => Ids::Offset,
        Endpoint::Multiplex { .. } => Ids::ChannelOffset,
    };
    let state = State {
        _open: app.metrics.transports.open(Transport::Sse),
        quiet_until: Instant::now() + app.config.sse.keepalive_interval,
        app,
        outbox: conn.outbox,
        endpoint: Some(endpoint),
        ids,
        subscriptions: Vec::new(),
        expires,
        opened: false,
        done: false,
        _registration: conn.registration,
        _ip_slot: conn.ip_slot,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        let chunk = s.next().await?;
        Some((chunk, s))
    })
}

impl Drop for State {
    fn drop(&mut self) {
        // A close the stream could not send (its client stopped reading):
        // counted all the same.
        if !self.done {
            if let Drained::Close(frame) = self.outbox.drain(&mut Vec::new(), 0) {
                self.count_close(&frame);
            }
        }
        // The client went away, or the stream ended: stop queueing for it.
        self.outbox.abandon();
        self.app.metrics.connections_active.dec();
    }
}

impl State {
    async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        if !self.opened {
            self.opened = true;
            return Some(Bytes::from_static(sse::OPENING));
        }
        if let Some(endpoint) = self.endpoint.take() {
            self.start(endpoint).await;
        }
        let keepalive = self.app.config.sse.keepalive_interval;
        let mut buf = Vec::new();
        loop {
            let ids = self.ids;
            match self
                .outbox
                .drain_with(&mut buf, MAX_CHUNK_BYTES, |b, f| sse::put(b, f, ids))
            {
                Drained::Frames(n) => {
                    self.app.metrics.frames_sent.inc_by(n as u64);
                    self.app.metrics.write_batches.inc();
                    self.quiet_until = Instant::now() + keepalive;
                    return Some(buf.into());
                }
                Drained::Close(frame) => {
                    self.done = true;
                    self.count_close(&frame);
                    sse::put(&mut buf, &frame, ids);
                    return Some(buf.into());
                }
                Drained::Finished => return None,
                Drained::Empty => {}
            }
            let expiry = self.expires.unwrap_or_else(far_future);
            tokio::select! {
                _ = self.outbox.wait() => {}
                _ = tokio::time::sleep_until(self.quiet_until) => {
                    self.quiet_until = Instant::now() + keepalive;
                    return Some(Bytes::from_static(sse::KEEPALIVE));
                }
                _ = tokio::time::sleep_until(expiry) => {
                    // No `auth` message can renew it here: the client
                    // reconnects with a fresh token.
                    self.expires = None;
                    if self.outbox.close(close::TOKEN_EXPIRED, "token expired") {
                        self.app.metrics.close_sent(close::TOKEN_EXPIRED);
                    }
                }
            }
        }
    }

    /// Counts the reasons a stream is closed that are its client's.
    fn count_close(&self, frame: &[u8]) {
        let code = frame.get(2..4).map(|c| u16::from_be_bytes([c[0], c[1]]));
        let reason = match code {
            Some(close::SLOW_CONSUMER) => SseError::SlowConsumer,
            Some(close::TOKEN_EXPIRED) => SseError::TokenExpired,
            _ => return,
        };
        self.app.metrics.transports.sse_error(reason);
    }

    /// Subscribes and queues the first frames, as a WebSocket session does.
    async fn start(&mut self, endpoint: Endpoint) {
        let app = self.app.clone();
        match endpoint {
            Endpoint::Dashboard { persona, since } => {
                // Subscribed before anything is read from Redis; the first
                // frames wait for the subscription (`handoff::spawn_whole`).
                let sub = app
                    .hub
                    .subscribe(&persona, self.outbox.clone(), Mode::SseVerbatim);
                let live = sub.live();
                self.subscriptions.push(sub);
                handoff::spawn_whole(&app, self.outbox.clone(), persona, since, live);
            }
            Endpoint::Multiplex { channels } => {
                self.outbox.release(Vec::new(), None);
                let reads = Arc::new(Semaphore::new(1));
                for (persona, since) in channels {
                    let channel = ws_channel_name(&persona);
                    // Held before the hub knows the subscriber, as on `/ws`.
                    let hold = self.outbox.hold_channel(&channel);
                    let sub = app
                        .hub
                        .subscribe(&persona, self.outbox.clone(), Mode::SseWrapped);
                    let start = Start {
                        live: sub.live(),
                        target: Channel::Persona(persona),
                        channel,
                        since,
                        ack: true,
                        hold,
                    };
                    self.subscriptions.push(sub);
                    handoff::spawn(&app, self.outbox.clone(), reads.clone(), start);
                }
            }
        }
        if !app.redis_status.is_up() {
            let status = ServerMessage::Status {
                redis: Some("down"),
                resync: None,
            };
            self.outbox.push_ahead(frame::text(&status.to_json()));
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}
