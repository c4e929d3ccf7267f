//! Chunked response bodies (RFC 9112 §7.1), measured in place: the load
//! tester counts body bytes, it never keeps them.

use anyhow::{bail, Context};

use super::MAX_RESPONSE;

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;

/// A complete chunked body at the start of `buf`: (bytes taken, payload bytes),
/// or `None` if more is needed.
pub fn chunked_body(buf: &[u8]) -> anyhow::Result<Option<(usize, usize)>> {
    let mut pos = 0;
    let mut body = 0usize;
    loop {
        let Some(line) = line_at(buf, pos)? else {
            return Ok(None);
        };
        let text = std::str::from_utf8(line).context("chunk size is not ASCII")?;
        let hex = text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(hex, 16)
            .ok()
            .filter(|&s| s <= MAX_RESPONSE)
            .with_context(|| format!("bad chunk size `{hex}`"))?;
        pos += line.len() + 2;
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let Some(line) = line_at(buf, pos)? else {
                    return Ok(None);
                };
                pos += line.len() + 2;
                if line.is_empty() {
                    return Ok(Some((pos, body)));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            bail!("chunk of {size} bytes not followed by CRLF");
        }
        body += size;
        pos += size + 2;
    }
}

/// The line starting at `pos` (without its CRLF), if complete. Bounded, so
/// a server that never ends a line cannot grow the buffer unnoticed.
fn line_at(buf: &[u8], pos: usize) -> anyhow::Result<Option<&[u8]>> {
    let rest = &buf[pos.min(buf.len())..];
    match memchr::memmem::find(rest, b"\r\n") {
        Some(i) => Ok(Some(&rest[..i])),
        None if rest.len() > MAX_LINE => bail!("chunk line longer than {MAX_LINE} bytes"),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_extensions_and_trailers() {
        let raw = b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: y\r\n\r\nnext";
        assert_eq!(chunked_body(raw).unwrap(), Some((raw.len() - 4, 15)));
        for i in 0..raw.len() - 4 {
            assert_eq!(chunked_body(&raw[..i]).unwrap(), None, "prefix {i}");
        }
        assert!(chunked_body(b"zz\r\n").is_err());
        assert!(chunked_body(b"2\r\nabcd\r\n").is_err());
        assert!(chunked_body(&[b'1'; MAX_LINE + 1]).is_err());
    }
}
