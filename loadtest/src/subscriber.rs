//! One subscriber task: connects (from its source address), waits until it
//! is subscribed, then reads frames, scanning each text frame for its
//! sequence number and send time without parsing the JSON.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::pool::Shared;
use crate::scenario::Mode;
use crate::seq::SeqTracker;
use crate::ws_client::{self, Batch, WsConn};
use crate::{clock, histo};

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

/// A subscriber's connection, and where its accounting stands on it.
struct Conn {
    ws: WsConn,
    /// Next seq seen starts a new epoch (after a reconnect or a late subscribe).
    resume: bool,
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
    let timeout = Duration::from_secs_f64(shared.plan.connect_timeout_s);
    let mut ws = ws_client::connect(&shared.ws, path, source, timeout).await?;
    if first {
        shared.record_timing(&shared.connect_hist, began.elapsed());
        shared.progress.upgraded.inc();
    }
    if shared.plan.mode == Mode::PulsegateMux {
        let msg = format!(r#"{{"type":"subscribe","channel":"persona:{persona}"}}"#);
        ws.send_text(msg.as_bytes()).await?;
    }
    Ok(Conn { ws, resume: false })
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
        if conn.ws.has_buffered() {
            process(shared, conn, outcome, false, Some(marker), &mut found);
            if let Err(e) = conn.ws.flush().await {
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
        if conn.ws.is_closed() {
            return false;
        }
        tokio::select! {
            biased;
            _ = &mut stop => return false,
            r = conn.ws.read_more(None) => match r {
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
    let limit = delay.map(|_| SLOW_READ);
    // One waiter for the whole loop: `cancelled()` registers under the
    // token's lock, which every subscriber shares.
    let stop = shared.stop.cancelled();
    tokio::pin!(stop);
    while !conn.ws.is_closed() {
        let r = tokio::select! {
            biased;
            _ = &mut stop => return,
            r = conn.ws.read_more(limit) => r,
        };
        match r {
            Ok(0) => {
                outcome.eof = true;
                return;
            }
            Ok(_) => {
                let mut found = false;
                process(shared, conn, outcome, record_latency, None, &mut found);
                if let Err(e) = conn.ws.flush().await {
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
    while !conn.ws.is_closed() {
        match tokio::time::timeout(FINAL_DRAIN, conn.ws.read_more(None)).await {
            Ok(Ok(0)) => {
                outcome.eof = true;
                return;
            }
            Ok(Ok(_)) => {
                let mut found = false;
                process(shared, conn, outcome, false, None, &mut found);
            }
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

/// Accounts for every complete message in the buffer (see
/// [`WsConn::process`]). `marker`: while waiting to be subscribed, sets
/// `found` when a text frame contains it. Runs without awaiting, so the
/// thread's histogram stays locked for the whole batch.
fn process(
    shared: &Shared,
    conn: &mut Conn,
    outcome: &mut Outcome,
    record_latency: bool,
    marker: Option<&[u8]>,
    found: &mut bool,
) {
    let now = clock::now_ns();
    let mut delivered = 0u64;
    let Conn { ws, resume } = conn;
    let end = histo::with_latency(|hist| {
        ws.process(|text| {
            let seq = shared.marks.seq(text);
            if let (Some(m), false) = (marker, *found) {
                // Subscribed: the marker, or (generic servers) any data message.
                let generic_data = shared.plan.mode == Mode::Generic && seq.is_some();
                if generic_data || memchr::memmem::find(text, m).is_some() {
                    *found = true;
                    if shared.is_started() {
                        *resume = true;
                    }
                }
            }
            let Some(seq) = seq else {
                return;
            };
            if *resume {
                outcome.tracker.resume_at(seq);
                *resume = false;
            }
            outcome.tracker.record(seq);
            delivered += 1;
            if record_latency {
                if let Some(sent) = shared.marks.sent_ns(text) {
                    hist.saturating_record(now.saturating_sub(sent) / 1_000);
                }
            }
        })
    });
    match end {
        Batch::Open => {}
        Batch::Closed(code) => {
            outcome.close_code = Some(code);
            shared.progress.closed.inc();
        }
        Batch::Malformed(e) => outcome.error = Some(e.to_string()),
    }
    if delivered > 0 {
        shared.progress.delivered.add(delivered);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, C, F>(_: impl Fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A subscriber's task is allocated at the size of its largest state,
    /// for the whole run, up to ~19k times per process. It was 1,080 bytes
    /// in a test build (1,040 in release) before the HTTP and WebSocket
    /// clients were merged; an upgrade that kept its request headers and a
    /// second copy of the address across an await once added 216. A new
    /// compiler may move the figure a little: re-measure, and raise the
    /// bound only knowingly.
    #[test]
    fn the_task_stays_small() {
        let size = future_size(run);
        assert!(size <= 1_080, "a subscriber's task takes {size} bytes");
    }
}
