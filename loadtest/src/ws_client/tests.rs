//! The handshake's accept check, and a connection against a scripted server.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::frame::{OP_CLOSE, OP_PONG};
use super::*;

/// RFC 6455 §1.3's worked example.
const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const RFC_ACCEPT: &[u8; 28] = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn answer(status: &str, headers: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status}\r\n{headers}\r\n").into_bytes()
}

const GOOD: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";

#[test]
fn accept_key_of_the_rfc_example() {
    assert_eq!(&accept_key(RFC_KEY), RFC_ACCEPT);
    let key = handshake_key();
    assert_eq!(BASE64.decode(key).unwrap().len(), 16);
    assert_ne!(key, handshake_key());
}

#[test]
fn a_matching_answer_is_accepted() {
    let mut raw = answer("101 Switching Protocols", GOOD);
    let head = raw.len();
    raw.extend_from_slice(&[0x81, 0x00]);
    assert_eq!(check_upgrade(&raw, RFC_ACCEPT).unwrap(), Some(head));
    assert_eq!(check_upgrade(&raw[..head - 1], RFC_ACCEPT).unwrap(), None);
    // Field names and the tokens are case-insensitive; Connection may list more.
    let relaxed = "upgrade: WebSocket\r\nconnection: keep-alive, upgrade\r\n\
                   sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";
    let raw = answer("101 Switching Protocols", relaxed);
    assert!(check_upgrade(&raw, RFC_ACCEPT).unwrap().is_some());
}

#[test]
fn a_wrong_answer_is_refused() {
    let refused = |raw: Vec<u8>| format!("{:#}", check_upgrade(&raw, RFC_ACCEPT).unwrap_err());
    let wrong = GOOD.replace("s3pP", "AAAA");
    let e = refused(answer("101 Switching Protocols", &wrong));
    assert!(e.contains("AAAALMBi") && e.contains("s3pPLMBi"), "{e}");
    let e = refused(answer(
        "101 Switching Protocols",
        "Upgrade: websocket\r\nConnection: Upgrade\r\n",
    ));
    assert!(e.contains("without Sec-WebSocket-Accept"), "{e}");
    let e = refused(answer("404 Not Found", "Content-Length: 0\r\n"));
    assert_eq!(e, "upgrade refused: HTTP 404 Not Found");
    let e = refused(answer("200 OK", GOOD));
    assert!(e.contains("HTTP 200"), "{e}");
    let e = refused(answer(
        "101 Switching Protocols",
        &GOOD.replace("websocket", "h2c"),
    ));
    assert!(e.contains("Upgrade: websocket"), "{e}");
    let e = refused(answer(
        "101 Switching Protocols",
        &GOOD.replace("Connection: Upgrade", "Connection: close"),
    ));
    assert!(e.contains("Connection: upgrade"), "{e}");
    assert!(check_upgrade(b"SSH-2.0-OpenSSH\r\n\r\n", RFC_ACCEPT).is_err());
}

/// A server that reads the upgrade request and answers it: with the right
/// accept, then `after` in the same write; or with a wrong accept.
async fn scripted_server(
    right: bool,
    after: Vec<u8>,
) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut req = Vec::new();
        while !req.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            s.read_exact(&mut byte).await.unwrap();
            req.push(byte[0]);
        }
        let text = String::from_utf8(req).unwrap();
        let key = text
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap();
        let accept = if right {
            accept_key(key)
        } else {
            accept_key("other")
        };
        let mut out = answer(
            "101 Switching Protocols",
            &format!(
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
                std::str::from_utf8(&accept).unwrap()
            ),
        );
        out.extend_from_slice(&after);
        s.write_all(&out).await.unwrap();
        // Whatever the client sends back, until it closes.
        let mut back = Vec::new();
        let _ = s.read_to_end(&mut back).await;
        back
    });
    (addr, task)
}

fn target(addr: SocketAddr) -> WsTarget {
    WsTarget {
        addr,
        host: addr.to_string(),
    }
}

#[tokio::test]
async fn upgrades_then_reads_frames() {
    // Came with the answer: a ping, a message in two fragments, a close (4008).
    let after = vec![
        0x89, 2, b'h', b'i', 0x01, 2, b'a', b'b', 0x80, 1, b'c', 0x88, 2, 0x0F, 0xA8,
    ];
    let (addr, server) = scripted_server(true, after).await;
    let timeout = Duration::from_secs(5);
    let mut ws = connect(&target(addr), "/ws", None, timeout).await.unwrap();
    assert!(ws.has_buffered());
    let mut messages = Vec::new();
    let end = ws.process(|m| messages.push(m.to_vec()));
    assert!(matches!(end, Batch::Closed(4008)), "{end:?}");
    assert_eq!(messages, [b"abc".to_vec()]);
    assert!(ws.is_closed() && !ws.has_buffered());
    ws.flush().await.unwrap();
    drop(ws);
    // The client answered the ping and echoed the close, both masked.
    let back = server.await.unwrap();
    assert_eq!(back[0], 0x80 | OP_PONG);
    assert_eq!(back[8], 0x80 | OP_CLOSE);
}

#[tokio::test]
async fn a_wrong_accept_fails_the_connect() {
    let (addr, server) = scripted_server(false, Vec::new()).await;
    let timeout = Duration::from_secs(5);
    let e = connect(&target(addr), "/ws", None, timeout)
        .await
        .err()
        .expect("refused");
    assert!(format!("{e:#}").contains("Sec-WebSocket-Accept"), "{e:#}");
    server.abort();
}

#[tokio::test]
async fn a_close_hands_over_its_code_and_reason() {
    // A drain's close: 1012 with the reconnect hint as its reason.
    let reason = br#"{"reconnect_ms":750}"#;
    let mut after = vec![0x81, 1, b'x', 0x88, 2 + reason.len() as u8, 0x03, 0xF4];
    after.extend_from_slice(reason);
    let (addr, server) = scripted_server(true, after).await;
    let timeout = Duration::from_secs(5);
    let mut ws = connect(&target(addr), "/ws", None, timeout).await.unwrap();
    let (mut messages, mut close) = (0, None);
    let end = ws.process_with_close(
        |_| messages += 1,
        |code, why| close = Some((code, why.to_vec())),
    );
    assert!(matches!(end, Batch::Closed(1012)), "{end:?}");
    assert_eq!(messages, 1);
    assert_eq!(close, Some((1012, reason.to_vec())));
    drop(ws);
    server.abort();
}
