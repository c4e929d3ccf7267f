//! The load tester's one WebSocket client, cheap enough that one core can
//! receive a million small frames per second. The upgrade is an HTTP/1.1
//! request written, and answered, through [`crate::http_client`]; the
//! answer must be a `101` carrying the `Sec-WebSocket-Accept` our key calls
//! for. After it, [`WsConn`] reads frames in place (`frame.rs`, `conn.rs`).

mod conn;
mod frame;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http_client;
use crate::target::Url;

pub use conn::{Batch, WsConn};

/// Longest answer head accepted for the upgrade.
const MAX_HEAD: usize = 16 * 1024;
/// RFC 6455 §1.3: appended to the key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A `Sec-WebSocket-Key`: 16 bytes in base64.
type Key = [u8; 24];
/// A `Sec-WebSocket-Accept`: a SHA-1 digest (20 bytes) in base64.
type Accept = [u8; 28];

/// Where to connect: resolved once, shared by every subscriber.
#[derive(Debug, Clone)]
pub struct WsTarget {
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
}

impl WsTarget {
    pub fn resolve(url: &Url, allow_remote: bool) -> anyhow::Result<Self> {
        Ok(Self {
            addr: url.resolve(allow_remote)?,
            host: url.host_header(),
        })
    }
}

/// Opens a TCP connection (from `source` when given) and upgrades `path`;
/// `timeout` bounds both. Bytes that came after the answer's head stay in
/// the connection's buffer for the first batch.
pub async fn connect(
    target: &WsTarget,
    path: &str,
    source: Option<IpAddr>,
    timeout: Duration,
) -> anyhow::Result<WsConn> {
    let mut buf = Vec::with_capacity(conn::MIN_READ);
    let stream = tokio::time::timeout(timeout, upgrade(target, path, source, &mut buf))
        .await
        .map_err(|_| anyhow::anyhow!("connect/upgrade timed out after {timeout:?}"))??;
    Ok(WsConn::new(stream, buf))
}

async fn upgrade(
    target: &WsTarget,
    path: &str,
    source: Option<IpAddr>,
    buf: &mut Vec<u8>,
) -> anyhow::Result<TcpStream> {
    // Two statements: a temporary `Result` in the awaiting one would be
    // kept in the task next to the future it holds.
    let connecting = http_client::connect(&target.addr, source)?;
    let mut stream = connecting.await?;
    let expected = write_upgrade_request(buf, path, &target.host);
    stream
        .write_all(buf)
        .await
        .context("send the upgrade request")?;
    buf.clear();
    loop {
        if let Some(head_len) = check_upgrade(buf, &expected)? {
            buf.drain(..head_len);
            return Ok(stream);
        }
        if buf.len() >= MAX_HEAD {
            bail!("upgrade answer head longer than {MAX_HEAD} bytes");
        }
        if stream
            .read_buf(buf)
            .await
            .context("read the upgrade answer")?
            == 0
        {
            bail!("connection closed during the upgrade");
        }
    }
}

/// Writes the upgrade request, with a fresh key, into `buf` (the read
/// buffer, empty until the answer, so the request needs no allocation of
/// its own); returns the accept the answer must carry. A function of its
/// own rather than lines of [`upgrade`]: what lives across an await there
/// is stored in every subscriber's task for the whole run, and of all this
/// only the 28-byte accept needs to.
fn write_upgrade_request(buf: &mut Vec<u8>, path: &str, host: &str) -> Accept {
    let key = handshake_key();
    let key = std::str::from_utf8(&key).expect("base64 is ASCII");
    let headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    ];
    http_client::write_request(buf, "GET", path, host, &headers, None);
    accept_key(key)
}

/// Checks the answer to an upgrade at the start of `buf`: the length of its
/// head, or `None` while incomplete. Anything but a `101` with `Upgrade:
/// websocket`, `Connection: upgrade` and the `expected` accept is refused
/// (RFC 6455 §4.1): whoever answered is not a WebSocket server that read
/// our request, and what it sends next would be measured as frames.
pub fn check_upgrade(buf: &[u8], expected: &Accept) -> anyhow::Result<Option<usize>> {
    let mut slots = http_client::header_slots();
    let Some(head) = http_client::parse_head(buf, &mut slots)? else {
        return Ok(None);
    };
    if head.status != 101 {
        bail!("upgrade refused: HTTP {} {}", head.status, head.reason);
    }
    if !head
        .header("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case(b"websocket"))
    {
        bail!("upgrade answered 101 without `Upgrade: websocket`");
    }
    if !head.has_token("connection", "upgrade") {
        bail!("upgrade answered 101 without `Connection: upgrade`");
    }
    match head.header("sec-websocket-accept") {
        Some(got) if got == expected => Ok(Some(head.len)),
        Some(got) => bail!(
            "upgrade answered with Sec-WebSocket-Accept `{}`, but our key calls for `{}`",
            String::from_utf8_lossy(got),
            String::from_utf8_lossy(expected)
        ),
        None => bail!("upgrade answered 101 without Sec-WebSocket-Accept"),
    }
}

/// The `Sec-WebSocket-Accept` a server must answer to `key`: base64 of the
/// SHA-1 of the key followed by the RFC's GUID.
pub fn accept_key(key: &str) -> Accept {
    use sha1::{Digest, Sha1};
    let digest = Sha1::new()
        .chain_update(key.as_bytes())
        .chain_update(ACCEPT_GUID)
        .finalize();
    let mut out = [0u8; 28];
    BASE64
        .encode_slice(digest, &mut out)
        .expect("20 bytes are 28 in base64");
    out
}

/// A fresh key. Uniqueness, not secrecy, matters here: the key only proves
/// the answer was made for this request.
fn handshake_key() -> Key {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&next_random().to_le_bytes());
    bytes[8..].copy_from_slice(&next_random().to_le_bytes());
    let mut out = [0u8; 24];
    BASE64
        .encode_slice(bytes, &mut out)
        .expect("16 bytes are 24 in base64");
    out
}

/// A cheap per-thread xorshift, seeded from the clock and a counter: for
/// keys, frame masks and run ids, where a CSPRNG would be wasted.
pub fn next_random() -> u64 {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEED: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            SEED.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
                ^ crate::clock::now_ns()
                | 1,
        );
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}
