//! Server-to-client frame encoding. Server frames are unmasked, so a frame is
//! just a header and the payload: the hub encodes each publication once and
//! every subscriber's writer copies the same bytes.

use bytes::{BufMut, Bytes, BytesMut};

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// RSV1: the frame's message is compressed (permessage-deflate, RFC 7692).
const RSV1: u8 = 0x40;

fn encode(first: u8, payload: &[u8]) -> Bytes {
    let len = payload.len();
    let mut out = BytesMut::with_capacity(len + 10);
    out.put_u8(0x80 | first);
    if len < 126 {
        out.put_u8(len as u8);
    } else if len <= u16::MAX as usize {
        out.put_u8(126);
        out.put_u16(len as u16);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
    out.put_slice(payload);
    out.freeze()
}

/// A complete text frame carrying `payload` (which must be UTF-8).
pub fn text(payload: &[u8]) -> Bytes {
    encode(OP_TEXT, payload)
}

/// A complete text frame whose payload is a permessage-deflate message.
pub fn compressed_text(deflated: &[u8]) -> Bytes {
    encode(RSV1 | OP_TEXT, deflated)
}

/// The payload of a complete, uncompressed text frame encoded here.
pub fn text_payload(frame: &[u8]) -> Option<&[u8]> {
    let (&first, rest) = frame.split_first()?;
    if first != 0x80 | OP_TEXT {
        return None;
    }
    let header = match rest.first()? & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    frame.get(header..)
}

/// A close frame; the reason is cut to fit the 125-byte control payload.
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = Vec::with_capacity(2 + cut);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    encode(OP_CLOSE, &payload)
}

/// Echo of a client's close payload (already validated).
pub fn close_raw(payload: &[u8]) -> Bytes {
    encode(OP_CLOSE, payload)
}

pub fn ping(payload: &[u8]) -> Bytes {
    encode(OP_PING, payload)
}

pub fn pong(payload: &[u8]) -> Bytes {
    encode(OP_PONG, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert_eq!(&text(b"hi")[..], &[0x81, 2, b'h', b'i']);
        let mid = text(&[b'a'; 300]);
        assert_eq!(&mid[..4], &[0x81, 126, 1, 44]);
        let big = text(&vec![b'a'; 70_000]);
        assert_eq!(big[1], 127);
        assert_eq!(big.len(), 70_000 + 10);
        let c = close(4008, &"x".repeat(500));
        assert_eq!(c.len(), 2 + 125);
        assert_eq!(&c[2..4], &4008u16.to_be_bytes());
        assert_eq!(text_payload(&text(b"hi")), Some(&b"hi"[..]));
        assert_eq!(text_payload(&mid).map(<[u8]>::len), Some(300));
        assert_eq!(text_payload(&big).map(<[u8]>::len), Some(70_000));
        assert_eq!(text_payload(&pong(b"x")), None);
        assert_eq!(&compressed_text(b"z")[..], &[0xC1, 1, b'z']);
    }
}
