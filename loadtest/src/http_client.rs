//! A minimal keep-alive HTTP/1.1 client for `http-rate`: one request at a
//! time per connection, responses parsed with httparse. Bodies are framed by
//! `Content-Length`, `chunked`, or (no length) the close of the connection;
//! they are counted, not kept.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most a response (head + body) may take in the buffer.
const MAX_RESPONSE: usize = 64 << 20;
const MAX_HEADERS: usize = 64;
/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;

/// One complete response at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Bytes of the buffer this response (and any 1xx before it) took.
    pub consumed: usize,
    pub body_len: usize,
    /// The server will close the connection after it (`Connection: close`,
    /// HTTP/1.0 without keep-alive, or a body delimited by the close).
    pub close: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    Complete(Response),
}

/// Parses the response at the start of `buf`. `eof`: the peer closed the
/// connection, so nothing more will arrive (ends a close-delimited body;
/// anything else still incomplete is an error). Interim 1xx responses are
/// skipped. Stateless: call again with the grown buffer after each read.
pub fn parse(buf: &[u8], eof: bool) -> anyhow::Result<Parsed> {
    let mut offset = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut r = httparse::Response::new(&mut headers);
        let head = match r.parse(&buf[offset..]).context("malformed response head")? {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial if eof => {
                bail!("connection closed before a complete response head")
            }
            httparse::Status::Partial => return Ok(Parsed::Incomplete),
        };
        let status = r.code.unwrap_or(0);
        let mut close = r.version == Some(0);
        let mut length: Option<usize> = None;
        let mut chunked = false;
        for h in r.headers.iter() {
            let value = std::str::from_utf8(h.value).unwrap_or("").trim();
            if h.name.eq_ignore_ascii_case("content-length") {
                let n: usize = value
                    .parse()
                    .with_context(|| format!("bad Content-Length `{value}`"))?;
                if length.is_some_and(|l| l != n) {
                    bail!("conflicting Content-Length headers");
                }
                length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                // Only a final `chunked` frames the body (RFC 9112 §6.3).
                chunked = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
            } else if h.name.eq_ignore_ascii_case("connection") {
                for token in value.split(',').map(str::trim) {
                    if token.eq_ignore_ascii_case("close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case("keep-alive") && r.version == Some(0) {
                        close = false;
                    }
                }
            }
        }
        let body_at = offset + head;
        if (100..200).contains(&status) {
            if status == 101 {
                bail!("unexpected 101 Switching Protocols");
            }
            offset = body_at;
            continue;
        }
        let rest = &buf[body_at..];
        let (body_bytes, body_len) = if status == 204 || status == 304 {
            (0, 0)
        } else if chunked {
            match chunked_body(rest)? {
                Some(v) => v,
                None if eof => bail!("connection closed inside a chunked body"),
                None => return Ok(Parsed::Incomplete),
            }
        } else if let Some(n) = length {
            if rest.len() < n {
                if eof {
                    bail!("connection closed after {} of {n} body bytes", rest.len());
                }
                return Ok(Parsed::Incomplete);
            }
            (n, n)
        } else if eof {
            close = true;
            (rest.len(), rest.len())
        } else {
            // Delimited by the close of the connection.
            return Ok(Parsed::Incomplete);
        };
        return Ok(Parsed::Complete(Response {
            status,
            consumed: body_at + body_bytes,
            body_len,
            close,
        }));
    }
}

/// A complete chunked body at the start of `buf`: (bytes taken, payload bytes),
/// or `None` if more is needed.
fn chunked_body(buf: &[u8]) -> anyhow::Result<Option<(usize, usize)>> {
    let mut pos = 0;
    let mut body = 0usize;
    loop {
        let Some(line) = line_at(buf, pos)? else {
            return Ok(None);
        };
        let text = std::str::from_utf8(line).context("chunk size is not ASCII")?;
        let hex = text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(hex, 16)
            .ok()
            .filter(|&s| s <= MAX_RESPONSE)
            .with_context(|| format!("bad chunk size `{hex}`"))?;
        pos += line.len() + 2;
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let Some(line) = line_at(buf, pos)? else {
                    return Ok(None);
                };
                pos += line.len() + 2;
                if line.is_empty() {
                    return Ok(Some((pos, body)));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            bail!("chunk of {size} bytes not followed by CRLF");
        }
        body += size;
        pos += size + 2;
    }
}

/// The line starting at `pos` (without its CRLF), if complete.
fn line_at(buf: &[u8], pos: usize) -> anyhow::Result<Option<&[u8]>> {
    let rest = &buf[pos.min(buf.len())..];
    match memchr::memmem::find(rest, b"\r\n") {
        Some(i) => Ok(Some(&rest[..i])),
        None if rest.len() > MAX_LINE => bail!("chunk line longer than {MAX_LINE} bytes"),
        None => Ok(None),
    }
}

/// Builds a `GET` request. `headers` are `Name: value` lines (checked by
/// [`check_header`]); a `Host` among them replaces the default one.
pub fn get_request(path: &str, host: &str, headers: &[String]) -> Vec<u8> {
    let mut out = format!("GET {path} HTTP/1.1\r\n");
    let has_host = headers.iter().any(|h| {
        h.split_once(':')
            .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case("host"))
    });
    if !has_host {
        out.push_str(&format!("Host: {host}\r\n"));
    }
    out.push_str("User-Agent: pulsegate-loadtest\r\nAccept: */*\r\n");
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Checks a `--header` value: `Name: value`, a token name, no line breaks.
pub fn check_header(h: &str) -> anyhow::Result<()> {
    let (name, _) = h
        .split_once(':')
        .with_context(|| format!("header `{h}`: `Name: value` expected"))?;
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        bail!("header `{h}`: bad header name");
    }
    if h.contains(['\r', '\n']) {
        bail!("header `{h}`: line breaks are not allowed");
    }
    Ok(())
}

/// One keep-alive connection. Leftover bytes stay in `buf` for the next response.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Sends `request` and reads its whole response. After an error, or a
    /// response with `close`, the connection must not be used again.
    pub async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<Response> {
        self.stream
            .write_all(request)
            .await
            .context("write request")?;
        loop {
            if let Parsed::Complete(r) = parse(&self.buf, false)? {
                self.buf.drain(..r.consumed);
                return Ok(r);
            }
            if self.buf.len() > MAX_RESPONSE {
                bail!("response larger than {} MiB", MAX_RESPONSE >> 20);
            }
            self.buf.reserve(16 * 1024);
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .context("read response")?;
            if n == 0 {
                if self.buf.is_empty() {
                    bail!("connection closed by the server before a response");
                }
                return match parse(&self.buf, true)? {
                    Parsed::Complete(r) => {
                        self.buf.drain(..r.consumed);
                        Ok(Response { close: true, ..r })
                    }
                    Parsed::Incomplete => unreachable!("parse at EOF is never incomplete"),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8], eof: bool) -> Response {
        match parse(buf, eof).unwrap() {
            Parsed::Complete(r) => r,
            Parsed::Incomplete => panic!("incomplete: {:?}", String::from_utf8_lossy(buf)),
        }
    }

    /// Every strict prefix is incomplete (partial reads), the whole is complete.
    fn every_prefix_incomplete(buf: &[u8]) {
        for i in 0..buf.len() {
            assert_eq!(
                parse(&buf[..i], false).unwrap(),
                Parsed::Incomplete,
                "prefix {i}"
            );
        }
    }

    #[test]
    fn content_length() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}";
        every_prefix_incomplete(raw);
        let r = complete(raw, false);
        assert_eq!(
            (r.status, r.consumed, r.body_len, r.close),
            (200, raw.len(), 11, false)
        );
        // Pipelined bytes after the body are left alone.
        let mut two = raw.to_vec();
        two.extend_from_slice(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        let r = complete(&two, false);
        assert_eq!(r.consumed, raw.len());
        let r2 = complete(&two[r.consumed..], false);
        assert_eq!((r2.status, r2.body_len), (404, 0));
    }

    #[test]
    fn chunked() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: y\r\n\r\n";
        every_prefix_incomplete(raw);
        let r = complete(raw, false);
        assert_eq!((r.status, r.consumed, r.body_len), (200, raw.len(), 15));
        // Transfer-Encoding wins over Content-Length.
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(complete(raw, false).body_len, 0);
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(parse(bad, false).is_err());
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n";
        assert!(parse(bad, false).is_err());
    }

    #[test]
    fn close_and_eof() {
        // HTTP/1.0 closes unless keep-alive; Connection: close always does.
        let r = complete(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false);
        assert!(r.close);
        let r = complete(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(!r.close);
        let r = complete(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(r.close);
        // No length: the body ends with the connection.
        let raw = b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nbody until close";
        assert_eq!(parse(raw, false).unwrap(), Parsed::Incomplete);
        let r = complete(raw, true);
        assert_eq!((r.body_len, r.close, r.consumed), (16, true, raw.len()));
        // Truncated bodies and heads at EOF are errors.
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", true).is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Le", true).is_err());
        assert!(parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            true
        )
        .is_err());
    }

    #[test]
    fn status_without_body_and_interim() {
        let r = complete(b"HTTP/1.1 204 No Content\r\n\r\n", false);
        assert_eq!((r.status, r.body_len), (204, 0));
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy\r\nContent-Length: 2\r\n\r\nno";
        every_prefix_incomplete(raw);
        let r = complete(raw, false);
        assert_eq!((r.status, r.consumed, r.body_len), (503, raw.len(), 2));
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false).is_err());
        assert!(parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            false
        )
        .is_err());
        assert!(parse(b"garbage\r\n\r\n", false).is_err());
    }

    #[test]
    fn requests_and_headers() {
        let req = get_request(
            "/api/metrics/p",
            "127.0.0.1:8470",
            &["Authorization: Bearer t".into()],
        );
        let text = String::from_utf8(req).unwrap();
        assert!(text.starts_with("GET /api/metrics/p HTTP/1.1\r\nHost: 127.0.0.1:8470\r\n"));
        assert!(text.ends_with("Authorization: Bearer t\r\n\r\n"));
        let req = get_request("/", "h:1", &["host: other".into()]);
        assert!(!String::from_utf8(req).unwrap().contains("Host: h:1"));
        assert!(check_header("Authorization: Bearer x").is_ok());
        assert!(check_header("no colon").is_err());
        assert!(check_header("Bad Name: x").is_err());
        assert!(check_header("X: a\r\nInjected: b").is_err());
    }

    #[tokio::test]
    async fn exchange_over_a_socket() {
        // A server that answers in pieces, then (second request) closes mid-body.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req).await.unwrap();
            for part in [
                &b"HTTP/1.1 200 OK\r\nTransfer-"[..],
                b"Encoding: chunked\r\n\r\n3\r\nab",
                b"c\r\n0\r\n\r\n",
            ] {
                s.write_all(part).await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            let _ = s.read(&mut req).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
                .await
                .unwrap();
        });
        let mut c = Conn::connect(addr).await.unwrap();
        let req = get_request("/", "x", &[]);
        let r = c.exchange(&req).await.unwrap();
        assert_eq!((r.status, r.body_len, r.close), (200, 3, false));
        let e = c.exchange(&req).await.unwrap_err();
        assert!(format!("{e:#}").contains("3 of 10"), "{e:#}");
        server.await.unwrap();
    }
}
