//! Response parsing edge cases (partial reads, framing, interim answers,
//! malformed heads) and the client over a real socket.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    // The same length twice is tolerated; two different ones are not.
    let twice = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\nx";
    assert_eq!(complete(twice, false).body_len, 1);
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
    // Only a final `chunked` frames the body: here the close does.
    let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nzz";
    assert_eq!(parse(raw, false).unwrap(), Parsed::Incomplete);
    assert_eq!(complete(raw, true).body_len, 2);
    let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    assert!(parse(bad, false).is_err());
}

#[test]
fn close_and_eof() {
    // HTTP/1.0 closes unless keep-alive; Connection: close always does.
    let r = complete(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false);
    assert!(r.close);
    let r = complete(
        b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
        false,
    );
    assert!(!r.close);
    let r = complete(
        b"HTTP/1.1 200 OK\r\nConnection: te, close\r\nContent-Length: 0\r\n\r\n",
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
    // A 101 to a plain request is a protocol error, not an interim answer.
    assert!(parse(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", false).is_err());
}

#[test]
fn malformed_heads() {
    let bad: [&[u8]; 6] = [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
    ];
    for raw in bad {
        assert!(
            parse(raw, false).is_err(),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
    // More fields than there are slots.
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..=response::MAX_HEADERS {
        many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert!(parse(&many, false).is_err());
}

#[test]
fn head_fields() {
    let raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade:  WebSocket \r\n\
                Connection: keep-alive\r\nconnection: Upgrade\r\n\r\n\x81\x00";
    let mut slots = header_slots();
    let head = parse_head(raw, &mut slots).unwrap().unwrap();
    assert_eq!(
        (head.version, head.status, head.reason),
        (1, 101, "Switching Protocols")
    );
    assert_eq!(
        head.len,
        raw.len() - 2,
        "the frame after the head is not part of it"
    );
    assert_eq!(head.header("UPGRADE"), Some(&b"WebSocket"[..]));
    assert!(head.has_token("Connection", "upgrade"));
    assert!(!head.has_token("connection", "close"));
    assert_eq!(head.header("sec-websocket-accept"), None);
    let mut slots = header_slots();
    assert!(parse_head(&raw[..20], &mut slots).unwrap().is_none());
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
    let req = get_request("/", "x", &[], false);
    let r = c.exchange(&req).await.unwrap();
    assert_eq!((r.status, r.body_len, r.close), (200, 3, false));
    let e = c.exchange(&req).await.unwrap_err();
    assert!(format!("{e:#}").contains("3 of 10"), "{e:#}");
    server.await.unwrap();
}

#[tokio::test]
async fn pipelined_responses_in_one_read() {
    let mut wire = Vec::new();
    for (status, body) in [(200, "a"), (201, ""), (404, "nope")] {
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        wire.extend_from_slice(head.as_bytes());
        wire.extend_from_slice(body.as_bytes());
    }
    let mut io = &wire[..];
    let mut responses = Responses::with_capacity(64);
    let mut got = Vec::new();
    for _ in 0..3 {
        let r = responses.next(&mut io).await.unwrap();
        got.push((r.status, r.body_len, r.close));
    }
    assert_eq!(got, [(200, 1, false), (201, 0, false), (404, 4, false)]);
    let e = responses.next(&mut io).await.unwrap_err();
    assert!(format!("{e:#}").contains("before a response"), "{e:#}");
}
