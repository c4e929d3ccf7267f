//! Rate limits and connection bounds (governor): the global accept rate, new
//! connections and REST requests per client IP, ingest requests per API key,
//! concurrent WebSockets per IP, and inbound messages per connection.
//!
//! Keyed limiters forget idle keys: [`Limiters::run_pruner`] calls
//! `retain_recent` every `limits.prune_interval`, so memory stays bounded by
//! the keys active within one refill period. `docs/security.md` lists every
//! limit with its default.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, RateLimiter};
use hyper::HeaderMap;
use tokio_util::sync::CancellationToken;

use crate::config::LimitsConfig;
use crate::metrics::Metrics;

/// A refusal: which limit, and when to retry.
#[derive(Debug, Clone, Copy)]
pub struct Limited {
    pub limit: &'static str,
    pub retry_after: Duration,
}

impl Limited {
    /// Whole seconds for `Retry-After`, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let ms = self.retry_after.as_millis() as u64;
        ms.div_ceil(1000).max(1)
    }
}

type Keyed<K> = DefaultKeyedRateLimiter<K>;

/// Every limiter of the process.
pub struct Limiters {
    config: LimitsConfig,
    accept: Option<DefaultDirectRateLimiter>,
    per_ip: Option<Keyed<IpAddr>>,
    rest: Option<Keyed<IpAddr>>,
    ingest: Option<Keyed<String>>,
    /// Open WebSockets per IP; entries leave at zero, so it stays bounded by
    /// the open connections.
    open: Mutex<HashMap<IpAddr, usize>>,
    metrics: Arc<Metrics>,
}

impl Limiters {
    pub fn new(config: &LimitsConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            accept: config.accept.quota().map(RateLimiter::direct),
            per_ip: config.connections_per_ip.quota().map(RateLimiter::keyed),
            rest: config.rest_per_ip.quota().map(RateLimiter::keyed),
            ingest: config.ingest_per_key.quota().map(RateLimiter::keyed),
            open: Mutex::new(HashMap::new()),
            config: config.clone(),
            metrics,
        }
    }

    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        self.config.trusted_proxies.contains(&peer)
    }

    /// At accept: the global rate, then the peer's own rate unless the peer is
    /// a trusted proxy (its clients are checked per request, see
    /// [`Limiters::check_connection_ip`]).
    pub fn check_accept(&self, peer: IpAddr) -> Result<(), Limited> {
        if let Some(l) = &self.accept {
            l.check()
                .map_err(|n| self.refused("accept", n.wait_time_from(now())))?;
        }
        if self.is_trusted_proxy(peer) {
            return Ok(());
        }
        self.check_connection_ip(peer)
    }

    /// The per-IP connection rate for a client behind a trusted proxy.
    pub fn check_connection_ip(&self, ip: IpAddr) -> Result<(), Limited> {
        check_keyed(&self.per_ip, &ip).map_err(|d| self.refused("connections_per_ip", d))
    }

    pub fn check_rest(&self, ip: IpAddr) -> Result<(), Limited> {
        check_keyed(&self.rest, &ip).map_err(|d| self.refused("rest_per_ip", d))
    }

    pub fn check_ingest(&self, key: &str) -> Result<(), Limited> {
        let Some(l) = &self.ingest else {
            return Ok(());
        };
        l.check_key(&key.to_owned())
            .map_err(|n| self.refused("ingest_per_key", n.wait_time_from(now())))
    }

    /// Reserves one of the IP's WebSocket slots; `None` when it has
    /// `max_connections_per_ip` open already.
    pub fn open_connection(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let max = self.config.max_connections_per_ip;
        if max > 0 {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            let n = open.entry(ip).or_insert(0);
            if *n >= max {
                drop(open);
                self.refused("max_connections_per_ip", Duration::from_secs(1));
                return None;
            }
            *n += 1;
        }
        Some(IpSlot {
            limiters: self.clone(),
            ip,
            counted: max > 0,
        })
    }

    /// A fresh limiter for one connection's inbound messages (`None`: off).
    pub fn ws_messages(&self) -> Option<MessageLimiter> {
        let quota = self.config.ws_messages.quota()?;
        Some(MessageLimiter {
            limiter: RateLimiter::direct(quota),
            strikes: 0,
            max_strikes: self.config.ws_message_strikes,
            window_start: tokio::time::Instant::now(),
        })
    }

    /// Keys held by each keyed limiter (for the boundedness check and the gauge).
    pub fn keys(&self) -> usize {
        self.per_ip.as_ref().map_or(0, |l| l.len())
            + self.rest.as_ref().map_or(0, |l| l.len())
            + self.ingest.as_ref().map_or(0, |l| l.len())
    }

    /// Drops keys whose state has fully refilled (idle keys).
    pub fn prune(&self) {
        if let Some(l) = &self.per_ip {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.rest {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.ingest {
            l.retain_recent();
            l.shrink_to_fit();
        }
        self.metrics.ratelimit_keys.set(self.keys() as i64);
    }

    /// Prunes every `limits.prune_interval` until `cancel`.
    pub async fn run_pruner(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.prune_interval);
        loop {
            tokio::select! {
                _ = tick.tick() => self.prune(),
                _ = cancel.cancelled() => return,
            }
        }
    }

    /// Counts a refusal and builds it.
    pub fn refused(&self, limit: &'static str, retry_after: Duration) -> Limited {
        self.metrics.rate_limited(limit);
        Limited { limit, retry_after }
    }
}

fn now() -> <DefaultClock as Clock>::Instant {
    DefaultClock::default().now()
}

fn check_keyed<K: Hash + Eq + Clone>(l: &Option<Keyed<K>>, key: &K) -> Result<(), Duration> {
    match l {
        None => Ok(()),
        Some(l) => l.check_key(key).map_err(|n| n.wait_time_from(now())),
    }
}

/// One open WebSocket counted against its IP; released on drop.
pub struct IpSlot {
    limiters: Arc<Limiters>,
    ip: IpAddr,
    counted: bool,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let mut open = self.limiters.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What to do with one inbound message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Refuse it with an error message.
    Refuse,
    /// Too many refusals: close with 1008.
    Close,
}

/// Inbound message rate of one connection, with strikes for persistence.
pub struct MessageLimiter {
    limiter: DefaultDirectRateLimiter,
    strikes: u32,
    max_strikes: u32,
    window_start: tokio::time::Instant,
}

/// Refusals are counted over windows of this length.
const STRIKE_WINDOW: Duration = Duration::from_secs(10);

impl MessageLimiter {
    pub fn check(&mut self) -> Verdict {
        if self.limiter.check().is_ok() {
            return Verdict::Pass;
        }
        let now = tokio::time::Instant::now();
        if now.duration_since(self.window_start) > STRIKE_WINDOW {
            self.window_start = now;
            self.strikes = 0;
        }
        self.strikes += 1;
        if self.strikes > self.max_strikes {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }
}

/// The client's address: the peer, unless the peer is a trusted proxy, in
/// which case the right-most address of `X-Forwarded-For` (or `Forwarded:
/// for=`) that is not itself a trusted proxy.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let peer_ip = peer.ip();
    if !trusted.contains(&peer_ip) {
        return peer_ip;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for v in headers.get_all("forwarded") {
        let Ok(v) = v.to_str() else { continue };
        for element in v.split(',') {
            for pair in element.split(';') {
                let Some((k, val)) = pair.trim().split_once('=') else {
                    continue;
                };
                if k.trim().eq_ignore_ascii_case("for") {
                    if let Some(ip) = parse_forwarded_ip(val.trim()) {
                        hops.push(ip);
                    }
                }
            }
        }
    }
    if hops.is_empty() {
        for v in headers.get_all("x-forwarded-for") {
            let Ok(v) = v.to_str() else { continue };
            hops.extend(v.split(',').filter_map(|s| parse_forwarded_ip(s.trim())));
        }
    }
    hops.into_iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer_ip)
}

/// `1.2.3.4`, `1.2.3.4:80`, `"[::1]:80"`, `::1`.
fn parse_forwarded_ip(raw: &str) -> Option<IpAddr> {
    let s = raw.trim_matches('"');
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    let inner = s.strip_prefix('[')?.split(']').next()?;
    inner.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_only_from_trusted_peers() {
        let lb: IpAddr = "10.0.0.1".parse().unwrap();
        let peer = SocketAddr::new(lb, 5000);
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4")]);
        assert_eq!(
            client_ip(peer, &h, &[lb]),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(peer, &h, &[]), lb);
        let h = headers(&[("forwarded", "for=\"[2001:db8::1]:443\";proto=https")]);
        assert_eq!(
            client_ip(peer, &h, &[lb]),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 10.0.0.1")]);
        assert_eq!(
            client_ip(peer, &h, &[lb]),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        let h = headers(&[("x-forwarded-for", "garbage")]);
        assert_eq!(client_ip(peer, &h, &[lb]), lb);
    }

    #[test]
    fn keyed_state_stays_bounded_after_pruning() {
        let config = LimitsConfig {
            rest_per_ip: crate::config::Rate::new(1000, 1),
            ..LimitsConfig::default()
        };
        let l = Limiters::new(&config, Arc::new(Metrics::new()));
        for i in 0..100_000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            assert!(l.check_rest(ip).is_ok());
        }
        assert_eq!(l.keys(), 100_000);
        // A 1-token bucket at 1000/s is full again after 1 ms.
        std::thread::sleep(Duration::from_millis(20));
        l.prune();
        assert_eq!(l.keys(), 0);
    }

    #[test]
    fn message_limiter_refuses_then_closes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let config = LimitsConfig {
                ws_messages: crate::config::Rate::new(1, 2),
                ws_message_strikes: 3,
                ..LimitsConfig::default()
            };
            let l = Limiters::new(&config, Arc::new(Metrics::new()));
            let mut m = l.ws_messages().unwrap();
            assert_eq!(m.check(), Verdict::Pass);
            assert_eq!(m.check(), Verdict::Pass);
            for _ in 0..3 {
                assert_eq!(m.check(), Verdict::Refuse);
            }
            assert_eq!(m.check(), Verdict::Close);
        });
    }
}
