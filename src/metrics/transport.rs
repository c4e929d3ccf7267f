//! Connections by transport (WebSocket or Server-Sent Events) and the SSE
//! errors. `connections_active` and `connections` count both transports
//! together, as before SSE existed; these split them.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// How a client receives its messages.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Sse,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WebSocket => "websocket",
            Self::Sse => "sse",
        }
    }
}

impl EncodeLabelValue for Transport {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    pub transport: Transport,
}

/// Why an SSE request was refused, or a stream ended badly
/// (`pulsegate_sse_errors_total{reason}`); refusals both transports share
/// (Origin, token, limits) are `connections_rejected`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum SseError {
    /// A `channel` that is not `persona:<id>`.
    InvalidChannel,
    /// `/sse` without any `channel`.
    NoChannel,
    /// More `channel`s than `ws.max_subscriptions`.
    TooManyChannels,
    /// A `since` or `Last-Event-ID` that is not an offset (of a listed channel).
    InvalidSince,
    /// Closed when the token expired.
    TokenExpired,
    /// Closed for falling behind its queue bound.
    SlowConsumer,
}

impl SseError {
    pub const ALL: [SseError; 6] = [
        Self::InvalidChannel,
        Self::NoChannel,
        Self::TooManyChannels,
        Self::InvalidSince,
        Self::TokenExpired,
        Self::SlowConsumer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidChannel => "invalid_channel",
            Self::NoChannel => "no_channel",
            Self::TooManyChannels => "too_many_channels",
            Self::InvalidSince => "invalid_since",
            Self::TokenExpired => "token_expired",
            Self::SlowConsumer => "slow_consumer",
        }
    }
}

impl EncodeLabelValue for SseError {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SseErrorLabel {
    pub reason: SseError,
}

#[derive(Default)]
pub struct Transports {
    pub active: Family<TransportLabel, Gauge>,
    pub opened: Family<TransportLabel, Counter>,
    pub sse_errors: Family<SseErrorLabel, Counter>,
}

impl Transports {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "transport_connections_active",
            "Open client connections, by transport (websocket, sse)",
            self.active.clone(),
        );
        r.register(
            "transport_connections",
            "Client connections accepted, by transport (websocket, sse)",
            self.opened.clone(),
        );
        r.register(
            "sse_errors",
            "SSE requests refused for their channels or offsets, and SSE streams closed for a reason, by reason",
            self.sse_errors.clone(),
        );
    }

    /// Counts a connection open until the guard is dropped.
    pub fn open(&self, transport: Transport) -> Open {
        let label = TransportLabel { transport };
        self.opened.get_or_create(&label).inc();
        let gauge = self.active.get_or_create(&label).clone();
        gauge.inc();
        Open(gauge)
    }

    pub fn sse_error(&self, reason: SseError) {
        self.sse_errors
            .get_or_create(&SseErrorLabel { reason })
            .inc();
    }
}

/// An open connection, counted in `transport_connections_active`.
pub struct Open(Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::SseError;

    #[test]
    fn every_sse_error_is_documented() {
        let doc = include_str!("../../docs/architecture.md");
        let row = doc
            .lines()
            .find(|l| l.starts_with("| `pulsegate_sse_errors_total`"))
            .expect("docs/architecture.md has a row for pulsegate_sse_errors_total");
        let labels = row.split('|').nth(3).unwrap_or_default();
        let mut documented: Vec<&str> = labels
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|s| *s != "reason")
            .collect();
        documented.sort_unstable();
        let mut code: Vec<&str> = SseError::ALL.iter().map(|e| e.as_str()).collect();
        code.sort_unstable();
        assert_eq!(documented, code);
    }
}
