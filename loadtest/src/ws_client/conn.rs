//! One WebSocket connection after the upgrade. Reads go into one buffer
//! that grows only while reads fill it; each complete data message is handed
//! to the caller as a slice of that buffer (or of the reassembly buffer,
//! for a fragmented one), so nothing is copied or allocated per message.
//! The frames the protocol obliges a client to send (pong, the close echo)
//! are queued and written after the batch.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::frame::{self, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT};

/// Starting read buffer: small, because ~19k of them live in one process
/// and most connections carry small frames.
pub const MIN_READ: usize = 2 * 1024;
/// Most spare room added at once while reads keep filling the buffer.
const MAX_READ: usize = 64 * 1024;

pub struct WsConn {
    stream: TcpStream,
    /// Bytes read and not yet handled (an incomplete frame at most, between batches).
    buf: Vec<u8>,
    /// A message split into continuation frames, until its final frame.
    frag: Vec<u8>,
    /// Opcode of the message being reassembled in `frag` (0: none).
    frag_op: u8,
    /// Frames to send back (pong, close echo), written by [`Self::flush`].
    out: Vec<u8>,
    /// The server closed, or sent something unparsable: nothing more to read.
    closed: bool,
}

/// How a batch of frames ended, besides the messages it carried.
#[derive(Debug)]
pub enum Batch {
    /// Every complete frame was handled; more may come.
    Open,
    /// The server's close frame, with its code (1005: none); the echo is queued.
    Closed(u16),
    /// A frame could not be parsed: the connection is of no further use.
    Malformed(anyhow::Error),
}

impl WsConn {
    /// `buf` holds whatever arrived after the upgrade answer's head.
    pub(super) fn new(stream: TcpStream, buf: Vec<u8>) -> Self {
        Self {
            stream,
            buf,
            frag: Vec::new(),
            frag_op: 0,
            out: Vec::new(),
            closed: false,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Bytes were read (or came with the upgrade answer) that no batch handled yet.
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Sends one text message (a masked frame) right away.
    pub async fn send_text(&mut self, text: &[u8]) -> io::Result<()> {
        frame::write_client_frame(&mut self.out, OP_TEXT, text);
        self.flush().await
    }

    /// Reads what the socket has; `Ok(0)` at EOF. `limit` caps the bytes
    /// taken by this read (a slow reader's pace).
    pub async fn read_more(&mut self, limit: Option<usize>) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            // Double while reads fill the buffer, adding at most MAX_READ.
            let grow = self.buf.capacity().clamp(MIN_READ, MAX_READ);
            self.buf.reserve(grow);
        }
        match limit {
            Some(cap) => {
                let mut limited = (&mut self.stream).take(cap as u64);
                limited.read_buf(&mut self.buf).await
            }
            None => self.stream.read_buf(&mut self.buf).await,
        }
    }

    /// Writes the queued pong and close frames.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Handles every complete frame in the buffer: each data message goes
    /// to `on_message`, pings are answered, a close is echoed and ends the
    /// batch. Never awaits, so a caller may hold a lock across it; call
    /// [`Self::flush`] afterwards.
    pub fn process(&mut self, on_message: impl FnMut(&[u8])) -> Batch {
        self.process_with_close(on_message, |_, _| {})
    }

    /// [`Self::process`], and the server's close frame, if one came, goes to
    /// `on_close` with its code and reason (e.g. a drain's
    /// `{"reconnect_ms":n}`). The reason is a slice of the read buffer, so it
    /// is handed over rather than kept in every connection.
    pub fn process_with_close(
        &mut self,
        mut on_message: impl FnMut(&[u8]),
        on_close: impl FnOnce(u16, &[u8]),
    ) -> Batch {
        let mut pos = 0;
        let end = loop {
            let f = match frame::parse_frame(&mut self.buf, pos) {
                Ok(Some(f)) => f,
                Ok(None) => break Batch::Open,
                Err(e) => {
                    self.closed = true;
                    break Batch::Malformed(e);
                }
            };
            pos = f.end;
            let payload = &self.buf[f.start..f.end];
            match f.opcode {
                OP_TEXT | OP_BINARY if f.fin => on_message(payload),
                OP_TEXT | OP_BINARY => {
                    self.frag_op = f.opcode;
                    self.frag.clear();
                    self.frag.extend_from_slice(payload);
                }
                // A continuation without a started message is ignored, not kept.
                OP_CONT if self.frag_op != 0 => {
                    self.frag.extend_from_slice(payload);
                    if f.fin {
                        self.frag_op = 0;
                        on_message(&self.frag);
                    }
                }
                OP_PING => frame::write_client_frame(&mut self.out, OP_PONG, payload),
                OP_CLOSE => {
                    let code = frame::close_code(payload);
                    on_close(code, payload.get(2..).unwrap_or_default());
                    frame::write_client_frame(&mut self.out, OP_CLOSE, &code.to_be_bytes());
                    self.closed = true;
                    break Batch::Closed(code);
                }
                _ => {}
            }
        };
        self.buf.drain(..pos);
        end
    }
}
