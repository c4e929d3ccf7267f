//! Request heads, written straight into the caller's buffer: the HTTP
//! publisher appends one per message, so writing one allocates nothing.

use std::io::Write as _;

use anyhow::{bail, Context};

/// Appends one HTTP/1.1 request to `out` (pipelining appends several).
/// `headers` are (name, value) pairs, checked beforehand (see
/// [`parse_header`]); a `Host` among them replaces the default `host`. A
/// `body` gets its `Content-Length`.
pub fn write_request(
    out: &mut Vec<u8>,
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) {
    for part in [method, " ", path, " HTTP/1.1\r\n"] {
        out.extend_from_slice(part.as_bytes());
    }
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        field(out, "Host", host);
    }
    for (name, value) in headers {
        field(out, name, value);
    }
    if let Some(body) = body {
        // Writing into a Vec cannot fail.
        let _ = write!(out, "Content-Length: {}\r\n", body.len());
    }
    out.extend_from_slice(b"\r\n");
    if let Some(body) = body {
        out.extend_from_slice(body);
    }
}

fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    for part in [name, ": ", value, "\r\n"] {
        out.extend_from_slice(part.as_bytes());
    }
}

/// `http-rate`'s `GET`, built once per run. `extra`: `--header` lines,
/// already checked by [`parse_header`]. `close` asks the server to close
/// after answering (a `--fresh-connections` attempt), unless `extra`
/// names its own `Connection`.
pub fn get_request(path: &str, host: &str, extra: &[String], close: bool) -> Vec<u8> {
    let mut headers = vec![("User-Agent", "pulsegate-loadtest"), ("Accept", "*/*")];
    headers.extend(extra.iter().filter_map(|h| parse_header(h).ok()));
    let named = |n: &str| headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(n));
    if close && !named("connection") {
        headers.push(("Connection", "close"));
    }
    let mut out = Vec::with_capacity(256);
    write_request(&mut out, "GET", path, host, &headers, None);
    out
}

/// Splits a `--header` value, `Name: value`, refusing what would break the
/// request: a name that is not a token, or a line break (header injection).
pub fn parse_header(h: &str) -> anyhow::Result<(&str, &str)> {
    let (name, value) = h
        .split_once(':')
        .with_context(|| format!("header `{h}`: `Name: value` expected"))?;
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        bail!("header `{h}`: bad header name");
    }
    if h.contains(['\r', '\n']) {
        bail!("header `{h}`: line breaks are not allowed");
    }
    Ok((name, value.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_requests() {
        let text = |extra: &[String], close| {
            String::from_utf8(get_request(
                "/api/metrics/p",
                "127.0.0.1:8470",
                extra,
                close,
            ))
            .unwrap()
        };
        let t = text(&["Authorization: Bearer t".into()], false);
        assert_eq!(
            t,
            "GET /api/metrics/p HTTP/1.1\r\nHost: 127.0.0.1:8470\r\n\
             User-Agent: pulsegate-loadtest\r\nAccept: */*\r\nAuthorization: Bearer t\r\n\r\n"
        );
        assert!(!text(&["host: other".into()], false).contains("Host: 127"));
        // A fresh-connection attempt asks for the close, unless told otherwise.
        assert!(text(&[], true).ends_with("Connection: close\r\n\r\n"));
        assert!(!text(&[], false).contains("Connection:"));
        let own = text(&["connection: keep-alive".into()], true);
        assert!(!own.contains("Connection: close"), "{own}");
    }

    #[test]
    fn posts_append_with_their_length() {
        let mut out = b"previous".to_vec();
        let json = [("Content-Type", "application/json")];
        write_request(&mut out, "POST", "/pub/p1", "h:1", &json, Some(b"{}"));
        assert_eq!(
            out,
            b"previousPOST /pub/p1 HTTP/1.1\r\nHost: h:1\r\n\
              Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
    }

    #[test]
    fn header_arguments() {
        assert_eq!(
            parse_header("Authorization:  Bearer x ").unwrap(),
            ("Authorization", "Bearer x")
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("Bad Name: x").is_err());
        assert!(parse_header(": x").is_err());
        assert!(parse_header("X: a\r\nInjected: b").is_err());
    }
}
