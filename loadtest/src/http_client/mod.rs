//! The load tester's one HTTP/1.1 client. Every scenario that speaks HTTP
//! goes through it: `http-rate`'s GETs ([`Conn`]), the publisher's
//! pipelined POSTs ([`write_request`], [`Responses`]) and the WebSocket
//! upgrade (`ws_client` writes its request and reads the answer's head with
//! [`parse_head`]). Written by hand over a tokio `TcpStream` with httparse,
//! rather than with hyper, so that its own cost per request is small and
//! known: nothing is allocated per request or response, and bodies are
//! framed (`Content-Length`, `chunked`, or the close of the connection) and
//! counted, never kept.

mod body;
mod request;
mod response;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use anyhow::{bail, Context};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub use request::{get_request, parse_header, write_request};
pub use response::{header_slots, parse, parse_head, Parsed, Response};

/// The most a response (head + body) may take in the buffer.
const MAX_RESPONSE: usize = 64 << 20;
/// Room made before each read.
const READ_CHUNK: usize = 16 * 1024;

/// Opens a TCP connection to `addr`, from `source` when given (the
/// subscribers spread over 127.0.0.2, .3, … for more ephemeral ports).
/// Nagle is off: requests and frames are written whole, and a delayed
/// small write would show up as latency.
///
/// The socket is made (and bound) first, so that the returned future holds
/// only it and a reference to `addr`: the WebSocket upgrade nests this
/// future in every subscriber's task, and that task's size is what each of
/// ~19k connections costs for the whole run.
pub fn connect(
    addr: &SocketAddr,
    source: Option<IpAddr>,
) -> anyhow::Result<impl Future<Output = anyhow::Result<TcpStream>> + '_> {
    let socket = socket(addr, source)?;
    Ok(async move {
        let stream = socket
            .connect(*addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

fn socket(addr: &SocketAddr, source: Option<IpAddr>) -> anyhow::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("bind {ip}"))?;
    }
    Ok(socket)
}

/// Reads responses one after another from one connection, in the order the
/// requests were sent (pipelined or not). Bytes past a response stay for
/// the next; the consumed ones are dropped only before the next read, so a
/// read holding many small responses is not shifted once per response.
#[derive(Debug)]
pub struct Responses {
    buf: Vec<u8>,
    /// Start of the first unparsed byte in `buf`.
    pos: usize,
}

impl Responses {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
            pos: 0,
        }
    }

    /// The next complete response. An error (I/O, malformed, or the close
    /// of the connection before a whole response) ends the connection's use.
    pub async fn next<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> anyhow::Result<Response> {
        loop {
            if let Parsed::Complete(r) = parse(&self.buf[self.pos..], false)? {
                self.pos += r.consumed;
                return Ok(r);
            }
            self.buf.drain(..self.pos);
            self.pos = 0;
            if self.buf.len() > MAX_RESPONSE {
                bail!("response larger than {} MiB", MAX_RESPONSE >> 20);
            }
            self.buf.reserve(READ_CHUNK);
            let n = io.read_buf(&mut self.buf).await.context("read response")?;
            if n == 0 {
                if self.buf.is_empty() {
                    bail!("connection closed by the server before a response");
                }
                return match parse(&self.buf, true)? {
                    Parsed::Complete(r) => {
                        self.pos = r.consumed;
                        Ok(Response { close: true, ..r })
                    }
                    Parsed::Incomplete => unreachable!("parse at EOF is never incomplete"),
                };
            }
        }
    }
}

/// One keep-alive connection, one request at a time.
pub struct Conn {
    stream: TcpStream,
    responses: Responses,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self {
            stream: connect(&addr, None)?.await?,
            responses: Responses::with_capacity(READ_CHUNK),
        })
    }

    /// Sends `request` and reads its whole response. After an error, or a
    /// response with `close`, the connection must not be used again.
    pub async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<Response> {
        self.stream
            .write_all(request)
            .await
            .context("write request")?;
        self.responses.next(&mut self.stream).await
    }
}
