//! `pulsegate top`: a running gateway's own metrics in the terminal. It
//! opens `/ws` (fastwebsockets' client, the crate the server already uses),
//! subscribes to `system:runtime` and redraws the newest sample.
//!
//! Plain ANSI rather than a TUI crate: the screen is one column of figures
//! with no input beyond Ctrl-C, so the alternate screen, a hidden cursor and
//! "home + clear" per redraw are all it needs, and the terminal stays in
//! cooked mode (Ctrl-C is an ordinary SIGINT; nothing to restore but the
//! screen and the cursor). When stdout is not a terminal it prints one line
//! of JSON per sample instead.

mod render;

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::Args;
use fastwebsockets::{handshake, FragmentCollector, Frame, OpCode, Payload, WebSocketError};
use http_body_util::Empty;
use hyper::header::{CONNECTION, HOST, UPGRADE};
use hyper::Request;
use tokio::net::TcpStream;
use tokio::time::{interval, MissedTickBehavior};

use render::View;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Alternate screen + hidden cursor, and back.
const ENTER: &str = "\x1b[?1049h\x1b[?25l";
const LEAVE: &str = "\x1b[?25h\x1b[?1049l";
const HOME_CLEAR: &str = "\x1b[H\x1b[2J";

#[derive(Debug, Args)]
pub struct TopArgs {
    /// The gateway, `http(s)://host:port` (its `/ws` is used).
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    pub url: String,
    /// Seconds between redraws (samples arrive at the gateway's `runtime.interval`).
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// A token with the admin role, when the gateway runs with auth on.
    #[arg(long, env = "PULSEGATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Runs until Ctrl-C (Ok) or until the gateway cannot be reached or goes
/// away (Err, naming the URL).
pub async fn run(args: TopArgs) -> anyhow::Result<()> {
    if !(0.1..=60.0).contains(&args.interval) {
        bail!("--interval must be between 0.1 and 60 seconds");
    }
    let target = Target::parse(&args.url)?;
    let mut ws = target
        .connect(args.token.as_deref())
        .await
        .with_context(|| format!("cannot connect to {}", args.url))?;
    let subscribe = br#"{"type":"subscribe","channel":"system:runtime"}"#;
    ws.write_frame(Frame::text(Payload::Borrowed(subscribe)))
        .await
        .with_context(|| format!("cannot subscribe at {}", args.url))?;

    // Frames are read on their own task: a read cut short by a redraw or
    // Ctrl-C could lose part of a frame, so the loop below only ever waits
    // on a channel.
    let (tx, mut inbound) = tokio::sync::mpsc::channel(64);
    tokio::spawn(read_frames(ws, tx, args.url.clone()));

    let tty = std::io::stdout().is_terminal();
    let _screen = tty.then(Screen::enter);
    let mut view = View::default();
    let mut redraw = interval(Duration::from_secs_f64(args.interval));
    redraw.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut dirty = true;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            _ = redraw.tick(), if tty => {
                if std::mem::take(&mut dirty) {
                    draw(&format!("{HOME_CLEAR}{}", view.render(&args.url)));
                }
            }
            msg = inbound.recv() => {
                let msg = msg.ok_or_else(|| anyhow!("lost the connection to {}", args.url))??;
                on_message(&msg, &mut view, tty, &args.url)?;
                dirty = true;
            }
        }
    }
}

/// Reads the gateway's messages until the connection ends (the reason as
/// the last item) or `run` stops listening. Pings are answered by
/// fastwebsockets itself.
async fn read_frames(
    mut ws: Socket,
    tx: tokio::sync::mpsc::Sender<anyhow::Result<serde_json::Value>>,
    url: String,
) {
    loop {
        let item = match ws.read_frame().await {
            Err(e) => Err(lost(&url, &e)),
            Ok(frame) => match frame.opcode {
                OpCode::Text => serde_json::from_slice(&frame.payload)
                    .with_context(|| format!("{url} sent a message that is not JSON")),
                OpCode::Close => Err(anyhow!(
                    "{url} closed the connection (code {})",
                    close_code(&frame.payload)
                )),
                _ => continue,
            },
        };
        let end = item.is_err();
        if tx.send(item).await.is_err() || end {
            return;
        }
    }
}

type Socket = FragmentCollector<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

fn on_message(
    msg: &serde_json::Value,
    view: &mut View,
    tty: bool,
    url: &str,
) -> anyhow::Result<()> {
    match msg.get("type").and_then(|t| t.as_str()) {
        Some("runtime") => {
            view.update(msg);
            if !tty && !draw(&format!("{msg}\n")) {
                // The reader went away (`top | head`): done.
                bail!("stdout closed");
            }
        }
        Some("error") => {
            let code = msg.get("code").and_then(|c| c.as_str()).unwrap_or("");
            let text = msg.get("message").and_then(|c| c.as_str()).unwrap_or("");
            bail!("{url} refused: {code}: {text}");
        }
        _ => {}
    }
    Ok(())
}

/// Writes `s` to stdout; false when stdout is closed.
fn draw(s: &str) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())
        .and_then(|()| out.flush())
        .is_ok()
}

fn lost(url: &str, e: &WebSocketError) -> anyhow::Error {
    anyhow!("lost the connection to {url}: {e}")
}

fn close_code(payload: &[u8]) -> u16 {
    match payload {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 1005,
    }
}

/// The alternate screen while it lives; the terminal as it was after, on
/// every way out (Ctrl-C, an error, a panic unwinding).
struct Screen;

impl Screen {
    fn enter() -> Self {
        draw(ENTER);
        Screen
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        draw(LEAVE);
    }
}

/// Where `/ws` is: host, port and the path prefix of `--url`.
struct Target {
    host: String,
    port: u16,
    path: String,
}

impl Target {
    fn parse(raw: &str) -> anyhow::Result<Self> {
        let u = url::Url::parse(raw).with_context(|| format!("--url {raw} is not a URL"))?;
        match u.scheme() {
            "http" | "ws" => {}
            "https" | "wss" => bail!("--url {raw}: TLS is not supported by `top`; use http:// (e.g. through a local port-forward)"),
            s => bail!("--url {raw}: unsupported scheme {s}"),
        }
        let host = u
            .host_str()
            .ok_or_else(|| anyhow!("--url {raw} has no host"))?
            .to_owned();
        let port = u.port_or_known_default().unwrap_or(80);
        let path = format!("{}/ws", u.path().trim_end_matches('/'));
        Ok(Self { host, port, path })
    }

    async fn connect(&self, token: Option<&str>) -> anyhow::Result<Socket> {
        let addr = (self.host.trim_matches(['[', ']']), self.port);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("no answer within {CONNECT_TIMEOUT:?}"))??;
        let mut uri = self.path.clone();
        if let Some(t) = token {
            let q: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("token", t)
                .finish();
            uri = format!("{uri}?{q}");
        }
        let req = Request::builder()
            .method("GET")
            .uri(uri)
            .header(HOST, format!("{}:{}", self.host, self.port))
            .header(UPGRADE, "websocket")
            .header(CONNECTION, "upgrade")
            .header("Sec-WebSocket-Key", handshake::generate_key())
            .header("Sec-WebSocket-Version", "13")
            .body(Empty::<Bytes>::new())?;
        let upgrade = handshake::client(&SpawnExecutor, req, stream);
        let (ws, _) = match tokio::time::timeout(CONNECT_TIMEOUT, upgrade).await {
            Err(_) => bail!("no WebSocket upgrade within {CONNECT_TIMEOUT:?}"),
            Ok(Err(WebSocketError::InvalidStatusCode(status))) => {
                bail!(
                    "the WebSocket upgrade was refused with HTTP {status}{}",
                    hint(status)
                )
            }
            Ok(r) => r?,
        };
        Ok(FragmentCollector::new(ws))
    }
}

fn hint(status: u16) -> &'static str {
    match status {
        401 => " (auth is on: pass --token with an admin token)",
        403 => " (the token is refused here)",
        _ => "",
    }
}

/// Runs hyper's client connection task on the Tokio runtime.
struct SpawnExecutor;

impl<F> hyper::rt::Executor<F> for SpawnExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(fut);
    }
}
