//! One client as the protocol asks it to behave through a rolling restart:
//! connect through the balancer (or straight to its own instance, falling
//! over to the next when that one refuses), keep the last offset, and on every close
//! wait as told (`1012` with `{"reconnect_ms":n}`: about `n`, plus jitter;
//! anything else: a short jittered backoff), then reconnect and resume
//! with `?since=` (`/dashboard/ws`) or `"since"` (`/ws`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

use super::ledger::{self, Ledger};
use super::pool::Shared;
use crate::clock;
use crate::ws_client::{self, Batch, WsConn};

/// Backoff after a failed connect or a close without a hint, as the
/// dashboard's own client (`ui/connection.js`): attempt n waits between
/// half and all of min(15 s, 500 ms × 2ⁿ).
const BASE_DELAY_MS: u64 = 500;
const MAX_DELAY_MS: u64 = 15_000;
/// A `reconnect_ms` hint above this is taken as this (a broken hint must
/// not park a client for the rest of the run).
const MAX_HINT_MS: u64 = 30_000;

/// What one client saw over the whole run.
#[derive(Debug, Default)]
pub struct Outcome {
    pub ledger: Ledger,
    /// Got its first snapshot: from then on it is owed every event.
    pub started: bool,
    /// Connections opened after a close (or a lost connection).
    pub reconnects: u32,
    /// Closes that carried a `reconnect_ms` hint.
    pub hinted: u32,
    /// Reconnects answered with a fresh snapshot instead of the resume.
    pub refused_resumes: u32,
    /// Connections the server ended without a close frame.
    pub eof: u32,
    /// Connects that failed (refused, upgrade refused, timed out).
    pub connect_failures: u32,
    /// Read errors, malformed frames, `{"type":"error"}` messages.
    pub errors: u32,
    /// Still connected when the run stopped.
    pub connected_at_end: bool,
}

/// How one connection ended.
enum End {
    Stopped,
    Closed { code: u16, hint_ms: Option<u64> },
    Lost,
}

/// What the current connection has shown so far.
struct ConnState {
    /// When the upgrade completed: events published before it reached this
    /// connection as a replay (or a client's catch-up), not live.
    up_ns: u64,
    /// Opened to resume: a snapshot on it means the resume was refused.
    resuming: bool,
    refused: bool,
}

/// Runs client `index` (persona `persona`, source `source`) until the run
/// stops. `permit` bounds the first handshakes; it is given back once the
/// first snapshot arrived (or the first connection ended).
pub async fn run(
    shared: Arc<Shared>,
    index: u32,
    persona: u32,
    source: Option<std::net::IpAddr>,
    permit: OwnedSemaphorePermit,
) -> Outcome {
    let mut out = Outcome::default();
    let mut permit = Some(permit);
    let persona = shared.plan.persona(persona);
    let timeout = Duration::from_secs_f64(shared.plan.connect_timeout_s);
    let stop = shared.stop.clone();
    let mut attempt = 0u32;
    let mut lost_at: Option<Instant> = None;
    // When the wait after the last close ended.
    let mut waited_at: Option<Instant> = None;
    loop {
        let since = out.ledger.last.filter(|_| out.started);
        let path = shared.path(&persona, since);
        let began = Instant::now();
        let connected = tokio::select! {
            _ = stop.cancelled() => break,
            c = ws_client::connect(shared.target(index, attempt), &path, source, timeout) => c,
        };
        let mut ws = match connected {
            Ok(ws) => ws,
            Err(e) => {
                out.connect_failures += 1;
                shared.progress.connect_failures.inc();
                shared.sample_error(format!("connect: {e:#}"));
                let delay = backoff(attempt);
                attempt += 1;
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        attempt = 0;
        match lost_at.take() {
            Some(t) => {
                shared.record(&shared.timings.reconnect, t.elapsed());
                if let Some(w) = waited_at.take() {
                    shared.record(&shared.timings.after_wait, w.elapsed());
                }
                out.reconnects += 1;
                shared.progress.reconnects.inc();
            }
            None if !out.started => {
                shared.record(&shared.timings.first_connect, began.elapsed());
                shared.progress.upgraded.inc();
            }
            None => {}
        }
        if shared.mux {
            let msg = subscribe_message(&persona, since);
            if let Err(e) = ws.send_text(msg.as_bytes()).await {
                shared.sample_error(format!("send subscribe: {e}"));
            }
        }
        shared.progress.connected.inc();
        let mut conn = ConnState {
            up_ns: clock::now_ns(),
            resuming: out.started,
            refused: false,
        };
        let end = read(&shared, index, &mut ws, &mut conn, &mut out, &mut permit).await;
        shared.progress.connected.dec();
        drop(permit.take());
        let delay = match end {
            End::Stopped => {
                out.connected_at_end = true;
                break;
            }
            End::Closed { code, hint_ms } => {
                shared.closed(code);
                match hint_ms {
                    Some(ms) => {
                        out.hinted += 1;
                        jittered(ms.min(MAX_HINT_MS), shared.plan_jitter())
                    }
                    None => backoff(0),
                }
            }
            End::Lost => backoff(0),
        };
        lost_at = Some(Instant::now());
        drop(ws);
        shared.record(&shared.timings.wait, delay);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
        waited_at = Some(Instant::now());
    }
    out
}

/// `{"type":"subscribe","channel":"persona:<id>"[,"since":"<offset>"]}`.
fn subscribe_message(persona: &str, since: Option<u64>) -> String {
    match since {
        Some(o) => format!(
            r#"{{"type":"subscribe","channel":"persona:{persona}","since":"{}"}}"#,
            ledger::format(o)
        ),
        None => format!(r#"{{"type":"subscribe","channel":"persona:{persona}"}}"#),
    }
}

/// Reads one connection to its end, accounting for every frame.
async fn read(
    shared: &Shared,
    index: u32,
    ws: &mut WsConn,
    conn: &mut ConnState,
    out: &mut Outcome,
    permit: &mut Option<OwnedSemaphorePermit>,
) -> End {
    let stop = shared.stop.cancelled();
    tokio::pin!(stop);
    loop {
        if ws.has_buffered() {
            let mut close = None;
            let batch = process(shared, index, ws, conn, out, &mut close);
            if out.started {
                drop(permit.take());
            }
            // The pong or the close echo; a failure shows on the next read.
            let _ = ws.flush().await;
            match batch {
                Batch::Open => {}
                Batch::Closed(code) => {
                    let hint_ms = close.flatten();
                    return End::Closed { code, hint_ms };
                }
                Batch::Malformed(e) => {
                    out.errors += 1;
                    shared.sample_error(format!("malformed frame: {e:#}"));
                    return End::Lost;
                }
            }
        }
        tokio::select! {
            biased;
            _ = &mut stop => return End::Stopped,
            r = ws.read_more(None) => match r {
                Ok(0) => {
                    out.eof += 1;
                    shared.progress.eof.inc();
                    return End::Lost;
                }
                Ok(_) => {}
                Err(e) => {
                    out.errors += 1;
                    shared.sample_error(format!("read: {e}"));
                    return End::Lost;
                }
            }
        }
    }
}

/// What a server frame is, by its start (the gateway writes `type` first).
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    /// `initial_data` covering this offset (0: `null`, no stream yet).
    Snapshot(u64),
    /// `/ws`'s `subscribed`, with the offset and `recovered` it carries
    /// (both absent before DECISIONS #6).
    Subscribed {
        offset: Option<u64>,
        recovered: Option<bool>,
    },
    /// A stream event: `variant_update`, or `/ws`'s `message` around one.
    Event(u64),
    Error,
    Other,
}

fn classify(text: &[u8]) -> Frame {
    if text.starts_with(br#"{"type":"initial_data""#) {
        // The snapshot itself may hold offsets: only look before `data`.
        let head = memchr::memmem::find(text, br#""data":"#).unwrap_or(text.len());
        return Frame::Snapshot(offset_in(&text[..head]).unwrap_or(0));
    }
    if text.starts_with(br#"{"type":"subscribed""#) {
        let has = |m: &[u8]| memchr::memmem::find(text, m).is_some();
        let recovered = if has(br#""recovered":true"#) {
            Some(true)
        } else if has(br#""recovered":false"#) {
            Some(false)
        } else {
            None
        };
        let offset = offset_in(text);
        return Frame::Subscribed { offset, recovered };
    }
    if text.starts_with(br#"{"type":"error""#) {
        return Frame::Error;
    }
    if text.starts_with(br#"{"type":"status""#) || text.starts_with(br#"{"type":"pong""#) {
        return Frame::Other;
    }
    offset_in(text).map_or(Frame::Other, Frame::Event)
}

/// The first `"offset":"<ms>-<seq>"` in the frame: the top-level one, or on
/// `/ws` (before offsets moved to the top) the wrapped event's own.
fn offset_in(text: &[u8]) -> Option<u64> {
    const MARK: &[u8] = br#""offset":""#;
    let at = memchr::memmem::find(text, MARK)?;
    ledger::parse(&text[at + MARK.len()..])
}

/// `{"reconnect_ms":<n>}` in a close reason.
fn hint(reason: &[u8]) -> Option<u64> {
    const MARK: &[u8] = br#""reconnect_ms":"#;
    let at = memchr::memmem::find(reason, MARK)?;
    crate::pool::digits(&reason[at + MARK.len()..])
}

/// Handles every complete frame in the buffer without awaiting.
fn process(
    shared: &Shared,
    index: u32,
    ws: &mut WsConn,
    conn: &mut ConnState,
    out: &mut Outcome,
    close: &mut Option<Option<u64>>,
) -> Batch {
    let now = clock::now_ns();
    let restarting = shared.is_restarting();
    let mut delivered = 0u64;
    let mut hists = shared.latency_shard(index);
    let batch = ws.process_with_close(
        |text| match classify(text) {
            Frame::Snapshot(offset) => snapshot(shared, conn, out, offset),
            Frame::Subscribed { offset, recovered } => {
                subscribed(shared, conn, out, offset, recovered)
            }
            Frame::Other => {}
            Frame::Event(offset) => {
                out.ledger.event(offset);
                delivered += 1;
                if let Some(sent) = shared.marks.sent_ns(text) {
                    let us = now.saturating_sub(sent) / 1_000;
                    let h = if sent < conn.up_ns {
                        &mut hists.replayed
                    } else if restarting {
                        &mut hists.restarting
                    } else {
                        &mut hists.steady
                    };
                    h.saturating_record(us);
                }
            }
            Frame::Error => {
                out.errors += 1;
                shared.sample_error(String::from_utf8_lossy(text).into_owned());
            }
        },
        |_, reason| *close = Some(hint(reason)),
    );
    drop(hists);
    if delivered > 0 {
        shared.progress.delivered.add(delivered);
    }
    batch
}

/// An `initial_data` (or a `subscribed` that says the resume failed).
fn snapshot(shared: &Shared, conn: &mut ConnState, out: &mut Outcome, offset: u64) {
    out.ledger.snapshot(offset);
    if !out.started {
        out.started = true;
        shared.progress.started.inc();
    } else if conn.resuming && !conn.refused {
        conn.refused = true;
        out.refused_resumes += 1;
    }
}

/// `/ws`'s `subscribed`: the start (with its offset, or the floor), or the
/// answer to a resume: `recovered: true` replays; `false` names the
/// snapshot's offset; none at all (a gateway before DECISIONS #6) means
/// `since` was not understood and the subscription simply went on live.
fn subscribed(
    shared: &Shared,
    conn: &mut ConnState,
    out: &mut Outcome,
    offset: Option<u64>,
    recovered: Option<bool>,
) {
    if !out.started {
        out.started = true;
        shared.progress.started.inc();
        if let Some(o) = offset {
            out.ledger.snapshot(o);
        }
        return;
    }
    if !conn.resuming || recovered == Some(true) {
        return;
    }
    if !conn.refused {
        conn.refused = true;
        out.refused_resumes += 1;
    }
    match (recovered, offset) {
        (Some(false), Some(o)) => out.ledger.snapshot(o),
        _ => out.ledger.refused_until_next_event(),
    }
}

/// About `hint_ms`, plus up to `jitter × hint + 100 ms` at random.
fn jittered(hint_ms: u64, jitter: f64) -> Duration {
    let spread = (hint_ms as f64 * jitter) as u64 + 100;
    Duration::from_millis(hint_ms + ws_client::next_random() % spread)
}

fn backoff(attempt: u32) -> Duration {
    let cap = MAX_DELAY_MS.min(BASE_DELAY_MS << attempt.min(16));
    Duration::from_millis(cap / 2 + ws_client::next_random() % (cap / 2 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_told_apart() {
        let o = ledger::pack(1_795_318_622_093, 2).unwrap();
        assert_eq!(
            classify(br#"{"type":"initial_data","offset":"1795318622093-2","data":{}}"#),
            Frame::Snapshot(o)
        );
        assert_eq!(
            classify(br#"{"type":"initial_data","offset":null,"data":{"offset":"1-1"}}"#),
            Frame::Snapshot(0)
        );
        assert_eq!(
            classify(br#"{"type":"variant_update","timestamp":"x","offset":"1795318622093-2","data":{}}"#),
            Frame::Event(o)
        );
        // /ws before and after offsets moved to the top level.
        assert_eq!(
            classify(br#"{"type":"message","channel":"persona:a","data":{"type":"variant_update","offset":"1795318622093-2"}}"#),
            Frame::Event(o)
        );
        assert_eq!(
            classify(br#"{"type":"message","channel":"persona:a","offset":"1795318622093-2","data":{"offset":"1795318622093-2"}}"#),
            Frame::Event(o)
        );
        assert_eq!(
            classify(br#"{"type":"subscribed","channel":"persona:a","offset":"1795318622093-2","recovered":true}"#),
            Frame::Subscribed {
                offset: Some(o),
                recovered: Some(true)
            }
        );
        assert_eq!(
            classify(br#"{"type":"subscribed","channel":"persona:a","offset":"1795318622093-2","recovered":false}"#),
            Frame::Subscribed {
                offset: Some(o),
                recovered: Some(false)
            }
        );
        assert_eq!(
            classify(br#"{"type":"subscribed","channel":"persona:a"}"#),
            Frame::Subscribed {
                offset: None,
                recovered: None
            }
        );
        assert_eq!(classify(br#"{"type":"error","code":"x"}"#), Frame::Error);
        assert_eq!(
            classify(br#"{"type":"status","redis":"down"}"#),
            Frame::Other
        );
    }

    #[test]
    fn hints_and_delays() {
        assert_eq!(hint(br#"{"reconnect_ms":750}"#), Some(750));
        assert_eq!(hint(b"server shutting down"), None);
        for _ in 0..100 {
            let d = jittered(1_000, 0.2).as_millis();
            assert!((1_000..1_300).contains(&d), "{d}");
            let b = backoff(0).as_millis();
            assert!((250..=500).contains(&b), "{b}");
            assert!(backoff(30).as_millis() <= 15_000);
        }
    }

    #[test]
    fn subscribe_messages() {
        assert_eq!(
            subscribe_message("p1", None),
            r#"{"type":"subscribe","channel":"persona:p1"}"#
        );
        let o = ledger::pack(17, 3).unwrap();
        assert_eq!(
            subscribe_message("p1", Some(o)),
            r#"{"type":"subscribe","channel":"persona:p1","since":"17-3"}"#
        );
    }
}
