//! A connection's writer task: drains its outbox and writes everything queued
//! in as few `write` calls as it can (one write per batch, not per frame).
//!
//! A client that stops reading only stalls this task; once its backlog
//! overflows and a close is requested, the writer gets `slow_close_grace`
//! to deliver what it holds and the close frame, then drops the socket.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::hub::outbox::{Drained, Outbox};
use crate::metrics::Metrics;

/// Upper bound of one batch; large enough to amortise the syscall, small
/// enough to keep the copy in cache.
const MAX_BATCH_BYTES: usize = 64 * 1024;

pub async fn run<W>(outbox: Arc<Outbox>, mut io: W, grace: Duration, metrics: Arc<Metrics>)
where
    W: AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match outbox.drain(&mut buf, MAX_BATCH_BYTES) {
            Drained::Frames(n) => {
                if !write_bounded(&mut io, &buf, &outbox, grace).await {
                    outbox.abandon();
                    return;
                }
                metrics.frames_sent.inc_by(n as u64);
                metrics.write_batches.inc();
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

    /// A client that disconnects while its writer idles must not keep the
    /// socket (and its per-IP slot) until the close grace runs out.
    #[tokio::test]
    async fn an_idle_writer_ends_as_soon_as_the_outbox_is_abandoned() {
        let metrics = Arc::new(Metrics::new());
        let limits = Limits {
            max_messages: 16,
            max_conflated: 16,
        };
        let outbox = Arc::new(Outbox::new(limits, metrics.clone()));
        outbox.release(Vec::new(), None);
        // A grace far beyond the wait below: only a wake-up can end the writer.
        let grace = Duration::from_secs(3600);
        let writer = tokio::spawn(run(outbox.clone(), tokio::io::sink(), grace, metrics));
        tokio::task::yield_now().await;
        outbox.abandon();
        let ended = tokio::time::timeout(Duration::from_secs(10), writer).await;
        assert!(
            ended.is_ok(),
            "the writer was still waiting after its grace"
        );
    }
}
