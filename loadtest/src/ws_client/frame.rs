//! RFC 6455 frames: server frames (unmasked) are parsed in place in the
//! read buffer; the rare client frames (subscribe, pong, close) are masked,
//! as the RFC requires of a client, and appended to an output buffer.

use anyhow::bail;

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Largest frame accepted: a bound, so a broken length cannot make the
/// buffer grow without end.
const MAX_FRAME: u64 = 64 * 1024 * 1024;

/// One complete frame found in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef {
    pub fin: bool,
    pub opcode: u8,
    /// Payload range inside the buffer.
    pub start: usize,
    pub end: usize,
}

/// Parses the frame starting at `buf[pos..]`. `Ok(None)`: more bytes needed.
/// Masked server frames are unmasked in place (servers must not mask, but
/// tolerating it costs nothing).
pub fn parse_frame(buf: &mut [u8], pos: usize) -> anyhow::Result<Option<FrameRef>> {
    let b = &buf[pos..];
    if b.len() < 2 {
        return Ok(None);
    }
    let fin = b[0] & 0x80 != 0;
    let opcode = b[0] & 0x0F;
    let masked = b[1] & 0x80 != 0;
    let (len, mut header) = match b[1] & 0x7F {
        126 => {
            if b.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([b[2], b[3]]) as u64, 4)
        }
        127 => {
            if b.len() < 10 {
                return Ok(None);
            }
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[2..10]);
            (u64::from_be_bytes(n), 10)
        }
        n => (n as u64, 2),
    };
    if len > MAX_FRAME {
        bail!("frame of {len} bytes");
    }
    let mut mask = [0u8; 4];
    if masked {
        if b.len() < header + 4 {
            return Ok(None);
        }
        mask.copy_from_slice(&b[header..header + 4]);
        header += 4;
    }
    let total = header + len as usize;
    if b.len() < total {
        return Ok(None);
    }
    let start = pos + header;
    let end = pos + total;
    if masked {
        for (i, byte) in buf[start..end].iter_mut().enumerate() {
            *byte ^= mask[i & 3];
        }
    }
    Ok(Some(FrameRef {
        fin,
        opcode,
        start,
        end,
    }))
}

/// Appends a final, masked client frame to `out`.
pub fn write_client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.reserve(payload.len() + 14);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = (super::next_random() as u32).to_be_bytes();
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

/// The close code of a close frame's payload (1005 when absent).
pub fn close_code(payload: &[u8]) -> u16 {
    if payload.len() >= 2 {
        u16::from_be_bytes([payload[0], payload[1]])
    } else {
        1005
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unmasked_and_masked_frames() {
        let mut buf = vec![0x81, 3, b'a', b'b', b'c', 0x89];
        let f = parse_frame(&mut buf, 0).unwrap().unwrap();
        assert_eq!((f.opcode, f.start, f.end, f.fin), (OP_TEXT, 2, 5, true));
        assert_eq!(parse_frame(&mut buf, 5).unwrap(), None);

        let mut masked = Vec::new();
        write_client_frame(&mut masked, OP_TEXT, b"hello");
        let f = parse_frame(&mut masked, 0).unwrap().unwrap();
        assert_eq!(&masked[f.start..f.end], b"hello");

        let mut long = vec![0x82, 126, 1, 0];
        long.extend(std::iter::repeat_n(7, 256));
        let f = parse_frame(&mut long, 0).unwrap().unwrap();
        assert_eq!((f.opcode, f.end - f.start), (OP_BINARY, 256));

        let mut huge = vec![0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0];
        assert!(parse_frame(&mut huge, 0).is_err());
    }

    #[test]
    fn client_frames_append_with_their_length() {
        let mut out = vec![0xEE];
        write_client_frame(&mut out, OP_PONG, &[0u8; 300]);
        assert_eq!(&out[..4], &[0xEE, 0x80 | OP_PONG, 0x80 | 126, 1]);
        assert_eq!(out.len(), 1 + 4 + 4 + 300);
    }

    #[test]
    fn close_codes() {
        assert_eq!(close_code(&[0x0F, 0xA8, b'x']), 4008);
        assert_eq!(close_code(&[]), 1005);
    }
}
