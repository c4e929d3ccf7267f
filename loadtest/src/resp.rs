//! A bare RESP2 connection to Redis. Publishing at a fixed rate needs true
//! pipelining in publish order on one socket: commands are encoded into a
//! buffer and written as they fall due, while a separate task reads and
//! counts the replies.

use anyhow::{bail, Context};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::target::Url;

/// A reply, as far as the harness needs to look into one.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// Whether any string inside equals `needle`.
    pub fn contains_str(&self, needle: &str) -> bool {
        match self {
            Reply::Status(s) => s == needle,
            Reply::Bulk(Some(b)) => b == needle.as_bytes(),
            Reply::Array(Some(items)) => items.iter().any(|r| r.contains_str(needle)),
            _ => false,
        }
    }
}

/// Appends one command in RESP.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Reads one reply.
pub async fn read_reply<R: AsyncBufRead + Unpin>(r: &mut R) -> anyhow::Result<Reply> {
    let mut line = Vec::with_capacity(64);
    Box::pin(read_reply_inner(r, &mut line)).await
}

async fn read_reply_inner<R: AsyncBufRead + Unpin>(
    r: &mut R,
    line: &mut Vec<u8>,
) -> anyhow::Result<Reply> {
    line.clear();
    if r.read_until(b'\n', line).await? == 0 {
        bail!("Redis closed the connection");
    }
    if line.len() < 3 || !line.ends_with(b"\r\n") {
        bail!("malformed RESP line");
    }
    let body = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    Ok(match line[0] {
        b'+' => Reply::Status(body),
        b'-' => Reply::Error(body),
        b':' => Reply::Int(body.parse().context("RESP integer")?),
        b'$' => {
            let n: i64 = body.parse().context("RESP bulk length")?;
            if n < 0 {
                Reply::Bulk(None)
            } else {
                let mut data = vec![0u8; n as usize + 2];
                r.read_exact(&mut data).await?;
                data.truncate(n as usize);
                Reply::Bulk(Some(data))
            }
        }
        b'*' => {
            let n: i64 = body.parse().context("RESP array length")?;
            if n < 0 {
                Reply::Array(None)
            } else {
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(Box::pin(read_reply_inner(r, line)).await?);
                }
                Reply::Array(Some(items))
            }
        }
        other => bail!("unexpected RESP type byte {:?}", other as char),
    })
}

pub type Reader = BufReader<tokio::net::tcp::OwnedReadHalf>;
pub type Writer = tokio::net::tcp::OwnedWriteHalf;

/// Connects, authenticates and selects the database given in the URL
/// (`redis://[:password@]host:port[/db]`).
pub async fn connect(url: &str, allow_remote: bool) -> anyhow::Result<(Reader, Writer)> {
    let parsed = Url::parse(url)?;
    let addr = parsed.resolve(allow_remote)?;
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to Redis at {addr}"))?;
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut setup = Vec::new();
    let mut expected = 0;
    if let Some(pass) = password(url) {
        encode(&mut setup, &[b"AUTH", pass.as_bytes()]);
        expected += 1;
    }
    let db = parsed.path.trim_start_matches('/');
    if !db.is_empty() {
        encode(&mut setup, &[b"SELECT", db.as_bytes()]);
        expected += 1;
    }
    w.write_all(&setup).await?;
    for _ in 0..expected {
        if let Reply::Error(e) = read_reply(&mut r).await? {
            bail!("Redis setup: {e}");
        }
    }
    Ok((r, w))
}

/// One command, one reply (setup only; the hot path pipelines).
pub async fn call(r: &mut Reader, w: &mut Writer, args: &[&[u8]]) -> anyhow::Result<Reply> {
    let mut buf = Vec::new();
    encode(&mut buf, args);
    w.write_all(&buf).await?;
    read_reply(r).await
}

fn password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let pass = userinfo.rsplit(':').next()?;
    (!pass.is_empty()).then(|| pass.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parses_replies() {
        let raw = b"*3\r\n:1\r\n$3\r\nabc\r\n*1\r\n+OK\r\n-ERR x\r\n$-1\r\n";
        let mut r = BufReader::new(&raw[..]);
        let a = read_reply(&mut r).await.unwrap();
        assert!(a.contains_str("abc") && a.contains_str("OK"));
        assert_eq!(
            read_reply(&mut r).await.unwrap(),
            Reply::Error("ERR x".into())
        );
        assert_eq!(read_reply(&mut r).await.unwrap(), Reply::Bulk(None));
    }

    #[test]
    fn encodes_and_finds_passwords() {
        let mut b = Vec::new();
        encode(&mut b, &[b"PUBLISH", b"ch", b"{}"]);
        assert_eq!(b, b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$2\r\n{}\r\n");
        assert_eq!(password("redis://:pw@127.0.0.1:1/0").as_deref(), Some("pw"));
        assert_eq!(password("redis://127.0.0.1:1"), None);
    }
}
