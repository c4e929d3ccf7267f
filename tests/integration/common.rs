//! Test harness: real redis-server processes on free ports, the gateway
//! in-process (or as a child process), and WebSocket clients.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fred::prelude::*;
use futures_util::{SinkExt, StreamExt};
use pulsegate::server::Running;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub type RawWs = WebSocketStream<TcpStream>;

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A redis-server owned by one test, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub async fn spawn() -> Self {
        Self::spawn_on(free_port()).await
    }

    pub async fn spawn_on(port: u16) -> Self {
        let bin = std::env::var("PULSEGATE_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin} (install it with scripts/ensure-redis.sh --install-only): {e}"));
        let server = Self {
            port,
            child: Some(child),
        };
        server.wait_ready().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server on {} did not start", self.port);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub async fn client(&self) -> Client {
        let client = Client::new(
            fred::prelude::Config::from_url(&self.url()).expect("url"),
            None,
            None,
            None,
        );
        client.init().await.expect("connect to test redis");
        client
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A config for tests: the given Redis, quick probes.
pub fn test_config(redis: &RedisServer) -> pulsegate::config::Config {
    let mut c = pulsegate::config::Config::default();
    c.redis.url = redis.url();
    c.redis.probe_interval = Duration::from_millis(200);
    c.redis.command_timeout = Duration::from_secs(2);
    c.redis.unresponsive_timeout = Duration::from_secs(3);
    c.redis.reconnect_max_delay = Duration::from_millis(500);
    // In-process tests stop the gateway with clients still open: close them
    // in one batch at once (the paced drain has its own tests).
    c.shutdown.lb_grace = Duration::ZERO;
    c.shutdown.drain_window = Duration::ZERO;
    c.shutdown.drain_timeout = Duration::from_secs(5);
    c.validate().expect("valid test config");
    c
}

/// The gateway, in-process, on a free port.
pub async fn start_gateway(config: pulsegate::config::Config) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let running = pulsegate::server::start(config, listener).expect("start gateway");
    wait_http_ok(running.local_addr, "/readyz", Duration::from_secs(10)).await;
    running
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`);
/// returns (status, body), or (0, "") when the server cannot be reached.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(body) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = status_of(&text);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// GET `path`, returning (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, &[], None).await
}

pub async fn wait_http_ok(addr: SocketAddr, path: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if http_get(addr, path).await.0 == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "{path} never answered 200");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn connect(addr: SocketAddr, path: &str) -> Ws {
    let url = format!("ws://{addr}{path}");
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connect");
    ws
}

/// A client whose socket receive buffer is tiny, to stall the server quickly.
pub async fn connect_small_buffer(addr: SocketAddr, path: &str) -> RawWs {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let stream = socket.connect(addr).await.expect("connect");
    let url = format!("ws://{addr}{path}");
    let (ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("ws handshake");
    ws
}

/// Next text message as JSON (skipping pings), or panics after `within`.
pub async fn next_json<S>(ws: &mut WebSocketStream<S>, within: Duration) -> serde_json::Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let msg = tokio::time::timeout(within, ws.next())
            .await
            .expect("timed out waiting for a message")
            .expect("stream ended")
            .expect("ws error");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).expect("json"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// The next message on `ws` that is not a `status` notice (an outage's,
/// which may come at any time); panics after `within`.
pub async fn next_event(ws: &mut Ws, within: Duration) -> serde_json::Value {
    loop {
        let v = next_json(ws, within).await;
        if v["type"] != "status" {
            return v;
        }
    }
}

/// Reads until a close frame arrives and returns its code.
pub async fn expect_close<S>(ws: &mut WebSocketStream<S>, within: Duration) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => panic!("no close frame within {within:?}"),
            Ok(None) => panic!("stream ended without a close frame"),
            Ok(Some(Err(e))) => panic!("ws error before close: {e}"),
            Ok(Some(Ok(Message::Close(Some(CloseFrame { code, reason }))))) => {
                return (u16::from(code), reason.to_string())
            }
            Ok(Some(Ok(Message::Close(None)))) => return (1005, String::new()),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

pub async fn send_json<S>(ws: &mut WebSocketStream<S>, v: serde_json::Value)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::Text(v.to_string())).await.expect("send");
}

pub async fn numsub(client: &Client, channel: &str) -> i64 {
    let v: Vec<Value> = client.pubsub_numsub(channel).await.expect("PUBSUB NUMSUB");
    v.get(1).and_then(|v| v.as_i64()).unwrap_or(-1)
}

/// `FCALL pulse_ingest` as any publisher would; returns the event id.
pub async fn ingest(
    client: &Client,
    persona: &str,
    event: serde_json::Value,
) -> Result<String, fred::error::Error> {
    client
        .fcall(
            "pulse_ingest",
            vec![format!("pulse:{{{persona}}}")],
            vec![event.to_string()],
        )
        .await
}

/// Ingest with an options argument (e.g. `{"stream_maxlen":100}`).
pub async fn ingest_with(
    client: &Client,
    persona: &str,
    event: serde_json::Value,
    options: serde_json::Value,
) -> Result<String, fred::error::Error> {
    client
        .fcall(
            "pulse_ingest",
            vec![format!("pulse:{{{persona}}}")],
            vec![event.to_string(), options.to_string()],
        )
        .await
}

pub fn posted(variant: &str, predicted: f64, pattern: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "variant_posted", "variant_id": variant, "content": format!("content of {variant}"),
        "predicted_er": predicted, "pattern_used": pattern,
    })
}

pub fn perf(variant: &str, views: u64, interactions: u64) -> serde_json::Value {
    serde_json::json!({
        "type": "performance_update", "variant_id": variant,
        "view_count": views, "interaction_count": interactions,
    })
}

/// Any HTTP request; returns (status, parsed JSON body or Null).
pub async fn http_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let (status, raw) = http_request(addr, method, path, &[], Some(body.unwrap_or(""))).await;
    (
        status,
        serde_json::from_str(&raw).unwrap_or(serde_json::Value::Null),
    )
}

/// All ids of a stream, oldest first (fields left as bytes: they need not
/// be UTF-8).
pub async fn stream_ids(client: &Client, key: &str) -> Vec<String> {
    let entries: Vec<(String, Value)> = client.xrange(key, "-", "+", None).await.expect("XRANGE");
    entries.into_iter().map(|(id, _)| id).collect()
}

/// The status code of a raw HTTP response (0 if there is none).
pub fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Tests that load the whole machine (hundreds of clients, several
/// processes) take turns: two of them at once on a 2-core machine slow each
/// other past their Redis command timeouts, which tests nothing but the
/// machine. Light tests still run beside them.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits for the heavy tests before this one to finish; hold the guard for
/// the whole test.
pub async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    HEAVY.lock().await
}

/// How many times Redis ran `command` (`INFO commandstats`).
pub async fn command_calls(client: &Client, command: &str) -> u64 {
    let info: String = client
        .info(Some(fred::types::InfoKind::CommandStats))
        .await
        .expect("INFO");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// An unlabelled counter's value in a `/metrics` text (0 when absent).
pub fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}
