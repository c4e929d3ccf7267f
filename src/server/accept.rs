//! The accept loop: each connection refused at once past the connection
//! rate (a 429 without reading it), or served by hyper with the handshake
//! timeout; and the listener it takes, bound with a deep backlog.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::http::sse::StreamClosing;
use crate::metrics::Rejection;

pub(super) async fn accept_loop(listener: TcpListener, app: Arc<App>) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(app.config.http.handshake_timeout)
        .keep_alive(true);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = app.shutdown.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                app.metrics.rejected(Rejection::AcceptError);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(limited) = app.limits.check_accept(peer.ip()) {
            app.metrics.rejected(Rejection::RateLimited);
            refuse_rate_limited(&app, stream, &limited);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let send_buffer = app.config.ws.socket_send_buffer;
        if send_buffer > 0 {
            let _ = rustix::net::sockopt::set_socket_send_buffer_size(&stream, send_buffer);
        }
        let app2 = app.clone();
        // Fires when an SSE stream on this connection asks to close: the
        // connection is dropped a grace later, read or not (`sse/`).
        let stream_closing = CancellationToken::new();
        let closing = StreamClosing(stream_closing.clone());
        let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let app = app2.clone();
            req.extensions_mut().insert(crate::http::Peer(peer));
            req.extensions_mut().insert(closing.clone());
            async move { Ok::<_, Infallible>(crate::http::handle(app, req).await) }
        });
        let conn = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let shutdown = app.shutdown.clone();
        let grace = app.config.ws.slow_close_grace;
        app.tasks.spawn(async move {
            tokio::pin!(conn);
            let abandon = async move {
                stream_closing.cancelled().await;
                tokio::time::sleep(grace).await;
            };
            tokio::pin!(abandon);
            tokio::select! {
                r = conn.as_mut() => { if let Err(e) = r { tracing::debug!(error = %e, "http connection ended"); } return; }
                _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
                _ = &mut abandon => return,
            }
            // An SSE response is the request in flight: it runs on until the
            // drain closes its stream (and a client that does not read even
            // that is dropped a grace later).
            tokio::select! {
                _ = conn => {}
                _ = abandon => {}
            }
        });
    }
}

/// Answers 429 on a connection refused at accept, without reading its
/// request, and drops it. One non-blocking write into an empty send buffer:
/// a flood costs no task and no wait.
fn refuse_rate_limited(
    app: &App,
    stream: tokio::net::TcpStream,
    limited: &crate::ratelimit::Limited,
) {
    let body = format!(
        r#"{{"error":{{"code":"rate_limited","message":"too many connections ({}); retry later"}}}}"#,
        limited.limit
    );
    let head = format!(
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        limited.retry_after_secs(),
        body.len()
    );
    if stream.try_write(head.as_bytes()).is_err() {
        return;
    }
    // Closing with the request unread would reset the connection and could
    // lose the answer: read what came (briefly), then close.
    app.tasks.spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = stream;
        let _ = stream.shutdown().await;
        let mut buf = [0u8; 1024];
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
        })
        .await;
    });
}

/// Binds with a deep accept backlog: the default of 128 overflows when
/// thousands of clients reconnect at once, and each dropped SYN costs the
/// client a one-second retransmit.
pub(super) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Connections the kernel may hold before the accept loop takes them.
const LISTEN_BACKLOG: u32 = 4096;
