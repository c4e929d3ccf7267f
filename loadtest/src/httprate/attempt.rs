//! One request of `http-rate`: on the connection kept alive from the one
//! before, or (`--fresh-connections`) on a new one dropped after the answer.
//! A failure says where it happened: the TCP connect, the exchange, or the
//! clock ran out once connected.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::{timeout_at, Instant};

use crate::http_client::{Conn, Response};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The TCP connect failed (refused, reset) or was not answered in time.
    Connect(String),
    /// Connected, but no complete response: I/O error, malformed answer,
    /// closed before the response ended.
    Exchange(String),
    /// Connected; the response was not complete within the timeout.
    Timeout(Duration),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) | Failure::Exchange(e) => f.write_str(e),
            Failure::Timeout(t) => write!(f, "no complete response within {t:?}"),
        }
    }
}

/// Sends `request` on `conn`, connecting first when there is none (always
/// with `fresh`). Afterwards `conn` holds the connection only if it can
/// carry the next request. `timeout` bounds connect and exchange together.
pub async fn attempt(
    conn: &mut Option<Conn>,
    addr: SocketAddr,
    request: &[u8],
    fresh: bool,
    timeout: Duration,
    connects: &mut u64,
) -> Result<Response, Failure> {
    let give_up = Instant::now() + timeout;
    if fresh {
        *conn = None;
    }
    let c = match conn {
        Some(c) => c,
        None => {
            *connects += 1;
            match timeout_at(give_up, Conn::connect(addr)).await {
                Ok(Ok(c)) => conn.insert(c),
                Ok(Err(e)) => return Err(Failure::Connect(format!("{e:#}"))),
                Err(_) => {
                    return Err(Failure::Connect(format!(
                        "connect to {addr}: not answered within {timeout:?}"
                    )))
                }
            }
        }
    };
    let result = match timeout_at(give_up, c.exchange(request)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(Failure::Exchange(format!("{e:#}"))),
        Err(_) => Err(Failure::Timeout(timeout)),
    };
    if fresh || result.as_ref().map_or(true, |r| r.close) {
        *conn = None;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_client::get_request;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Like pulsegate's accept-time refusal: answer 429 before reading the
    /// request, shut down, then read what came and close.
    async fn refusing_server(n: usize) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            for _ in 0..n {
                let (mut s, _) = listener.accept().await.unwrap();
                s.write_all(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
                    .await
                    .unwrap();
                let _ = s.shutdown().await;
                let mut buf = [0u8; 1024];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            }
        });
        (addr, task)
    }

    #[tokio::test]
    async fn a_fresh_connection_per_request() {
        let (addr, server) = refusing_server(3).await;
        let req = get_request("/healthz", "x", &[], true);
        let (mut conn, mut connects) = (None, 0);
        for _ in 0..3 {
            let r = attempt(
                &mut conn,
                addr,
                &req,
                true,
                Duration::from_secs(5),
                &mut connects,
            )
            .await
            .unwrap();
            assert_eq!((r.status, r.close), (429, true));
            assert!(conn.is_none());
        }
        assert_eq!(connects, 3);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn connect_failures_are_told_apart() {
        // A port nobody listens on: refused at connect.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let req = get_request("/", "x", &[], true);
        let (mut conn, mut connects) = (None, 0);
        let e = attempt(
            &mut conn,
            addr,
            &req,
            true,
            Duration::from_secs(5),
            &mut connects,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&e, Failure::Connect(m) if m.contains("refused")),
            "{e}"
        );
        assert_eq!(connects, 1);

        // Accepted, then closed without a word: an exchange failure.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            drop(s);
            // Accepted and silent: the client times out.
            let (s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
            drop(s);
        });
        let e = attempt(
            &mut conn,
            addr,
            &req,
            true,
            Duration::from_secs(5),
            &mut connects,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, Failure::Exchange(_)), "{e}");
        let t = Duration::from_millis(100);
        let e = attempt(&mut conn, addr, &req, true, t, &mut connects)
            .await
            .unwrap_err();
        assert_eq!(e, Failure::Timeout(t));
        assert!(conn.is_none());
        server.await.unwrap();
    }
}
