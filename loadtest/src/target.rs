//! URLs of the things under test, the `{persona}` template, and the
//! loopback-only rule.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use anyhow::{bail, Context};

/// A parsed `scheme://host[:port][/path]` URL (no user info, no fragment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        let (scheme, rest) = raw
            .split_once("://")
            .with_context(|| format!("`{raw}`: scheme://host:port expected"))?;
        let default_port = match scheme {
            "ws" | "http" => 80,
            "redis" => 6379,
            "wss" | "https" | "rediss" => bail!("`{raw}`: TLS is not supported by the harness"),
            other => bail!("`{raw}`: unknown scheme {other}"),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        // user info (`:password@`) is only meaningful for Redis; keep the host part.
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, p) = v6.split_once(']').context("unclosed [")?;
            (h.to_string(), p.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => p.parse().with_context(|| format!("`{raw}`: bad port"))?,
            None => default_port,
        };
        if host.is_empty() {
            bail!("`{raw}`: empty host");
        }
        Ok(Self {
            scheme: scheme.to_string(),
            host,
            port,
            path: path.to_string(),
        })
    }

    /// Resolves the host; refuses non-loopback addresses unless allowed.
    pub fn resolve(&self, allow_remote: bool) -> anyhow::Result<SocketAddr> {
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .with_context(|| format!("resolve {}", self.host))?
            .next()
            .with_context(|| format!("{} resolves to nothing", self.host))?;
        if !allow_remote && !addr.ip().is_loopback() {
            bail!(
                "{} ({}) is not a loopback address; the harness targets loopback only \
                 unless --allow-remote is given",
                self.host,
                addr.ip()
            );
        }
        Ok(addr)
    }

    /// `host:port` for a `Host` header.
    pub fn host_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Parses `--target`: one URL, or a comma-separated list of them (the
/// rolling-restart clients spread over them, see [`pick`]).
pub fn parse_list(raw: &str) -> anyhow::Result<Vec<Url>> {
    let urls = raw
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(Url::parse)
        .collect::<anyhow::Result<Vec<_>>>()?;
    if urls.is_empty() {
        bail!("--target: no URL in `{raw}`");
    }
    if urls.iter().any(|u| u.path != urls[0].path) {
        bail!("--target: every URL of the list must have the same path");
    }
    Ok(urls)
}

/// Which of `n` targets client `index` connects to after `failures`
/// connects failed in a row: its own (`index` round-robin over the list),
/// then the next ones in turn, as a client configured with every instance's
/// address falls over when its own is down (restarting); back to its own
/// once a connect succeeded.
pub fn pick(index: u32, failures: u32, n: usize) -> usize {
    (index as usize % n.max(1) + failures as usize) % n.max(1)
}

/// Replaces every `{persona}` in `template`. Other braces are kept, so the
/// Redis channel template `pulse:{{persona}}:events` gives `pulse:{p1}:events`.
pub fn fill(template: &str, persona: &str) -> String {
    template.replace("{persona}", persona)
}

/// Parses `127.0.0.2-127.0.0.9` or a comma list into addresses.
pub fn parse_sources(raw: &str) -> anyhow::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let (a, b): (std::net::Ipv4Addr, std::net::Ipv4Addr) = (a.parse()?, b.parse()?);
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a || b - a > 250 {
                bail!("source range {part}: at most 251 addresses, ascending");
            }
            out.extend((a..=b).map(|x| IpAddr::from(std::net::Ipv4Addr::from(x))));
        } else {
            out.push(
                part.parse()
                    .with_context(|| format!("source address {part}"))?,
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("ws://127.0.0.1:8081").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8081, "/")
        );
        let u = Url::parse("redis://:secret@localhost/0").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("localhost", 6379, "/0")
        );
        let u = Url::parse("http://[::1]:80/pub/{persona}").unwrap();
        assert_eq!(
            (u.host.as_str(), u.path.as_str()),
            ("::1", "/pub/{persona}")
        );
        assert!(Url::parse("wss://x").is_err());
        assert!(Url::parse("ws://10.0.0.1:80")
            .unwrap()
            .resolve(false)
            .is_err());
        assert!(Url::parse("ws://127.0.0.1:80")
            .unwrap()
            .resolve(false)
            .is_ok());
    }

    #[test]
    fn a_list_of_targets_is_spread_round_robin_with_failover() {
        let urls =
            parse_list("ws://127.0.0.1:8191, ws://127.0.0.1:8192,ws://127.0.0.1:8193").unwrap();
        assert_eq!(
            urls.iter().map(|u| u.port).collect::<Vec<_>>(),
            [8191, 8192, 8193]
        );
        assert_eq!(parse_list("ws://127.0.0.1:8081").unwrap().len(), 1);
        assert!(parse_list(" , ").is_err());
        assert!(parse_list("ws://127.0.0.1:1/a,ws://127.0.0.1:2/b").is_err());
        // Clients 0..6 over 3 targets: two each, round-robin.
        let homes: Vec<usize> = (0..6).map(|i| pick(i, 0, 3)).collect();
        assert_eq!(homes, [0, 1, 2, 0, 1, 2]);
        // Client 1's own is down: the next, then the one after, then its own again.
        assert_eq!((1..4).map(|f| pick(1, f, 3)).collect::<Vec<_>>(), [2, 0, 1]);
        assert_eq!(pick(7, 5, 1), 0);
    }

    #[test]
    fn templates_and_sources() {
        assert_eq!(fill("pulse:{{persona}}:events", "p1"), "pulse:{p1}:events");
        let s = parse_sources("127.0.0.2-127.0.0.4,127.0.0.9").unwrap();
        assert_eq!(s.len(), 4);
    }
}
