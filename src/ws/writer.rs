//! A connection's writer task: drains its outbox and writes everything queued
//! in as few `write` calls as it can (one write per batch, not per frame).
//!
//! A busy client's writes may be paced (`ws.write_delay`, off by default):
//! after a write, the next waits until the delay has passed, so what
//! arrives meanwhile shares one `write` call, the gateway's main cost
//! (docs/benchmarks.md); an idle client's first message still goes out at
//! once.
//!
//! A client that stops reading only stalls this task; once its backlog
//! overflows and a close is requested, the writer gets `slow_close_grace`
//! to deliver what it holds and the close frame, then drops the socket.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::hub::outbox::{Drained, Outbox};
use crate::metrics::Metrics;

/// Upper bound of one batch; large enough to amortise the syscall, small
/// enough to keep the copy in cache.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// How a connection's writes are timed.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// How long a client that does not read gets after its close is asked for.
    pub grace: Duration,
    /// `ws.write_delay`: the least time between two writes.
    pub write_delay: Duration,
}

pub async fn run<W>(outbox: Arc<Outbox>, mut io: W, pacing: Pacing, metrics: Arc<Metrics>)
where
    W: AsyncWrite + Unpin,
{
    let grace = pacing.grace;
    let mut buf = Vec::new();
    // When the last write ended; `None` once the writer has idled since.
    let mut last_write: Option<Instant> = None;
    loop {
        buf.clear();
        if let Some(last) = last_write {
            // Cancel-safe without care: nothing is taken before the sleep.
            tokio::time::sleep_until(last + pacing.write_delay).await;
        }
        match outbox.drain(&mut buf, MAX_BATCH_BYTES) {
            Drained::Frames(n) => {
                if !write_bounded(&mut io, &buf, &outbox, grace).await {
                    outbox.abandon();
                    return;
                }
                metrics.frames_sent.inc_by(n as u64);
                metrics.write_batches.inc();
                if !pacing.write_delay.is_zero() {
                    last_write = Some(Instant::now());
                }
            }
            Drained::Close(frame) => {
                let _ = tokio::time::timeout(grace, async {
                    io.write_all(&frame).await?;
                    io.shutdown().await
                })
                .await;
                outbox.abandon();
                return;
            }
            Drained::Empty => {
                // Idle: hold no buffer while waiting (most connections are
                // idle most of the time); the next batch takes a new one.
                buf = Vec::new();
                outbox.wait().await;
                buf.reserve(8 * 1024);
                // Still within the delay after the last write: the sleep
                // above lets more arrive; long past it, it returns at once.
                if last_write.is_some_and(|l| l.elapsed() >= pacing.write_delay) {
                    last_write = None;
                }
            }
            Drained::Finished => return,
        }
        if buf.capacity() > 4 * MAX_BATCH_BYTES {
            buf = Vec::with_capacity(8 * 1024);
        }
    }
}

/// Writes `buf`; gives up `grace` after a close was requested (the client is
/// not reading) or on any I/O error. Returns whether the write completed.
async fn write_bounded<W>(io: &mut W, buf: &[u8], outbox: &Outbox, grace: Duration) -> bool
where
    W: AsyncWrite + Unpin,
{
    let deadline = async {
        outbox.closing().cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        r = io.write_all(buf) => r.is_ok(),
        _ = deadline => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::outbox::Limits;

    /// An outbox whose writer may start at once, and its metrics.
    fn released_outbox() -> (Arc<Outbox>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let limits = Limits {
            max_messages: 16,
            max_conflated: 16,
        };
        let outbox = Arc::new(Outbox::new(limits, metrics.clone()));
        outbox.release(Vec::new(), None);
        (outbox, metrics)
    }

    /// A client that disconnects while its writer idles must not keep the
    /// socket (and its per-IP slot) until the close grace runs out.
    #[tokio::test]
    async fn an_idle_writer_ends_as_soon_as_the_outbox_is_abandoned() {
        let (outbox, metrics) = released_outbox();
        // A grace far beyond the wait below: only a wake-up can end the writer.
        let grace = Duration::from_secs(3600);
        let pacing = Pacing {
            grace,
            write_delay: Duration::ZERO,
        };
        let writer = tokio::spawn(run(outbox.clone(), tokio::io::sink(), pacing, metrics));
        tokio::task::yield_now().await;
        outbox.abandon();
        let ended = tokio::time::timeout(Duration::from_secs(10), writer).await;
        assert!(
            ended.is_ok(),
            "the writer was still waiting after its grace"
        );
    }

    fn delivery(text: &'static str) -> crate::hub::outbox::Delivery {
        crate::hub::outbox::Delivery {
            frame: bytes::Bytes::from_static(text.as_bytes()),
            conflation_key: None,
            offset: None,
            channel: None,
        }
    }

    /// Lets the writer run without moving the (paused) clock.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    /// Messages that reach a busy client within `write_delay` of its last
    /// write go out together, and an idle client's first message at once.
    #[tokio::test(start_paused = true)]
    async fn a_busy_clients_messages_share_one_write_and_an_idle_ones_go_at_once() {
        let (outbox, metrics) = released_outbox();
        let pacing = Pacing {
            grace: Duration::from_secs(5),
            write_delay: Duration::from_millis(5),
        };
        let writer = tokio::spawn(run(
            outbox.clone(),
            tokio::io::sink(),
            pacing,
            metrics.clone(),
        ));
        outbox.push(&delivery("a"));
        settle().await;
        assert_eq!(
            metrics.write_batches.get(),
            1,
            "the first message waits for nothing"
        );
        outbox.push(&delivery("b"));
        outbox.push(&delivery("c"));
        settle().await;
        assert_eq!(
            metrics.write_batches.get(),
            1,
            "within the delay: held back"
        );
        tokio::time::sleep(Duration::from_millis(6)).await;
        settle().await;
        assert_eq!(metrics.frames_sent.get(), 3);
        assert_eq!(metrics.write_batches.get(), 2, "b and c share one write");
        // Long idle: the next message goes out without waiting.
        tokio::time::sleep(Duration::from_secs(1)).await;
        outbox.push(&delivery("d"));
        settle().await;
        assert_eq!(metrics.write_batches.get(), 3);
        outbox.abandon();
        let _ = writer.await;
    }
}
