//! A raw SSE client for the `sse` tests: the request written to a TCP
//! socket, the response head read, the chunked body decoded and parsed into
//! blocks here, so nothing between the gateway and the test interprets the
//! stream.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::status_of;

const T: Duration = Duration::from_secs(10);

/// One SSE block: its fields in order, and whether it was only comments.
#[derive(Debug, Default)]
pub struct Block {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
    pub retry: Option<u64>,
    pub comments: Vec<String>,
}

impl Block {
    pub fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().expect("data")).expect("data is JSON")
    }
}

/// A raw SSE client: the response head, then the de-chunked body parsed
/// into blocks.
pub struct Sse {
    stream: TcpStream,
    /// Raw bytes not yet de-chunked.
    raw: Vec<u8>,
    /// De-chunked body bytes not yet parsed into blocks.
    body: Vec<u8>,
    ended: bool,
    pub keepalives: usize,
}

/// A refused request: status and JSON body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: Value,
}

pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Sse, Refused> {
    open_on(
        TcpStream::connect(addr).await.expect("connect"),
        path,
        headers,
    )
    .await
}

pub async fn open_on(
    mut stream: TcpStream,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Sse, Refused> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(T, stream.read(&mut buf))
            .await
            .expect("response head in time")
            .expect("read");
        assert!(n > 0, "connection closed before the response head");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_lowercase();
    let rest = raw[head_end + 4..].to_vec();
    let status = status_of(&head);
    if status != 200 {
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = rest;
        while body.len() < len {
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            body.extend_from_slice(&buf[..n]);
        }
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        return Err(Refused { status, body });
    }
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    Ok(Sse {
        stream,
        raw: rest,
        body: Vec::new(),
        ended: false,
        keepalives: 0,
    })
}

impl Sse {
    /// Moves complete chunks from `raw` to `body`.
    fn dechunk(&mut self) {
        loop {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size_text = String::from_utf8_lossy(&self.raw[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|_| panic!("chunk size line {size_text:?}"));
            if size == 0 {
                self.ended = true;
                self.raw.clear();
                return;
            }
            let start = line_end + 2;
            if self.raw.len() < start + size + 2 {
                return;
            }
            self.body.extend_from_slice(&self.raw[start..start + size]);
            self.raw.drain(..start + size + 2);
        }
    }

    /// The next block (comments included), or `None` once the stream ended.
    pub async fn next_block(&mut self, within: Duration) -> Option<Block> {
        let deadline = Instant::now() + within;
        loop {
            self.dechunk();
            if let Some(end) = self.body.windows(2).position(|w| w == b"\n\n") {
                let text = String::from_utf8(self.body[..end].to_vec()).expect("UTF-8 events");
                self.body.drain(..end + 2);
                return Some(parse_block(&text));
            }
            if self.ended {
                return None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let mut buf = [0u8; 16 * 1024];
            let n = match tokio::time::timeout(left, self.stream.read(&mut buf)).await {
                Err(_) => panic!("no event within {within:?}"),
                Ok(Ok(n)) => n,
                Ok(Err(_)) => 0,
            };
            if n == 0 {
                self.ended = true;
                continue;
            }
            self.raw.extend_from_slice(&buf[..n]);
        }
    }

    /// The next event (comments counted and skipped).
    pub async fn next_event(&mut self, within: Duration) -> Block {
        loop {
            let b = self.next_block(within).await.expect("the stream ended");
            if b.data.is_none() && b.event.is_none() {
                if b.comments.iter().any(|c| c == "keep-alive") {
                    self.keepalives += 1;
                }
                continue;
            }
            return b;
        }
    }
}

fn parse_block(text: &str) -> Block {
    let mut b = Block::default();
    for line in text.split('\n') {
        if let Some(c) = line.strip_prefix(':') {
            b.comments.push(c.trim().to_owned());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => b.id = Some(value.to_owned()),
            "event" => b.event = Some(value.to_owned()),
            "retry" => b.retry = value.parse().ok(),
            "data" => match &mut b.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => b.data = Some(value.to_owned()),
            },
            other => panic!("unknown field {other:?} in {text:?}"),
        }
    }
    b
}
