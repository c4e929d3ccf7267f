//! Startup, the accept loop, and shutdown.
//!
//! [`start`] takes an already bound listener, so tests run the real server on
//! port 0; [`serve`] is what the binary runs: bind, start, wait for a signal,
//! drain under a deadline.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Config;
use crate::hub::registry::Connections;
use crate::hub::Hub;
use crate::keys::Keys;
use crate::metrics::Metrics;
use crate::protocol::close;
use crate::redis::health::{probe, Monitor, RedisStatus};
use crate::redis::{self as redis_conn, subscriber};

/// A started gateway.
pub struct Running {
    pub app: Arc<App>,
    pub local_addr: SocketAddr,
    accept: JoinHandle<()>,
    background: CancellationToken,
    /// The audit consumer; awaited at shutdown so its batch is committed.
    audit_task: Option<JoinHandle<()>>,
    subscriber: SubscriberClient,
}

/// Builds the gateway on `listener` and starts serving. Redis need not be up:
/// the gateway reports not-ready and connects when it can.
pub fn start(config: Config, listener: TcpListener) -> anyhow::Result<Running> {
    let local_addr = listener.local_addr()?;
    let metrics = Arc::new(Metrics::new());
    let command = redis_conn::command_client(&config.redis)?;
    let sub_client = redis_conn::subscriber_client(&config.redis)?;
    let connections = Arc::new(Connections::default());
    let status = Arc::new(RedisStatus::default());
    // Before connecting: the monitor must see the first connection's event.
    let (monitor, health) = Monitor::new(
        &command,
        &sub_client,
        status.clone(),
        connections.clone(),
        metrics.clone(),
    );
    command.connect();
    sub_client.connect();

    let bounds = crate::hub::message::Bounds {
        max_bytes: config.redis.max_message_bytes,
        max_depth: config.limits.max_json_depth,
    };
    let (hub, changes) = Hub::new(Keys::new(&config.redis.key_prefix), metrics.clone(), bounds);
    let shutdown = CancellationToken::new();
    let background = CancellationToken::new();
    let (audit, pg, audit_task) = crate::audit::start(
        &config,
        local_addr.port(),
        command.clone(),
        metrics.clone(),
        background.clone(),
    )?;
    let mut app = App::new(
        config,
        metrics.clone(),
        hub.clone(),
        command.clone(),
        status.clone(),
        connections.clone(),
        shutdown,
    );
    app.audit = audit;
    app.pg = pg;
    if app.config.auth.mode == crate::config::AuthMode::Jwt {
        app.auth = Some(crate::auth::Authenticator::from_config(&app.config.auth)?);
    } else if !local_addr.ip().is_loopback() {
        tracing::warn!(
            %local_addr,
            "AUTHENTICATION IS OFF on a non-loopback address: anyone who can reach this port \
             can read every persona and ingest events; set [auth] mode = \"jwt\" (docs/security.md)"
        );
    }
    let app = Arc::new(app);
    tokio::spawn(app.limits.clone().run_pruner(background.clone()));

    let (retry_tx, retry_rx) = tokio::sync::mpsc::unbounded_channel();
    let changes = merge(changes, retry_rx);
    tokio::spawn(subscriber::run_receiver(
        sub_client.clone(),
        hub.clone(),
        connections.clone(),
        metrics.clone(),
        background.clone(),
    ));
    tokio::spawn(subscriber::run_reconciler(
        sub_client.clone(),
        hub,
        changes,
        retry_tx,
        health.clone(),
        background.clone(),
    ));
    tokio::spawn(crate::redis::functions::keep_loaded(
        command.clone(),
        crate::redis::functions::configured_library(&app.config),
        health.clone(),
        background.clone(),
    ));
    tokio::spawn(probe::run(
        command,
        sub_client.clone(),
        health,
        app.config.redis.probe_interval,
        app.config.redis.command_timeout,
        background.clone(),
    ));
    tokio::spawn(monitor.run(background.clone()));

    let accept = tokio::spawn(accept_loop(listener, app.clone()));
    tracing::info!(%local_addr, "pulsegate listening");
    Ok(Running {
        app,
        local_addr,
        accept,
        background,
        audit_task,
        subscriber: sub_client,
    })
}

/// Hub changes and retries feed the reconciler through one queue.
fn merge(
    mut a: tokio::sync::mpsc::UnboundedReceiver<Arc<str>>,
    mut b: tokio::sync::mpsc::UnboundedReceiver<Arc<str>>,
) -> tokio::sync::mpsc::UnboundedReceiver<Arc<str>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                Some(c) = a.recv() => c,
                Some(c) = b.recv() => c,
                else => return,
            };
            if tx.send(next).is_err() {
                return;
            }
        }
    });
    rx
}

impl Running {
    /// Drains: `/readyz` turns 503, the listener closes, every WebSocket gets
    /// 1001, HTTP connections finish their request; all within `drain_timeout`.
    pub async fn shutdown(self) {
        let app = self.app;
        app.start_draining();
        app.shutdown.cancel();
        let _ = self.accept.await;
        let closed = app
            .connections
            .close_all(close::GOING_AWAY, "server shutting down");
        tracing::info!(websockets = closed, "draining connections");
        app.tasks.close();
        let deadline = app.config.shutdown.drain_timeout;
        if tokio::time::timeout(deadline, app.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = app.tasks.len(),
                "drain timeout reached; dropping the remaining connections"
            );
        }
        self.background.cancel();
        if let Some(task) = self.audit_task {
            // The consumer finishes (commits and acks) the batch in hand.
            if tokio::time::timeout(deadline, task).await.is_err() {
                tracing::warn!(
                    "audit consumer did not stop in time; its batch stays pending in Redis"
                );
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = self.subscriber.quit().await;
            let _ = app.redis.quit().await;
        })
        .await;
        tracing::info!("shutdown complete");
    }
}

async fn accept_loop(listener: TcpListener, app: Arc<App>) {
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
                app.metrics.rejected("accept_error");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(limited) = app.limits.check_accept(peer.ip()) {
            app.metrics.rejected("rate_limited");
            refuse_rate_limited(stream, &limited);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let app2 = app.clone();
        let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let app = app2.clone();
            req.extensions_mut().insert(crate::http::Peer(peer));
            async move { Ok::<_, Infallible>(crate::http::handle(app, req).await) }
        });
        let conn = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let shutdown = app.shutdown.clone();
        app.tasks.spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => { if let Err(e) = r { tracing::debug!(error = %e, "http connection ended"); } return; }
                _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
}

/// Answers 429 on a connection refused at accept, without reading its
/// request, and drops it. One non-blocking write into an empty send buffer:
/// a flood costs no task and no wait.
fn refuse_rate_limited(stream: tokio::net::TcpStream, limited: &crate::ratelimit::Limited) {
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
    tokio::spawn(async move {
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

/// The binary's `serve`: bind, run until SIGTERM/SIGINT, drain.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let addr = config.listen_addr()?;
    let listener = bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let running = start(config, listener)?;
    crate::shutdown::signal().await;
    running.shutdown().await;
    Ok(())
}

/// Binds with a deep accept backlog: the default of 128 overflows when
/// thousands of clients reconnect at once, and each dropped SYN costs the
/// client a one-second retransmit.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
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
