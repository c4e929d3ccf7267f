//! Response heads and bodies, parsed in place from the read buffer with
//! httparse. Nothing is copied or allocated, so the pipelined HTTP publisher
//! can afford one parse per message.

use anyhow::{bail, Context};

use super::body::chunked_body;

/// The most header fields a response head may carry.
pub const MAX_HEADERS: usize = 64;

/// Room for the header fields of one head; lives on the caller's stack so
/// that a parsed [`Head`] can borrow it.
pub type HeaderSlots<'b> = [httparse::Header<'b>; MAX_HEADERS];

pub fn header_slots<'b>() -> HeaderSlots<'b> {
    [httparse::EMPTY_HEADER; MAX_HEADERS]
}

/// A parsed response head; names and values borrow from the read buffer.
#[derive(Debug)]
pub struct Head<'h, 'b> {
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub status: u16,
    pub reason: &'b str,
    /// Bytes the head took, blank line included: where the body starts.
    pub len: usize,
    headers: &'h [httparse::Header<'b>],
}

impl<'b> Head<'_, 'b> {
    /// Every value of the fields called `name` (case-insensitive), trimmed.
    pub fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'b [u8]> + 's {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.trim_ascii())
    }

    /// The value of the first field called `name`.
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.values(name).next()
    }

    /// Whether a comma-separated field such as `Connection: keep-alive,
    /// Upgrade` lists `token` (case-insensitive), in any of its occurrences.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.values(name).any(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    }
}

/// Parses the response head at the start of `buf`; `None` while incomplete.
pub fn parse_head<'h, 'b>(
    buf: &'b [u8],
    slots: &'h mut HeaderSlots<'b>,
) -> anyhow::Result<Option<Head<'h, 'b>>> {
    let mut r = httparse::Response::new(slots);
    let len = match r.parse(buf).context("malformed response head")? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    Ok(Some(Head {
        version: r.version.unwrap_or(1),
        status: r.code.unwrap_or(0),
        reason: r.reason.unwrap_or(""),
        len,
        headers: r.headers,
    }))
}

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

/// How a head says its body ends (RFC 9112 §6.3).
struct Framing {
    length: Option<usize>,
    chunked: bool,
    close: bool,
}

fn framing(head: &Head) -> anyhow::Result<Framing> {
    let mut length: Option<usize> = None;
    for value in head.values("content-length") {
        let text = std::str::from_utf8(value).unwrap_or("");
        let n: usize = text
            .parse()
            .with_context(|| format!("bad Content-Length `{text}`"))?;
        if length.is_some_and(|l| l != n) {
            bail!("conflicting Content-Length headers");
        }
        length = Some(n);
    }
    // Only a final `chunked` frames the body; the last field decides.
    let chunked = head.values("transfer-encoding").last().is_some_and(|v| {
        v.rsplit(|&b| b == b',')
            .next()
            .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
    });
    let close = head.has_token("connection", "close")
        || (head.version == 0 && !head.has_token("connection", "keep-alive"));
    Ok(Framing {
        length,
        chunked,
        close,
    })
}

/// Parses the response at the start of `buf`. `eof`: the peer closed the
/// connection, so nothing more will arrive (ends a close-delimited body;
/// anything else still incomplete is an error). Interim 1xx responses are
/// skipped. Stateless: call again with the grown buffer after each read.
pub fn parse(buf: &[u8], eof: bool) -> anyhow::Result<Parsed> {
    let mut offset = 0;
    loop {
        let mut slots = header_slots();
        let Some(head) = parse_head(&buf[offset..], &mut slots)? else {
            if eof {
                bail!("connection closed before a complete response head");
            }
            return Ok(Parsed::Incomplete);
        };
        let status = head.status;
        let body_at = offset + head.len;
        if (100..200).contains(&status) {
            // A 101 answers an upgrade, which only the WebSocket client asks for.
            if status == 101 {
                bail!("unexpected 101 Switching Protocols");
            }
            offset = body_at;
            continue;
        }
        let Framing {
            length,
            chunked,
            mut close,
        } = framing(&head)?;
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
