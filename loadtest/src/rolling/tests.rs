//! A client against a scripted gateway that drains it the way DECISIONS #7
//! says: close 1012 with `{"reconnect_ms":n}`. The client must wait about
//! `n`, come back with `?since=` its last offset, and end up clean.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::client;
use super::ledger::pack;
use super::pool::Shared;
use crate::cli::{Cli, Command};

/// Above the 250–500 ms backoff of a close without a hint: a wait this
/// long can only come from the hint.
const HINT_MS: u64 = 700;

fn text_frame(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&[0x81, 126]);
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn event(offset: &str) -> String {
    format!(
        r#"{{"type":"variant_update","timestamp":"x","offset":"{offset}","data":{{"view_count":1,"last_updated":{}}}}}"#,
        crate::clock::now_ns() / 1_000_000
    )
}

/// Reads the upgrade request, answers 101; returns the request path.
async fn accept(s: &mut TcpStream) -> String {
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
    let accept = crate::ws_client::accept_key(key);
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        std::str::from_utf8(&accept).unwrap()
    );
    s.write_all(answer.as_bytes()).await.unwrap();
    text.split_whitespace().nth(1).unwrap().to_string()
}

#[tokio::test]
async fn a_drained_client_waits_as_told_and_resumes_from_its_offset() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // (path, when it arrived) of each connection.
    let seen: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let closed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (seen2, closed2) = (seen.clone(), closed_at.clone());
    let server = tokio::spawn(async move {
        let (mut first, _) = listener.accept().await.unwrap();
        let path = accept(&mut first).await;
        seen2.lock().unwrap().push((path, Instant::now()));
        let mut out = Vec::new();
        text_frame(
            &mut out,
            r#"{"type":"initial_data","offset":"100-0","data":{"offset":"1-0"}}"#,
        );
        text_frame(&mut out, &event("101-0"));
        let reason = format!(r#"{{"reconnect_ms":{HINT_MS}}}"#);
        out.extend_from_slice(&[0x88, 2 + reason.len() as u8, 0x03, 0xF4]);
        out.extend_from_slice(reason.as_bytes());
        first.write_all(&out).await.unwrap();
        *closed2.lock().unwrap() = Some(Instant::now());
        let (mut second, _) = listener.accept().await.unwrap();
        let path = accept(&mut second).await;
        seen2.lock().unwrap().push((path, Instant::now()));
        // The replay of what it missed, then a live one.
        let mut out = Vec::new();
        text_frame(&mut out, &event("102-0"));
        text_frame(&mut out, &event("103-0"));
        second.write_all(&out).await.unwrap();
        let mut rest = Vec::new();
        let _ = second.read_to_end(&mut rest).await;
    });

    let target = format!("ws://127.0.0.1:{port}");
    let cli = Cli::parse_from([
        "pulsegate-loadtest",
        "run",
        "rolling-restart",
        "--target",
        &target,
        "--subscribers",
        "1",
        "--personas",
        "1",
    ]);
    let Command::Run(args) = cli.command else {
        panic!("run expected")
    };
    let shared = Arc::new(Shared::new(args.plan().unwrap()).unwrap());
    let permit = Arc::new(tokio::sync::Semaphore::new(1))
        .acquire_owned()
        .await
        .unwrap();
    let task = tokio::spawn(client::run(shared.clone(), 0, 0, None, permit));
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.progress.delivered.get() < 3 {
        assert!(Instant::now() < deadline, "the client did not come back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shared.stop.cancel();
    let out = task.await.unwrap();
    server.abort();

    let seen = seen.lock().unwrap();
    let persona = shared.plan.persona(0);
    assert_eq!(seen[0].0, format!("/dashboard/ws/{persona}"));
    assert_eq!(seen[1].0, format!("/dashboard/ws/{persona}?since=101-0"));
    let waited = seen[1].1 - closed_at.lock().unwrap().unwrap();
    // About the hint, plus at most 20% of it and 100 ms of jitter (and a
    // second of slack for a busy machine).
    assert!(
        waited >= Duration::from_millis(HINT_MS)
            && waited < Duration::from_millis(HINT_MS * 12 / 10 + 100 + 1_000),
        "waited {waited:?}"
    );
    assert_eq!((out.reconnects, out.hinted, out.refused_resumes), (1, 1, 0));
    let stream: Vec<u64> = (100..=103).map(|ms| pack(ms, 0).unwrap()).collect();
    let v = out.ledger.verify(&stream, 0);
    assert_eq!((v.owed, v.received), (3, 3));
    assert!(v.clean(), "{v:?}");
}
