//! The Server-Sent Events routes: `/sse/{persona_id}` and
//! `/sse?channel=…`. Reads what the stream should follow and from where
//! (`Last-Event-ID`, else `?since=`), admits the client as a WebSocket would
//! be (`admit.rs`), and answers `text/event-stream` with the stream's events
//! (`sse/`) as the body.

use std::convert::Infallible;
use std::sync::Arc;

use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::http::admit::admit;
use crate::http::response::{error, Body};
use crate::keys::{parse_ws_channel, PersonaId};
use crate::metrics::{Rejection, SseError, Transport};
use crate::query::{query_param, query_params};
use crate::sse::{events, Connection, Endpoint};
use crate::stream::{parse_offset, Offset};

/// The signal the HTTP connection of a request watches: once it fires, the
/// connection is dropped `ws.slow_close_grace` later, read or not
/// (`server.rs`). Put in every request's extensions by the accept loop.
#[derive(Clone)]
pub struct StreamClosing(pub CancellationToken);

const LAST_EVENT_ID: &str = "last-event-id";

/// `GET /sse/{persona_id}`.
pub fn dashboard<B>(
    app: &Arc<App>,
    req: &Request<B>,
    id: &str,
    query: Option<&str>,
) -> Response<Body> {
    let persona = match PersonaId::parse(id, app.config.ws.max_persona_id_len) {
        Ok(p) => p,
        Err(e) => {
            app.metrics.rejected(Rejection::BadPersonaId);
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_persona_id",
                &e.to_string(),
            );
        }
    };
    // The browser's reconnect keeps the URL and adds the header: the header
    // is the newer position.
    let raw = last_event_id(req).or_else(|| query_param(query, "since"));
    let since = match raw.map(|r| parse_offset(&r)) {
        None => None,
        Some(Some(offset)) => Some(offset),
        Some(None) => {
            return bad_since(
                app,
                "since (or Last-Event-ID) must be a stream offset such as 1732240000000-0",
            )
        }
    };
    let personas = [persona.clone()];
    open(app, req, &personas, Endpoint::Dashboard { persona, since })
}

/// `GET /sse?channel=persona:a&channel=persona:b[&since=persona:a@<offset>]`.
pub fn multiplex<B>(app: &Arc<App>, req: &Request<B>, query: Option<&str>) -> Response<Body> {
    let max = app.config.ws.max_subscriptions;
    let names = query_params(query, "channel", max + 1);
    if names.is_empty() {
        return refuse(
            app,
            SseError::NoChannel,
            "invalid_channel",
            "name at least one channel: /sse?channel=persona:<id>",
        );
    }
    if names.len() > max {
        return refuse(
            app,
            SseError::TooManyChannels,
            "too_many_subscriptions",
            &format!("at most {max} channels per stream"),
        );
    }
    let mut channels: Vec<(PersonaId, Option<Offset>)> = Vec::with_capacity(names.len());
    for name in &names {
        match parse_ws_channel(name, app.config.ws.max_persona_id_len) {
            Ok(p) if channels.iter().any(|(q, _)| *q == p) => {}
            Ok(p) => channels.push((p, None)),
            Err(e) => {
                let message = format!("`persona:<id>` expected: {e}");
                return refuse(app, SseError::InvalidChannel, "invalid_channel", &message);
            }
        }
    }
    // `since` per channel; the header last, so it wins for its channel.
    let mut positions = query_params(query, "since", max + 1);
    positions.extend(last_event_id(req));
    for position in &positions {
        let parsed = position.rsplit_once('@').and_then(|(name, offset)| {
            let offset = parse_offset(offset)?;
            let slot = channels
                .iter_mut()
                .find(|(p, _)| parse_ws_channel(name, usize::MAX).is_ok_and(|q| q == *p))?;
            slot.1 = Some(offset);
            Some(())
        });
        if parsed.is_none() {
            return bad_since(
                app,
                "since (or Last-Event-ID) must be <channel>@<offset> for a listed channel, such as persona:a@1732240000000-0",
            );
        }
    }
    let personas: Vec<PersonaId> = channels.iter().map(|(p, _)| p.clone()).collect();
    open(app, req, &personas, Endpoint::Multiplex { channels })
}

/// Admits the client and answers with its stream.
fn open<B>(
    app: &Arc<App>,
    req: &Request<B>,
    personas: &[PersonaId],
    endpoint: Endpoint,
) -> Response<Body> {
    let closing = req
        .extensions()
        .get::<StreamClosing>()
        .map_or_else(CancellationToken::new, |c| c.0.clone());
    let admitted = match admit(app, req, personas, Transport::Sse, closing, None) {
        Ok(a) => a,
        Err(res) => return res,
    };
    let conn = Connection {
        app: app.clone(),
        outbox: admitted.outbox,
        claims: admitted.claims,
        registration: admitted.registration,
        ip_slot: admitted.ip_slot,
    };
    let body = StreamBody::new(events(conn, endpoint).map(|b| Ok::<_, Infallible>(Frame::data(b))));
    let mut res = Response::new(body.boxed_unsync());
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // The stream ends only with a close; the connection goes with it.
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    // nginx would otherwise buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}

fn last_event_id<B>(req: &Request<B>) -> Option<String> {
    let v = req.headers().get(LAST_EVENT_ID)?.to_str().ok()?.trim();
    (!v.is_empty()).then(|| v.to_owned())
}

fn bad_since(app: &App, message: &str) -> Response<Body> {
    app.metrics.rejected(Rejection::BadSince);
    refuse(app, SseError::InvalidSince, "invalid_since", message)
}

fn refuse(app: &App, reason: SseError, code: &str, message: &str) -> Response<Body> {
    app.metrics.transports.sse_error(reason);
    error(StatusCode::BAD_REQUEST, code, message)
}
