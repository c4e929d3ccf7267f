//! The WebSocket handshake: checks the request (the checks both transports
//! share are `admit.rs`), reserves a connection slot, answers 101, and hands the upgraded socket to a session and a writer.

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_VERSION};
use hyper::upgrade::Upgraded;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use crate::app::App;
use crate::config::Compression;
use crate::http::admit::{admit, Admitted};
use crate::http::response::{error, full, Body};
use crate::metrics::{Rejection, Transport};
use crate::protocol::extension;
use crate::ws::io::ClientRead;
use crate::ws::reader::MessageReader;
use crate::ws::session::{Endpoint, Session};
use crate::ws::writer;

pub fn handle(app: &Arc<App>, mut req: Request<Incoming>, endpoint: Endpoint) -> Response<Body> {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        app.metrics.rejected(Rejection::NotUpgrade);
        return error(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "this endpoint speaks WebSocket only",
        );
    }
    if req
        .headers()
        .get(SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        app.metrics.rejected(Rejection::BadVersion);
        let mut res = error(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported_version",
            "Sec-WebSocket-Version must be 13",
        );
        res.headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return res;
    }
    let personas = match &endpoint {
        Endpoint::Dashboard { persona, .. } => std::slice::from_ref(persona),
        Endpoint::Multiplex => &[],
    };
    let agreed = match app.config.ws.compression {
        Compression::On => extension::negotiate(
            req.headers()
                .get_all(SEC_WEBSOCKET_EXTENSIONS)
                .iter()
                .map(HeaderValue::as_bytes),
        ),
        Compression::Off => None,
    };
    let deflate = agreed.as_ref().map(|a| a.deflate);
    let admitted = match admit(
        app,
        &req,
        personas,
        Transport::WebSocket,
        tokio_util::sync::CancellationToken::new(),
        deflate,
    ) {
        Ok(a) => a,
        Err(res) => return res,
    };
    let (response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(e) => {
            app.metrics.rejected(Rejection::BadHandshake);
            return error(StatusCode::BAD_REQUEST, "bad_handshake", &e.to_string());
        }
    };
    let app2 = app.clone();
    app.tasks.spawn(async move {
        match upgrade.await {
            Ok(ws) => start(app2, ws.into_inner().into_inner(), admitted, endpoint),
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    let (mut parts, _) = response.into_parts();
    if let Some(value) = agreed.and_then(|a| HeaderValue::from_str(&a.response).ok()) {
        parts.headers.insert(SEC_WEBSOCKET_EXTENSIONS, value);
    }
    Response::from_parts(parts, full(Bytes::new()))
}

/// Splits the socket so reads and writes never wait on each other (the
/// usual case is a plain TCP stream, split without a lock) and starts the
/// connection's two tasks: the writer, and the session that reads. Each
/// task holds only its own future; the upgrade's task ends here.
fn start(app: Arc<App>, upgraded: Upgraded, admitted: Admitted, endpoint: Endpoint) {
    let (r, early, w): (ClientRead, Bytes, Box<dyn AsyncWrite + Send + Unpin>) =
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                let (r, w) = parts.io.into_inner().into_split();
                (ClientRead::Tcp(r), parts.read_buf, Box::new(w))
            }
            Err(upgraded) => {
                let (r, w) = tokio::io::split(TokioIo::new(upgraded));
                (ClientRead::Other(r), Bytes::new(), Box::new(w))
            }
        };
    let Admitted {
        claims,
        outbox,
        registration,
        ip_slot,
    } = admitted;
    let pacing = writer::Pacing {
        grace: app.config.ws.slow_close_grace,
        write_delay: app.config.ws.write_delay,
    };
    let writer = tokio::spawn(writer::run(outbox.clone(), w, pacing, app.metrics.clone()));
    let inflate = outbox.deflate().is_some();
    let inbound = MessageReader::new(r, early, app.config.ws.max_message_bytes, inflate);
    let session = Session::new(app.clone(), outbox, inbound, endpoint, claims);
    app.tasks.spawn(session.run(registration, ip_slot, writer));
}
