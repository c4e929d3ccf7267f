//! The half of an upgraded connection the session reads from: the TCP
//! stream itself in practice (hyper hands it back by downcast), anything
//! else hyper upgraded otherwise. One concrete type keeps the session and
//! its reader free of generics and of a boxed stream.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;

use super::frames::WaitReadable;

pub enum ClientRead {
    Tcp(OwnedReadHalf),
    Other(tokio::io::ReadHalf<TokioIo<Upgraded>>),
}

impl AsyncRead for ClientRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            Self::Other(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl WaitReadable for ClientRead {
    /// A peek of one byte into a buffer that lives only within each poll.
    /// Not `OwnedReadHalf::readable`: that waits in the socket's waiter
    /// list and leaves its read slot holding the waker of the HTTP task
    /// that read the handshake, which keeps that finished task's memory
    /// (about 1.7 KiB) allocated for the connection's whole life. A peek
    /// waits in that slot, so its waker replaces the old one.
    fn readable(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        let mut tcp = match self {
            Self::Tcp(r) => Some(r),
            // No readiness to wait on: the read itself waits, holding its
            // buffer. Only a non-TCP upgrade gets here.
            Self::Other(_) => None,
        };
        std::future::poll_fn(move |cx| match tcp.as_mut() {
            Some(r) => {
                let mut byte = [0u8; 1];
                let mut buf = ReadBuf::new(&mut byte);
                r.poll_peek(cx, &mut buf).map_ok(|_| ())
            }
            None => Poll::Ready(Ok(())),
        })
    }
}
