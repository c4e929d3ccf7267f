//! `[ws]`: WebSocket connections, their queues and what a client may send.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{nonzero, positive, ConfigError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WsConfig {
    /// Open WebSocket connections allowed in this process; past it the
    /// upgrade answers 503. Default: 50000.
    pub max_connections: usize,
    /// Largest inbound message, summed over its fragments; larger closes
    /// with 1009. Default: 65536 (64 KiB).
    pub max_message_bytes: usize,
    /// Server ping interval; a client silent for two intervals is closed. Default: 30s.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// Subscriptions one `/ws` connection may hold. Default: 100.
    pub max_subscriptions: usize,
    /// Lossless messages queued for one client before it is disconnected
    /// with 4008. Default: 4096.
    pub queue_max_messages: usize,
    /// Distinct variants with a conflated update pending for one client
    /// before it is disconnected with 4008. Default: 10000.
    pub queue_max_conflated: usize,
    /// How long a slow client gets to take its close frame before the
    /// socket is dropped. Default: 5s.
    #[serde(with = "humantime_serde")]
    pub slow_close_grace: Duration,
    /// After a write to a busy client, its next write waits until this much
    /// time has passed; what arrives meanwhile goes out in that one write.
    /// A client that was idle gets its first message at once. Pays off when
    /// each client gets messages faster than this (1,000/s per client:
    /// p99 halved); below that the timers cost more than they save
    /// (docs/benchmarks.md). 0 writes as soon as anything is queued; at
    /// most 1s. Default: 0.
    #[serde(with = "humantime_serde")]
    pub write_delay: Duration,
    /// The kernel send buffer of each client socket (WebSocket and SSE),
    /// in bytes (Linux doubles it for its bookkeeping); 0 leaves it to the
    /// kernel's autotuning, up to `net.ipv4.tcp_wmem`'s maximum (4 MiB on
    /// Debian). A client that stops reading fills this much before its
    /// queue here fills and it is closed with 4008; uncapped, the growing
    /// send queues of 10% non-reading clients tripled the others' p99
    /// (docs/benchmarks.md). It also bounds one client's throughput to
    /// about twice this per round trip. Default: 65536 (64 KiB).
    pub socket_send_buffer: usize,
    /// Most missed events a `?since=` resume replays; more and the client
    /// gets a fresh snapshot with `recovered: false`. Must stay below
    /// `queue_max_messages`. Default: 2000.
    pub max_replay: usize,
    /// Persona ids longer than this are refused with 400. Default: 64.
    pub max_persona_id_len: usize,
    /// Publications of each watched channel kept in memory, so that a
    /// `since` resume within them needs no Redis read (after a deploy, most
    /// do); 0 keeps none. Default: 32.
    pub recent_entries: usize,
    /// Bytes of publications kept per watched channel, at most. Default:
    /// 32768 (32 KiB).
    pub recent_bytes: usize,
    /// permessage-deflate (RFC 7692) for clients that offer it: `on` or
    /// `off`. Default: on.
    pub compression: Compression,
}

/// `ws.compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Off,
    On,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            max_connections: 50_000,
            max_message_bytes: 64 * 1024,
            ping_interval: Duration::from_secs(30),
            max_subscriptions: 100,
            queue_max_messages: 4096,
            queue_max_conflated: 10_000,
            slow_close_grace: Duration::from_secs(5),
            write_delay: Duration::ZERO,
            socket_send_buffer: 64 * 1024,
            max_replay: 2000,
            max_persona_id_len: 64,
            recent_entries: 32,
            recent_bytes: 32 * 1024,
            compression: Compression::On,
        }
    }
}

impl WsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("ws.max_connections", self.max_connections)?;
        if self.max_message_bytes < 128 {
            return Err(ConfigError::new(
                "ws.max_message_bytes",
                "must be at least 128",
            ));
        }
        nonzero("ws.ping_interval", self.ping_interval)?;
        if self.write_delay > Duration::from_secs(1) {
            return Err(ConfigError::new("ws.write_delay", "must be at most 1s"));
        }
        if self.socket_send_buffer != 0 && !(4096..=64 << 20).contains(&self.socket_send_buffer) {
            return Err(ConfigError::new(
                "ws.socket_send_buffer",
                "must be 0 (the kernel's autotuning) or 4096-67108864",
            ));
        }
        positive("ws.max_subscriptions", self.max_subscriptions)?;
        positive("ws.queue_max_messages", self.queue_max_messages)?;
        positive("ws.queue_max_conflated", self.queue_max_conflated)?;
        if self.max_replay >= self.queue_max_messages {
            return Err(ConfigError::new(
                "ws.max_replay",
                "must be below ws.queue_max_messages (a replay must fit the client's queue)",
            ));
        }
        if self.recent_bytes > 16 * 1024 * 1024 {
            return Err(ConfigError::new(
                "ws.recent_bytes",
                "must be at most 16777216 (16 MiB per watched channel)",
            ));
        }
        // 128: the functions library's own bound (lua/pulse.lua).
        if !(1..=128).contains(&self.max_persona_id_len) {
            return Err(ConfigError::new("ws.max_persona_id_len", "must be 1-128"));
        }
        Ok(())
    }
}
