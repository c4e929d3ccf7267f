//! permessage-deflate (RFC 7692): standard clients (Python `websockets`,
//! driven by compression/clients.py) negotiate it and receive every message
//! intact beside clients without it; a publication is compressed once
//! however many clients take it, and a snapshot's `initial_data` once per
//! read however many joining clients share the read; a deflate bomb closes
//! 1009 with memory bounded.

use std::process::Stdio;
use std::time::Duration;

use fred::prelude::*;
use pulsegate::metrics::{Compressed, CompressedLabel};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::common::*;

const CHANNEL: &str = "pulse:{p}:events";

fn python() -> String {
    std::env::var("PULSEGATE_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into())
}

/// A publication of about `pad` bytes more than its envelope.
fn payload(seq: usize, pad: usize) -> String {
    let words = ["views", "interactions", "variant", "persona", "hook"];
    let note: Vec<&str> = (0..pad / 8).map(|i| words[(i * 7 + seq) % 5]).collect();
    json!({"type": "variant_update", "seq": seq,
           "data": {"event_type": "early_kill", "variant_id": format!("v{seq}"), "note": note.join(" ")}})
    .to_string()
}

fn runs(gw: &pulsegate::server::Running, kind: Compressed) -> u64 {
    let label = CompressedLabel { kind };
    gw.app.metrics.compressions.runs.get_or_create(&label).get()
}

fn broadcasts(gw: &pulsegate::server::Running) -> u64 {
    runs(gw, Compressed::Broadcast)
}

/// Runs clients.py with `compressed` + `plain` clients on persona `p`,
/// publishes `messages` once they are ready, and returns its summary.
async fn run_clients(
    gw: &pulsegate::server::Running,
    publisher: &Client,
    compressed: usize,
    plain: usize,
    messages: &[String],
) -> Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/integration/compression/clients.py"
    );
    let mut child = tokio::process::Command::new(python())
        .arg(script)
        .arg(format!("ws://{}/ws", gw.local_addr))
        .arg("persona:p")
        .arg(compressed.to_string())
        .arg(plain.to_string())
        .arg(messages.len().to_string())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 with websockets (scripts/ensure-python.sh)");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(180), lines.next_line())
        .await
        .expect("clients ready in time")
        .expect("read");
    assert_eq!(first.as_deref(), Some("ready"));
    for m in messages {
        let _: i64 = publisher
            .publish(CHANNEL, m.as_str())
            .await
            .expect("publish");
    }
    let summary = tokio::time::timeout(Duration::from_secs(180), lines.next_line())
        .await
        .expect("clients done in time")
        .expect("read")
        .expect("a summary line");
    let status = child.wait().await.expect("wait");
    assert!(status.success(), "clients.py failed");
    serde_json::from_str(&summary).expect("summary json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_and_plain_clients_on_one_channel_receive_everything() {
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(test_config(&redis)).await;
    let publisher = redis.client().await;
    // Small ones (under the 256-byte threshold once wrapped) go out plain,
    // to everyone; the rest compressed to the clients that negotiated it.
    let messages: Vec<String> = (0..40)
        .map(|i| payload(i, if i % 4 == 0 { 8 } else { 200 + i * 150 }))
        .collect();
    let large = messages.iter().filter(|m| m.len() > 300).count() as u64;
    let s = run_clients(&gw, &publisher, 3, 2, &messages).await;
    assert_eq!(s["negotiated"], json!([true, true, true, false, false]));
    assert_eq!(s["counts"], json!([40, 40, 40, 40, 40]));
    assert_eq!(s["distinct"], 1, "every client read the same text");
    for (got, sent) in s["sample"]
        .as_array()
        .expect("sample")
        .iter()
        .zip(&messages)
    {
        let got: Value = serde_json::from_str(got.as_str().expect("text")).expect("json");
        let sent: Value = serde_json::from_str(sent).expect("json");
        assert_eq!(got["data"], sent);
    }
    assert_eq!(broadcasts(&gw), large, "one compression per large message");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_to_1000_compressing_clients_compresses_each_message_once() {
    let _heavy = heavy().await;
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(test_config(&redis)).await;
    let publisher = redis.client().await;
    let messages: Vec<String> = (0..10).map(|i| payload(i, 2000)).collect();
    let s = run_clients(&gw, &publisher, 1000, 0, &messages).await;
    let negotiated = s["negotiated"].as_array().expect("negotiated");
    assert_eq!(negotiated.len(), 1000);
    assert!(negotiated.iter().all(|n| n == true));
    assert!(s["counts"]
        .as_array()
        .expect("counts")
        .iter()
        .all(|c| c == 10));
    assert_eq!(s["distinct"], 1);
    assert_eq!(broadcasts(&gw), 10, "not 10 x 1000");
    gw.shutdown().await;
}

/// A raw client on `/ws` that offers `extensions`; returns the socket and
/// the response head.
async fn raw_upgrade(addr: std::net::SocketAddr, extensions: &str) -> (TcpStream, String) {
    raw_upgrade_to(addr, "/ws", extensions).await
}

async fn raw_upgrade_to(
    addr: std::net::SocketAddr,
    path: &str,
    extensions: &str,
) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: {extensions}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.expect("response head");
        head.push(b[0]);
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

/// A masked client frame; `first` is the first header byte.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut f = vec![first];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend((n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend((n as u64).to_be_bytes());
        }
    }
    f.extend(mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// The next server frame: (first header byte, payload).
async fn server_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await.expect("frame header");
    let len = match h[1] & 0x7f {
        126 => s.read_u16().await.expect("len") as usize,
        127 => s.read_u64().await.expect("len") as usize,
        n => n as usize,
    };
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).await.expect("payload");
    (h[0], p)
}

/// Raw deflate, sync-flushed, tail removed: what a client sends.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = flate2::Compress::new(flate2::Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() / 100 + 1024);
    loop {
        let consumed = c.total_in() as usize;
        out.reserve(64 * 1024);
        c.compress_vec(&data[consumed..], &mut out, flate2::FlushCompress::Sync)
            .expect("deflate");
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// A server message's payload inflated (RFC 7692 §7.2.2: the tail put back).
fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut d = flate2::Decompress::new(false);
    let mut input = payload.to_vec();
    input.extend([0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(input.len() * 20 + 1024);
    loop {
        let consumed = d.total_in() as usize;
        out.reserve(64 * 1024);
        d.decompress_vec(&input[consumed..], &mut out, flate2::FlushDecompress::Sync)
            .expect("inflate");
        if d.total_in() as usize == input.len() && out.len() < out.capacity() {
            break;
        }
    }
    out
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_client_messages_are_inflated_and_a_deflate_bomb_closes_1009() {
    let _heavy = heavy().await;
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(test_config(&redis)).await;
    let addr = gw.local_addr;

    // A compressed subscribe, split over two fragments, is understood.
    let (mut s, head) = raw_upgrade(addr, "permessage-deflate; client_max_window_bits").await;
    assert!(
        head.contains("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        "{head}"
    );
    let sub = deflate(br#"{"type":"subscribe","channel":"persona:p"}"#);
    let (a, b) = sub.split_at(sub.len() / 2);
    s.write_all(&client_frame(0x41, a)).await.expect("write");
    s.write_all(&client_frame(0x80, b)).await.expect("write");
    let (first, text) = server_frame(&mut s).await;
    assert_eq!(first, 0x81, "a small reply goes out plain");
    let v: Value = serde_json::from_slice(&text).expect("json");
    assert_eq!(v["type"], "subscribed");

    // Each bomb is under the wire limit but inflates to 48 MiB.
    let bomb = deflate(&vec![b' '; 48 << 20]);
    assert!(bomb.len() < 65_536, "{}", bomb.len());
    let before = rss_kib();
    let mut bombers = Vec::new();
    for _ in 0..16 {
        let bomb = bomb.clone();
        bombers.push(tokio::spawn(async move {
            let (mut s, _) = raw_upgrade(addr, "permessage-deflate").await;
            s.write_all(&client_frame(0xC1, &bomb))
                .await
                .expect("write");
            loop {
                let (first, payload) = server_frame(&mut s).await;
                if first & 0x0f == 0x8 {
                    return u16::from_be_bytes([payload[0], payload[1]]);
                }
            }
        }));
    }
    for b in bombers {
        assert_eq!(b.await.expect("bomber"), 1009);
    }
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    // Unbounded, 16 bombs would hold 768 MiB; bounded, 16 × 64 KiB.
    assert!(grown_mib < 200, "RSS grew by {grown_mib} MiB");

    // RSV1 without the extension negotiated is a protocol error.
    let mut plain = connect_raw_without_extension(addr).await;
    plain
        .write_all(&client_frame(0xC1, &sub))
        .await
        .expect("write");
    let (first, payload) = server_frame(&mut plain).await;
    assert_eq!(first & 0x0f, 0x8);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1002);
    gw.shutdown().await;
}

async fn connect_raw_without_extension(addr: std::net::SocketAddr) -> TcpStream {
    let (s, head) = raw_upgrade(addr, "x-unknown").await;
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "{head}"
    );
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_off_answers_without_the_extension() {
    let redis = RedisServer::spawn().await;
    let mut config = test_config(&redis);
    config.ws.compression = pulsegate::config::Compression::Off;
    let gw = start_gateway(config).await;
    let (_s, head) = raw_upgrade(gw.local_addr, "permessage-deflate").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "{head}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_joining_at_once_share_one_compression_of_initial_data() {
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(test_config(&redis)).await;
    let publisher = redis.client().await;
    for i in 0..5 {
        let v = format!("v{i}");
        ingest(&publisher, "p", posted(&v, 0.5, "hook"))
            .await
            .expect("ingest");
        ingest(&publisher, "p", perf(&v, 100 + i, 7))
            .await
            .expect("ingest");
    }
    let reads_before = gw.app.metrics.reads.snapshot_reads.get();

    // Redis held still while they connect: the sessions all wait for the
    // one SUBSCRIBE confirmation, then ask for the snapshot together and
    // share its reads.
    let (compressing, plain) = (24, 2);
    redis.signal("-STOP");
    let mut sockets = Vec::new();
    for i in 0..compressing + plain {
        let ext = if i < compressing {
            "permessage-deflate"
        } else {
            "x-unknown"
        };
        let (s, head) = raw_upgrade_to(gw.local_addr, "/dashboard/ws/p", ext).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert_eq!(
            head.contains("permessage-deflate"),
            i < compressing,
            "{head}"
        );
        sockets.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.signal("-CONT");

    let mut summaries = Vec::new();
    for (i, s) in sockets.iter_mut().enumerate() {
        let (first, payload) = tokio::time::timeout(Duration::from_secs(20), server_frame(s))
            .await
            .expect("initial_data in time");
        let text = if i < compressing {
            assert_eq!(first, 0xC1, "client {i}: compressed (RSV1) text");
            inflate(&payload)
        } else {
            assert_eq!(first, 0x81, "client {i}: plain text");
            payload
        };
        let v: Value = serde_json::from_slice(&text).expect("json");
        assert_eq!(v["type"], "initial_data", "client {i}");
        summaries.push(v["data"]["active_variants"].clone());
    }
    assert_eq!(summaries[0].as_array().map(Vec::len), Some(5));
    assert!(summaries.iter().all(|s| *s == summaries[0]));

    let reads = gw.app.metrics.reads.snapshot_reads.get() - reads_before;
    let snapshot_runs = runs(&gw, Compressed::Snapshot);
    assert!(reads < (compressing + plain) as u64, "{reads} reads shared");
    assert!(
        (1..=reads).contains(&snapshot_runs),
        "{snapshot_runs} compressions of initial_data for {reads} reads"
    );
    assert_eq!(
        runs(&gw, Compressed::Connection),
        0,
        "initial_data is not compressed per connection"
    );
    gw.shutdown().await;
}
