//! A minimal WebSocket client, cheap enough that one core can receive a
//! million small frames per second: the HTTP upgrade is done by hand over a
//! plain `TcpStream`, server frames (unmasked) are parsed in place from one
//! read buffer, and the rare client frames (subscribe, pong, close) are
//! masked as RFC 6455 requires.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Longest response head accepted for the upgrade.
const MAX_HEAD: usize = 16 * 1024;

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Where to connect: resolved once, shared by every subscriber.
#[derive(Debug, Clone)]
pub struct WsTarget {
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
}

/// Opens a TCP connection (from `source` when given) and performs the
/// upgrade of `path`. Bytes that arrived after the response head are left in
/// `buf` for the frame parser.
pub async fn connect(
    target: &WsTarget,
    path: &str,
    source: Option<IpAddr>,
    timeout: Duration,
    buf: &mut Vec<u8>,
) -> anyhow::Result<TcpStream> {
    tokio::time::timeout(timeout, connect_inner(target, path, source, buf))
        .await
        .map_err(|_| anyhow::anyhow!("connect/upgrade timed out after {timeout:?}"))?
}

async fn connect_inner(
    target: &WsTarget,
    path: &str,
    source: Option<IpAddr>,
    buf: &mut Vec<u8>,
) -> anyhow::Result<TcpStream> {
    let socket = if target.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("bind {ip}"))?;
    }
    let mut stream = socket.connect(target.addr).await.context("connect")?;
    stream.set_nodelay(true)?;
    let key = handshake_key();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        target.host
    );
    stream.write_all(request.as_bytes()).await?;
    buf.clear();
    loop {
        if buf.len() >= MAX_HEAD {
            bail!("upgrade response head longer than {MAX_HEAD} bytes");
        }
        if stream.read_buf(buf).await? == 0 {
            bail!("connection closed during the upgrade");
        }
        if let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") {
            let head = &buf[..end];
            let status_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
            let status = String::from_utf8_lossy(status_line).trim().to_string();
            if !status.starts_with("HTTP/1.1 101") {
                bail!("upgrade refused: {status}");
            }
            buf.drain(..end + 4);
            return Ok(stream);
        }
    }
}

/// A `Sec-WebSocket-Key`: 16 bytes, base64. Uniqueness, not secrecy, matters here.
fn handshake_key() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 16];
    let mut x = next_random();
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        x = next_random();
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A cheap per-thread xorshift, seeded from the clock and a counter.
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

/// One complete frame found in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef {
    pub fin: bool,
    pub opcode: u8,
    /// Payload range inside the buffer.
    pub start: usize,
    pub end: usize,
}

/// Parses the frame starting at `buf[pos..]`. `Ok(None)`: more bytes needed.
/// Masked server frames are unmasked in place (servers must not mask, but
/// tolerating it costs nothing).
pub fn parse_frame(buf: &mut [u8], pos: usize) -> anyhow::Result<Option<FrameRef>> {
    let b = &buf[pos..];
    if b.len() < 2 {
        return Ok(None);
    }
    let fin = b[0] & 0x80 != 0;
    let opcode = b[0] & 0x0F;
    let masked = b[1] & 0x80 != 0;
    let (len, mut header) = match b[1] & 0x7F {
        126 => {
            if b.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([b[2], b[3]]) as u64, 4)
        }
        127 => {
            if b.len() < 10 {
                return Ok(None);
            }
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[2..10]);
            (u64::from_be_bytes(n), 10)
        }
        n => (n as u64, 2),
    };
    if len > 64 * 1024 * 1024 {
        bail!("frame of {len} bytes");
    }
    let mut mask = [0u8; 4];
    if masked {
        if b.len() < header + 4 {
            return Ok(None);
        }
        mask.copy_from_slice(&b[header..header + 4]);
        header += 4;
    }
    let total = header + len as usize;
    if b.len() < total {
        return Ok(None);
    }
    let start = pos + header;
    let end = pos + total;
    if masked {
        for (i, byte) in buf[start..end].iter_mut().enumerate() {
            *byte ^= mask[i & 3];
        }
    }
    Ok(Some(FrameRef {
        fin,
        opcode,
        start,
        end,
    }))
}

/// A masked client frame.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = (next_random() as u32).to_be_bytes();
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    out
}

/// The close code of a close frame's payload (1005 when absent).
pub fn close_code(payload: &[u8]) -> u16 {
    if payload.len() >= 2 {
        u16::from_be_bytes([payload[0], payload[1]])
    } else {
        1005
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unmasked_and_masked_frames() {
        let mut buf = vec![0x81, 3, b'a', b'b', b'c', 0x89];
        let f = parse_frame(&mut buf, 0).unwrap().unwrap();
        assert_eq!((f.opcode, f.start, f.end, f.fin), (OP_TEXT, 2, 5, true));
        assert_eq!(parse_frame(&mut buf, 5).unwrap(), None);

        let mut masked = client_frame(OP_TEXT, b"hello");
        let f = parse_frame(&mut masked, 0).unwrap().unwrap();
        assert_eq!(&masked[f.start..f.end], b"hello");

        let mut long = vec![0x82, 126, 1, 0];
        long.extend(std::iter::repeat_n(7, 256));
        let f = parse_frame(&mut long, 0).unwrap().unwrap();
        assert_eq!((f.opcode, f.end - f.start), (OP_BINARY, 256));
    }

    #[test]
    fn close_codes() {
        assert_eq!(close_code(&[0x0F, 0xA8, b'x']), 4008);
        assert_eq!(close_code(&[]), 1005);
    }
}
