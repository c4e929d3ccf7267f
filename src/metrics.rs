//! Prometheus metrics (prometheus-client): one registry, one struct of handles.
//! Handles are cheap atomics; the hot path only increments them.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

mod compression;
mod continuity;
mod labels;
mod publish;
mod reads;
mod record;
pub use continuity::{Continuity, LossLabel, NodeLabel};
pub mod transport;
pub use compression::Compressions;
mod runtime;
mod subscriptions;
pub use labels::*;
pub use publish::Publish;
pub use reads::{Read, Reads};
pub use runtime::RuntimeMetrics;
pub use subscriptions::{ChannelChange, Subscriptions};
pub use transport::{SseError, Transport, Transports};

fn latency_histogram() -> Histogram {
    // 50 µs .. ~3.3 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 17))
}

pub struct Metrics {
    registry: Registry,
    pub connections_active: Gauge,
    pub connections_total: Counter,
    pub connections_rejected: Family<ReasonLabel, Counter>,
    pub subscriptions_active: Gauge,
    pub redis_channels_active: Gauge,
    pub redis_messages_received: Counter,
    pub redis_messages_dropped: Family<ReasonLabel, Counter>,
    pub redis_messages_lagged: Counter,
    /// Publications, snapshots and stream entries holding bytes that are not
    /// UTF-8, by where they were read and what became of them.
    pub undecodable: Family<UndecodableLabels, Counter>,
    pub redis_reconnects: Counter,
    pub redis_up: Gauge,
    pub frames_sent: Counter,
    pub write_batches: Counter,
    pub messages_conflated: Counter,
    pub slow_disconnects: Counter,
    pub ws_closes: Family<CodeLabel, Counter>,
    pub client_errors: Family<ErrorLabel, Counter>,
    pub resumes: Family<ReasonLabel, Counter>,
    pub audit_rows_written: Counter,
    pub audit_duplicates: Counter,
    pub audit_batches: Counter,
    pub audit_batch_size: Histogram,
    pub audit_batch_seconds: Histogram,
    pub audit_failures: Family<ReasonLabel, Counter>,
    pub audit_claimed: Counter,
    pub audit_lost: Counter,
    pub audit_streams: Gauge,
    pub audit_lag_entries: Gauge,
    pub audit_lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Only the few personas furthest behind, so the label set stays small
    /// however many personas there are.
    pub audit_persona_lag_seconds: Family<PersonaLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub ingest_accepted: Counter,
    pub ingest_rejected: Family<ReasonLabel, Counter>,
    /// Channel publications over HTTP.
    pub publish: Publish,
    /// Refused analytics and point-in-time requests, by reason.
    pub analytics_rejected: Family<ReasonLabel, Counter>,
    /// REST reads by where the answer came from (`cached`, `waited` for a
    /// rebuild, `built` by the request).
    pub api_reads: Family<SourceLabel, Counter>,
    /// Personas whose REST answers are kept current.
    pub api_cache_personas: Gauge,
    pub api_cache_rebuilds: Counter,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_latency: Family<RouteLabel, Histogram, fn() -> Histogram>,
    /// Requests, connections and messages refused by a rate limit, by limit.
    pub rate_limited: Family<LimitLabel, Counter>,
    /// Keys held by the keyed rate limiters after the last pruning.
    pub ratelimit_keys: Gauge,
    /// Refused credentials, by reason (missing, invalid, expired, forbidden, origin).
    pub auth_failures: Family<ReasonLabel, Counter>,
    /// Snapshot and replay reads sent to Redis, and the callers that shared one.
    pub reads: Reads,
    /// Gap repairs and the Redis nodes connected to.
    pub continuity: Continuity,
    /// The subscriber connection's SUBSCRIBE/UNSUBSCRIBE rounds.
    pub subscriptions: Subscriptions,
    /// Connections by transport, and the SSE errors.
    pub transports: Transports,
    /// permessage-deflate runs and bytes.
    pub compressions: Compressions,
    /// `system:runtime`: the sampler's counters and the running totals it reads.
    pub runtime: RuntimeMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pulsegate");
        let m = Self {
            connections_active: Gauge::default(),
            connections_total: Counter::default(),
            connections_rejected: Family::default(),
            subscriptions_active: Gauge::default(),
            redis_channels_active: Gauge::default(),
            redis_messages_received: Counter::default(),
            redis_messages_dropped: Family::default(),
            redis_messages_lagged: Counter::default(),
            undecodable: Family::default(),
            redis_reconnects: Counter::default(),
            redis_up: Gauge::default(),
            frames_sent: Counter::default(),
            write_batches: Counter::default(),
            messages_conflated: Counter::default(),
            slow_disconnects: Counter::default(),
            ws_closes: Family::default(),
            client_errors: Family::default(),
            resumes: Family::default(),
            audit_rows_written: Counter::default(),
            audit_duplicates: Counter::default(),
            audit_batches: Counter::default(),
            audit_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 15)),
            audit_batch_seconds: latency_histogram(),
            audit_failures: Family::default(),
            audit_claimed: Counter::default(),
            audit_lost: Counter::default(),
            audit_streams: Gauge::default(),
            audit_lag_entries: Gauge::default(),
            audit_lag_seconds: Gauge::default(),
            audit_persona_lag_seconds: Family::default(),
            ingest_accepted: Counter::default(),
            ingest_rejected: Family::default(),
            publish: Publish::default(),
            analytics_rejected: Family::default(),
            api_reads: Family::default(),
            api_cache_personas: Gauge::default(),
            api_cache_rebuilds: Counter::default(),
            http_requests: Family::default(),
            http_latency: Family::new_with_constructor(latency_histogram),
            rate_limited: Family::default(),
            ratelimit_keys: Gauge::default(),
            auth_failures: Family::default(),
            reads: Reads::default(),
            continuity: Continuity::default(),
            subscriptions: Subscriptions::default(),
            transports: Transports::default(),
            compressions: Compressions::default(),
            runtime: RuntimeMetrics::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "audit_rows_written",
            "Events written to Postgres (new rows)",
            m.audit_rows_written.clone(),
        );
        r.register(
            "audit_duplicates",
            "Redelivered events already in Postgres (skipped)",
            m.audit_duplicates.clone(),
        );
        r.register(
            "audit_batches",
            "Audit transactions committed",
            m.audit_batches.clone(),
        );
        r.register(
            "audit_batch_size",
            "Entries per audit batch",
            m.audit_batch_size.clone(),
        );
        r.register(
            "audit_batch_seconds",
            "Time to write and commit an audit batch, retries included",
            m.audit_batch_seconds.clone(),
        );
        r.register(
            "audit_failures",
            "Audit failures, by stage",
            m.audit_failures.clone(),
        );
        r.register(
            "audit_claimed",
            "Entries claimed from other consumers",
            m.audit_claimed.clone(),
        );
        r.register(
            "audit_lost",
            "Entries trimmed from their stream before they were audited (recorded as `lost` rows)",
            m.audit_lost.clone(),
        );
        r.register(
            "audit_streams",
            "Persona streams the audit consumer follows",
            m.audit_streams.clone(),
        );
        r.register(
            "audit_lag_entries",
            "Entries not yet audited (undelivered + pending)",
            m.audit_lag_entries.clone(),
        );
        r.register(
            "audit_lag_seconds",
            "Age of the oldest entry not yet audited",
            m.audit_lag_seconds.clone(),
        );
        r.register(
            "audit_persona_lag_seconds",
            "Age of the oldest entry not yet audited, for the (at most 5) personas furthest behind",
            m.audit_persona_lag_seconds.clone(),
        );
        r.register(
            "resumes",
            "Resumes with ?since=, by result",
            m.resumes.clone(),
        );
        r.register(
            "api_reads",
            "REST dashboard reads by source of the answer: cached, waited (for the background rebuild) or built (by the request)",
            m.api_reads.clone(),
        );
        r.register(
            "api_cache_personas",
            "Personas whose REST answers are rebuilt in the background",
            m.api_cache_personas.clone(),
        );
        r.register(
            "api_cache_rebuilds",
            "Background rebuilds of REST answers",
            m.api_cache_rebuilds.clone(),
        );
        r.register(
            "ingest_accepted",
            "Events accepted through the HTTP ingest routes",
            m.ingest_accepted.clone(),
        );
        r.register(
            "ingest_rejected",
            "HTTP ingest requests refused, by reason",
            m.ingest_rejected.clone(),
        );
        r.register(
            "analytics_rejected",
            "Analytics and point-in-time requests refused, by reason",
            m.analytics_rejected.clone(),
        );
        r.register(
            "connections_active",
            "Open client connections (WebSocket and SSE; transport_connections_active splits them)",
            m.connections_active.clone(),
        );
        r.register(
            "connections",
            "Client connections accepted (WebSocket and SSE)",
            m.connections_total.clone(),
        );
        r.register(
            "connections_rejected",
            "Connections refused, by reason",
            m.connections_rejected.clone(),
        );
        r.register(
            "subscriptions_active",
            "Client subscriptions to persona channels",
            m.subscriptions_active.clone(),
        );
        r.register(
            "redis_channels_active",
            "Redis channels this process subscribes to",
            m.redis_channels_active.clone(),
        );
        r.register(
            "redis_messages_received",
            "Pub/sub messages received from Redis",
            m.redis_messages_received.clone(),
        );
        r.register(
            "redis_messages_dropped",
            "Pub/sub messages dropped as invalid, by reason",
            m.redis_messages_dropped.clone(),
        );
        r.register(
            "redis_messages_lagged",
            "Pub/sub messages lost because the hub lagged behind fred's channel",
            m.redis_messages_lagged.clone(),
        );
        r.register(
            "undecodable",
            "Publications, snapshots and stream entries that were not UTF-8, by read path and action (replaced with U+FFFD, or skipped)",
            m.undecodable.clone(),
        );
        r.register(
            "redis_reconnects",
            "Reconnections to Redis",
            m.redis_reconnects.clone(),
        );
        r.register(
            "redis_up",
            "1 while Redis answers the health probe",
            m.redis_up.clone(),
        );
        r.register(
            "frames_sent",
            "WebSocket frames written to clients",
            m.frames_sent.clone(),
        );
        r.register(
            "write_batches",
            "Socket writes carrying one or more frames",
            m.write_batches.clone(),
        );
        r.register(
            "messages_conflated",
            "Queued performance updates replaced by a newer one",
            m.messages_conflated.clone(),
        );
        r.register(
            "slow_disconnects",
            "Clients disconnected with 4008 for a full backlog",
            m.slow_disconnects.clone(),
        );
        r.register(
            "ws_closes",
            "WebSocket closes sent by the server, by close code",
            m.ws_closes.clone(),
        );
        r.register(
            "client_errors",
            "Error messages sent to clients, by code",
            m.client_errors.clone(),
        );
        r.register(
            "http_requests",
            "HTTP requests by route and status",
            m.http_requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            m.http_latency.clone(),
        );
        r.register(
            "rate_limited",
            "Connections, requests and messages refused by a rate limit, by limit",
            m.rate_limited.clone(),
        );
        r.register(
            "ratelimit_keys",
            "Keys held by the keyed rate limiters (after pruning)",
            m.ratelimit_keys.clone(),
        );
        r.register(
            "auth_failures",
            "Requests and connections refused for their credentials, by reason",
            m.auth_failures.clone(),
        );
        m.reads.register(r);
        m.continuity.register(r);
        m.subscriptions.register(r);
        m.publish.register(r);
        m.transports.register(r);
        m.compressions.register(r);
        m.runtime.register(r);
        Self { registry, ..m }
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
