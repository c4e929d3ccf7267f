//! A test-only echo server for the Autobahn|Testsuite (scripts/autobahn.sh):
//! the gateway's own WebSocket reading (`ws::reader`: fragment assembly,
//! size limit, UTF-8 and close validation, inflation), frame encoding
//! (`protocol::frame`) and permessage-deflate negotiation and compression
//! (`protocol::extension`, `protocol::deflate`, with the gateway's rules of
//! `hub::outbox::deflate`), echoing each text message back. Binary messages are not part of the
//! protocol: the reader drops their payload, and the echo answers each with
//! the gateway's `binary_not_supported` error (a text message), as the
//! gateway does. Silence would leave wstest waiting out each binary case's
//! timeout (60-480 s in 12.2, 12.3 and 12.5, whose payloads are all binary).
//!
//! `cargo run --example autobahn_echo -- 127.0.0.1:9001 [max_message_bytes]`

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use pulsegate::hub::outbox::deflate::may_compress;
use pulsegate::protocol::extension::{self, Deflate};
use pulsegate::protocol::{deflate, error_code, frame, ServerMessage};
use pulsegate::ws::io::ClientRead;
use pulsegate::ws::reader::{Inbound, MessageReader};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9001".into());
    let max: usize = match args.next() {
        Some(v) => v.parse()?,
        None => pulsegate::config::WsConfig::default().max_message_bytes,
    };
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("autobahn echo on {addr}, max_message_bytes {max}");
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = service_fn(move |mut req| async move {
                let agreed = extension::negotiate(
                    req.headers()
                        .get_all(hyper::header::SEC_WEBSOCKET_EXTENSIONS)
                        .iter()
                        .map(|v| v.as_bytes()),
                );
                let Ok((res, upgrade)) = fastwebsockets::upgrade::upgrade(&mut req) else {
                    let res = hyper::Response::builder()
                        .status(400)
                        .body(Empty::<Bytes>::new())
                        .unwrap_or_default();
                    return Ok::<_, Infallible>(res);
                };
                let deflate = agreed.as_ref().map(|a| a.deflate);
                tokio::spawn(async move {
                    if let Ok(ws) = upgrade.await {
                        echo(ws.into_inner().into_inner(), max, deflate).await;
                    }
                });
                let (mut parts, _) = res.into_parts();
                if let Some(v) = agreed.and_then(|a| a.response.parse().ok()) {
                    parts
                        .headers
                        .insert(hyper::header::SEC_WEBSOCKET_EXTENSIONS, v);
                }
                Ok(hyper::Response::from_parts(parts, Empty::new()))
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

async fn echo(upgraded: Upgraded, max: usize, deflate: Option<Deflate>) {
    let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
        return;
    };
    let (r, mut w) = parts.io.into_inner().into_split();
    let mut inbound =
        MessageReader::new(ClientRead::Tcp(r), parts.read_buf, max, deflate.is_some());
    loop {
        let item = inbound.next().await;
        let plain = match item {
            Ok(Inbound::Text(t)) => frame::text(&t),
            Ok(Inbound::Binary) => {
                let refusal = ServerMessage::Error {
                    code: error_code::BINARY_NOT_SUPPORTED,
                    message: "send JSON text frames",
                };
                frame::text(&refusal.to_json())
            }
            Ok(Inbound::Pong) => continue,
            Ok(Inbound::Ping(p)) => frame::pong(&p),
            Ok(Inbound::Close { echo }) => {
                let _ = w.write_all(&frame::close_raw(&echo)).await;
                return;
            }
            Err(e) => {
                if let Some(code) = e.close_code() {
                    let _ = w.write_all(&frame::close(code, &e.to_string())).await;
                }
                return;
            }
        };
        let out = match deflate.filter(|d| may_compress(*d, &plain)) {
            Some(_) => deflate::compress_frame(&plain).map_or(plain, |(f, _, _)| f),
            None => plain,
        };
        if w.write_all(&out).await.is_err() {
            return;
        }
    }
}
