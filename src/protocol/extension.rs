//! Negotiation of permessage-deflate (RFC 7692 §5, §7.1) from a client's
//! `Sec-WebSocket-Extensions` offers.
//!
//! The answer always carries `server_no_context_takeover` (every server
//! message is compressed on its own, so one compressed frame serves every
//! client) and `client_no_context_takeover` (§7.1.1.1 lets a server add it
//! unasked: a client message is inflated with a fresh state, and no
//! connection keeps a 32 KiB window between messages). An offer the server
//! cannot honour, or that is malformed, is declined and the next one tried.

/// What one client agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    /// The client's `server_max_window_bits` (15 when it named none).
    pub server_max_window_bits: u8,
}

impl Deflate {
    /// Whether a message of `len` bytes may go to this client compressed.
    /// Without context takeover no back-reference reaches before the
    /// message's first byte, so a message no longer than the client's
    /// window stays within it, whatever window the compressor used; longer
    /// ones go to a client with a smaller window uncompressed.
    pub fn fits(&self, len: usize) -> bool {
        self.server_max_window_bits >= 15 || len <= 1 << self.server_max_window_bits
    }
}

/// An accepted offer and the header value that answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed {
    pub deflate: Deflate,
    pub response: String,
}

/// The first acceptable permessage-deflate offer among the header values,
/// or `None` to answer without the extension.
pub fn negotiate<'a>(headers: impl IntoIterator<Item = &'a [u8]>) -> Option<Agreed> {
    headers
        .into_iter()
        .filter_map(|h| std::str::from_utf8(h).ok())
        .flat_map(|h| split(h, ','))
        .find_map(accept)
}

fn accept(offer: &str) -> Option<Agreed> {
    let mut parts = split(offer, ';').into_iter();
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut seen = Vec::new();
    let mut server_bits = None;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim())?)),
            None => (param, None),
        };
        let name = name.to_ascii_lowercase();
        // §7: a parameter named twice declines the offer.
        if seen.contains(&name) {
            return None;
        }
        match (name.as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("server_max_window_bits", Some(v)) => server_bits = Some(window_bits(v)?),
            // Without a value: the client could honour a limit; with one,
            // a limit on what it sends, which the 15-bit inflater accepts.
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(v)) => {
                window_bits(v)?;
            }
            _ => return None,
        }
        seen.push(name);
    }
    let mut response =
        String::from("permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    if let Some(bits) = server_bits {
        response.push_str(&format!("; server_max_window_bits={bits}"));
    }
    Some(Agreed {
        deflate: Deflate {
            server_max_window_bits: server_bits.unwrap_or(15),
        },
        response,
    })
}

/// §7.1.2: 8 to 15, digits only, no leading zero.
fn window_bits(v: &str) -> Option<u8> {
    if v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

fn unquote(v: &str) -> Option<&str> {
    match v.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(v),
    }
}

/// Splits on `sep` outside quoted strings, trimming each part and dropping
/// empty ones (RFC 7230 lists allow them).
fn split(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(s[start..].trim());
    parts.retain(|p| !p.is_empty());
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(h: &str) -> Option<Agreed> {
        negotiate([h.as_bytes()])
    }

    const BASE: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    #[test]
    fn accepts_what_it_can_honour() {
        let a = offer("permessage-deflate").unwrap();
        assert_eq!(a.response, BASE);
        assert_eq!(a.deflate.server_max_window_bits, 15);
        // What browsers, Python websockets and Node ws send.
        let a = offer("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(a.response, BASE);
        let a = offer("permessage-deflate; client_max_window_bits=10; client_no_context_takeover; server_no_context_takeover").unwrap();
        assert_eq!(a.response, BASE);
        let a = offer("x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=\"10\"")
            .unwrap();
        assert_eq!(a.response, format!("{BASE}; server_max_window_bits=10"));
        assert!(a.deflate.fits(1024) && !a.deflate.fits(1025));
        assert!(offer("PerMessage-Deflate ; Server_Max_Window_Bits=8").is_some());
    }

    #[test]
    fn declines_malformed_offers_and_tries_the_next() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; unknown_param",
            "permessage-deflate; client_max_window_bits=\"9",
            "x-other; a=\"b,permessage-deflate\"",
            "",
        ] {
            assert_eq!(offer(bad), None, "{bad}");
        }
        let a = negotiate([
            &b"permessage-deflate; server_max_window_bits=16"[..],
            b"permessage-deflate; server_max_window_bits=12, permessage-deflate",
        ])
        .unwrap();
        assert_eq!(a.deflate.server_max_window_bits, 12);
    }
}
