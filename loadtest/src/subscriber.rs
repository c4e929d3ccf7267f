//! One subscriber task: connects (from its source address), waits until it
//! is subscribed, then reads frames, scanning each text frame for its
//! sequence number and send time without parsing the JSON.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::pool::Shared;
use crate::scenario::Mode;
use crate::seq::SeqTracker;
use crate::wsclient::{self, FrameRef};
use crate::{clock, histo};

/// Starting read buffer; grows (to `MAX_READ`) while reads fill it.
const MIN_READ: usize = 2 * 1024;
const MAX_READ: usize = 64 * 1024;
/// A slow reader in delay mode reads at most this much per wake-up.
const SLOW_READ: usize = 4 * 1024;
/// How long a stopped reader drains its socket at the end to learn how it was closed.
const FINAL_DRAIN: Duration = Duration::from_millis(1_500);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    /// Reads everything: the delivery guarantees are judged on these.
    Normal,
    /// Stops reading (or reads slowly) once subscribed.
    Slow,
    /// Drops and re-opens its connection during the run.
    Reconnect,
}

#[derive(Debug, Clone, Copy)]
pub struct Role {
    pub persona: u32,
    pub group: Group,
    pub source: Option<std::net::IpAddr>,
    /// For `Reconnect`: when to drop, after the publish phase starts.
    pub reconnect_after: Option<Duration>,
}

/// What one subscriber saw.
#[derive(Debug, Default)]
pub struct Outcome {
    pub ready: bool,
    /// Became ready only after publishing started (its head is skipped).
    pub late: bool,
    pub tracker: SeqTracker,
    /// Close code sent by the server (1005: close without code).
    pub close_code: Option<u16>,
    /// The server ended the connection without a close frame.
    pub eof: bool,
    pub error: Option<String>,
    pub reconnects: u32,
}

/// Per-connection read state.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Fragments of a message split into continuation frames.
    frag: Vec<u8>,
    frag_op: u8,
    /// Client frames to send after processing a read (pong, close).
    out: Vec<u8>,
    /// Next seq seen starts a new epoch (after a reconnect or a late subscribe).
    resume: bool,
    closed: bool,
}

/// Runs one subscriber to the end of the run. `permit` bounds concurrent
/// handshakes: released once subscribed on pulsegate, and right after the
/// upgrade on generic servers, whose subscribers only become ready on a
/// probe sent once every connection was tried.
pub async fn run(
    shared: Arc<Shared>,
    role: Role,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Outcome {
    let mut outcome = Outcome::default();
    let persona = shared.plan.persona(role.persona);
    let path = shared.path(&persona);
    let mut conn = match open(&shared, &path, &persona, role.source, true).await {
        Ok(c) => c,
        Err(e) => {
            shared.progress.failed.inc();
            outcome.error = Some(format!("{e:#}"));
            return outcome;
        }
    };
    let mut permit = Some(permit);
    if shared.plan.mode == Mode::Generic {
        permit = None;
    }
    let ready = wait_ready(&shared, &mut conn, &mut outcome).await;
    drop(permit);
    if !ready {
        return outcome;
    }
    match role.group {
        Group::Normal => read_loop(&shared, &mut conn, &mut outcome, None, true).await,
        Group::Slow => {
            let delay = shared.plan.slow.as_ref().map_or(0, |s| s.read_delay_ms);
            if delay == 0 {
                shared.stop.cancelled().await;
                final_drain(&shared, &mut conn, &mut outcome).await;
            } else {
                let delay = Some(Duration::from_millis(delay));
                read_loop(&shared, &mut conn, &mut outcome, delay, false).await;
            }
        }
        Group::Reconnect => {
            let after = role.reconnect_after.unwrap_or_default();
            let timer = async {
                let start = shared.started().await;
                tokio::time::sleep_until((start + after).into()).await;
            };
            tokio::select! {
                _ = timer => {}
                _ = read_loop(&shared, &mut conn, &mut outcome, None, true) => return outcome,
            }
            drop(conn);
            let began = Instant::now();
            conn = match open(&shared, &path, &persona, role.source, false).await {
                Ok(c) => c,
                Err(e) => {
                    outcome.error = Some(format!("reconnect: {e:#}"));
                    return outcome;
                }
            };
            conn.resume = true;
            if !wait_ready(&shared, &mut conn, &mut outcome).await {
                return outcome;
            }
            shared.record_timing(&shared.reconnect_hist, began.elapsed());
            shared.progress.reconnected.inc();
            outcome.reconnects += 1;
            read_loop(&shared, &mut conn, &mut outcome, None, true).await;
        }
    }
    outcome
}

/// Connects and upgrades; sends the subscribe request on the multiplexed endpoint.
async fn open(
    shared: &Shared,
    path: &str,
    persona: &str,
    source: Option<std::net::IpAddr>,
    first: bool,
) -> anyhow::Result<Conn> {
    let began = Instant::now();
    let mut buf = Vec::with_capacity(MIN_READ);
    let timeout = Duration::from_secs_f64(shared.plan.connect_timeout_s);
    let stream = wsclient::connect(&shared.ws, path, source, timeout, &mut buf).await?;
    if first {
        shared.record_timing(&shared.connect_hist, began.elapsed());
        shared.progress.upgraded.inc();
    }
    let mut conn = Conn {
        stream,
        buf,
        frag: Vec::new(),
        frag_op: 0,
        out: Vec::new(),
        resume: false,
        closed: false,
    };
    if shared.plan.mode == Mode::PulsegateMux {
        let msg = format!(r#"{{"type":"subscribe","channel":"persona:{persona}"}}"#);
        let frame = wsclient::client_frame(wsclient::OP_TEXT, msg.as_bytes());
        conn.stream.write_all(&frame).await?;
    }
    Ok(conn)
}

/// Reads until the subscription is confirmed. False: the connection ended
/// first, or the run stopped.
async fn wait_ready(shared: &Shared, conn: &mut Conn, outcome: &mut Outcome) -> bool {
    let began = Instant::now();
    let marker: &[u8] = match shared.plan.mode {
        Mode::Pulsegate => b"\"initial_data\"",
        Mode::PulsegateMux => b"\"subscribed\"",
        Mode::Generic => crate::publisher::PROBE_MARK,
    };
    let stop = shared.stop.cancelled();
    tokio::pin!(stop);
    loop {
        let mut found = false;
        if !conn.buf.is_empty() {
            let end = process(shared, conn, outcome, false, Some(marker), &mut found);
            conn.buf.drain(..end);
            if let Err(e) = flush(conn).await {
                outcome.error = Some(e.to_string());
                return false;
            }
            if found {
                if !outcome.ready {
                    outcome.ready = true;
                    outcome.late = shared.is_started();
                    shared.progress.ready.inc();
                    shared.record_timing(&shared.ready_hist, began.elapsed());
                }
                return true;
            }
        }
        if conn.closed {
            return false;
        }
        tokio::select! {
            biased;
            _ = &mut stop => return false,
            r = read_more(conn, MAX_READ) => match r {
                Ok(0) => { outcome.eof = true; return false; }
                Ok(_) => {}
                Err(e) => { outcome.error = Some(e.to_string()); return false; }
            }
        }
    }
}

/// The steady state: read, account, repeat until stopped or closed.
async fn read_loop(
    shared: &Shared,
    conn: &mut Conn,
    outcome: &mut Outcome,
    delay: Option<Duration>,
    record_latency: bool,
) {
    let cap = if delay.is_some() { SLOW_READ } else { MAX_READ };
    // One waiter for the whole loop: `cancelled()` registers under the
    // token's lock, which every subscriber shares.
    let stop = shared.stop.cancelled();
    tokio::pin!(stop);
    while !conn.closed {
        let r = tokio::select! {
            biased;
            _ = &mut stop => return,
            r = read_more(conn, cap) => r,
        };
        match r {
            Ok(0) => {
                outcome.eof = true;
                return;
            }
            Ok(_) => {
                let mut found = false;
                let end = process(shared, conn, outcome, record_latency, None, &mut found);
                conn.buf.drain(..end);
                if let Err(e) = flush(conn).await {
                    outcome.error = Some(e.to_string());
                    return;
                }
            }
            Err(e) => {
                outcome.error = Some(e.to_string());
                return;
            }
        }
        if let Some(d) = delay {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(d) => {}
            }
        }
    }
}

/// A reader that stopped reading: at the end, takes what the socket still
/// holds, to count it and to learn whether the server closed it (and how).
async fn final_drain(shared: &Shared, conn: &mut Conn, outcome: &mut Outcome) {
    while !conn.closed {
        match tokio::time::timeout(FINAL_DRAIN, read_more(conn, MAX_READ)).await {
            Ok(Ok(0)) => {
                outcome.eof = true;
                return;
            }
            Ok(Ok(_)) => {
                let mut found = false;
                let end = process(shared, conn, outcome, false, None, &mut found);
                conn.buf.drain(..end);
            }
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

async fn read_more(conn: &mut Conn, cap: usize) -> std::io::Result<usize> {
    if conn.buf.capacity() - conn.buf.len() < 1024 {
        // Double while reads fill the buffer, up to MAX_READ of spare room.
        let grow = conn.buf.capacity().clamp(MIN_READ, MAX_READ);
        conn.buf.reserve(grow);
    }
    if cap < MAX_READ {
        // Slow readers take at most `cap` bytes per wake-up.
        let mut limited = (&mut conn.stream).take(cap as u64);
        return limited.read_buf(&mut conn.buf).await;
    }
    conn.stream.read_buf(&mut conn.buf).await
}

async fn flush(conn: &mut Conn) -> std::io::Result<()> {
    if !conn.out.is_empty() {
        conn.stream.write_all(&conn.out).await?;
        conn.out.clear();
    }
    Ok(())
}

/// Handles every complete frame in the buffer; returns the bytes consumed.
/// `marker`: while waiting to be subscribed, sets `found` when a text frame
/// contains it. Runs without awaiting, so the thread's histogram stays locked
/// for the whole batch.
fn process(
    shared: &Shared,
    conn: &mut Conn,
    outcome: &mut Outcome,
    record_latency: bool,
    marker: Option<&[u8]>,
    found: &mut bool,
) -> usize {
    let now = clock::now_ns();
    let mut pos = 0;
    let mut delivered = 0u64;
    histo::with_latency(|hist| loop {
        let frame = match wsclient::parse_frame(&mut conn.buf, pos) {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                outcome.error = Some(e.to_string());
                conn.closed = true;
                break;
            }
        };
        pos = frame.end;
        let FrameRef {
            fin,
            opcode,
            start,
            end,
        } = frame;
        let text: Option<&[u8]> = match opcode {
            wsclient::OP_TEXT | wsclient::OP_BINARY if fin => Some(&conn.buf[start..end]),
            wsclient::OP_TEXT | wsclient::OP_BINARY => {
                conn.frag_op = opcode;
                conn.frag.clear();
                conn.frag.extend_from_slice(&conn.buf[start..end]);
                None
            }
            wsclient::OP_CONT => {
                conn.frag.extend_from_slice(&conn.buf[start..end]);
                if fin && conn.frag_op != 0 {
                    conn.frag_op = 0;
                    Some(&conn.frag[..])
                } else {
                    None
                }
            }
            wsclient::OP_PING => {
                let pong = wsclient::client_frame(wsclient::OP_PONG, &conn.buf[start..end]);
                conn.out.extend_from_slice(&pong);
                None
            }
            wsclient::OP_CLOSE => {
                let code = wsclient::close_code(&conn.buf[start..end]);
                outcome.close_code = Some(code);
                let echo = wsclient::client_frame(wsclient::OP_CLOSE, &code.to_be_bytes());
                conn.out.extend_from_slice(&echo);
                conn.closed = true;
                shared.progress.closed.inc();
                None
            }
            _ => None,
        };
        let Some(text) = text else {
            if conn.closed {
                break;
            }
            continue;
        };
        let seq = shared.marks.seq(text);
        if let (Some(m), false) = (marker, *found) {
            // Subscribed: the marker, or (generic servers) any data message.
            let generic_data = shared.plan.mode == Mode::Generic && seq.is_some();
            if generic_data || memchr::memmem::find(text, m).is_some() {
                *found = true;
                if shared.is_started() {
                    conn.resume = true;
                }
            }
        }
        let Some(seq) = seq else {
            continue;
        };
        if conn.resume {
            outcome.tracker.resume_at(seq);
            conn.resume = false;
        }
        outcome.tracker.record(seq);
        delivered += 1;
        if record_latency {
            if let Some(sent) = shared.marks.sent_ns(text) {
                hist.saturating_record(now.saturating_sub(sent) / 1_000);
            }
        }
    });
    if delivered > 0 {
        shared.progress.delivered.add(delivered);
    }
    pos
}
