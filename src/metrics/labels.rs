//! The label sets of the metric families, kept apart from the registry.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PersonaLabel {
    pub persona: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    pub limit: &'static str,
}

/// Where the gateway read bytes it could not decode as UTF-8 (see
/// `src/undecodable.rs`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ReadPath {
    /// A publication from Redis pub/sub.
    Live,
    /// `pulse_snapshot` (initial data, REST reads).
    Snapshot,
    /// A `?since=` resume read from the stream.
    Replay,
    /// The REST `real_time_feed` read from the stream.
    Feed,
    /// The audit consumer.
    Audit,
}

impl ReadPath {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Snapshot => "snapshot",
            Self::Replay => "replay",
            Self::Feed => "feed",
            Self::Audit => "audit",
        }
    }
}

impl EncodeLabelValue for ReadPath {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// What became of what could not be decoded.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Repair {
    /// Served with each invalid sequence replaced by U+FFFD.
    Replaced,
    /// Left out: not even the replaced text was usable.
    Skipped,
}

impl Repair {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Replaced => "replaced",
            Self::Skipped => "skipped",
        }
    }
}

impl EncodeLabelValue for Repair {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UndecodableLabels {
    pub read: ReadPath,
    pub action: Repair,
}

/// Why a connection was refused before it became a WebSocket
/// (`pulsegate_connections_rejected_total{reason}`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Rejection {
    /// `accept()` failed (usually EMFILE).
    AcceptError,
    /// A connection rate (`limits.accept`, `limits.connections_per_ip`).
    RateLimited,
    BadPersonaId,
    BadSince,
    NotUpgrade,
    BadVersion,
    /// `Origin` not in `auth.allowed_origins`.
    Origin,
    Unauthorized,
    Forbidden,
    MaxConnectionsPerIp,
    Draining,
    MaxConnections,
    BadHandshake,
}

impl Rejection {
    pub const ALL: [Rejection; 13] = [
        Self::AcceptError,
        Self::RateLimited,
        Self::BadPersonaId,
        Self::BadSince,
        Self::NotUpgrade,
        Self::BadVersion,
        Self::Origin,
        Self::Unauthorized,
        Self::Forbidden,
        Self::MaxConnectionsPerIp,
        Self::Draining,
        Self::MaxConnections,
        Self::BadHandshake,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::AcceptError => "accept_error",
            Self::RateLimited => "rate_limited",
            Self::BadPersonaId => "bad_persona_id",
            Self::BadSince => "bad_since",
            Self::NotUpgrade => "not_upgrade",
            Self::BadVersion => "bad_version",
            Self::Origin => "origin",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::MaxConnectionsPerIp => "max_connections_per_ip",
            Self::Draining => "draining",
            Self::MaxConnections => "max_connections",
            Self::BadHandshake => "bad_handshake",
        }
    }
}

/// Why an HTTP ingest was refused (`pulsegate_ingest_rejected_total{reason}`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum IngestRejection {
    Invalid,
    UnknownVariant,
    Conflict,
    AuditBacklogFull,
    Forbidden,
    Unavailable,
}

impl IngestRejection {
    pub const ALL: [IngestRejection; 6] = [
        Self::Invalid,
        Self::UnknownVariant,
        Self::Conflict,
        Self::AuditBacklogFull,
        Self::Forbidden,
        Self::Unavailable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::UnknownVariant => "unknown_variant",
            Self::Conflict => "conflict",
            Self::AuditBacklogFull => "audit_backlog_full",
            Self::Forbidden => "forbidden",
            Self::Unavailable => "unavailable",
        }
    }
}

/// Why a `POST /api/channels/{channel}/publish` was refused
/// (`pulsegate_publish_rejected_total`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum PublishRejection {
    InvalidChannel,
    UnknownNamespace,
    Forbidden,
    Invalid,
    AuditBacklogFull,
    Unavailable,
}

impl PublishRejection {
    pub const ALL: [PublishRejection; 6] = [
        Self::InvalidChannel,
        Self::UnknownNamespace,
        Self::Forbidden,
        Self::Invalid,
        Self::AuditBacklogFull,
        Self::Unavailable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::InvalidChannel => "invalid_channel",
            Self::UnknownNamespace => "unknown_namespace",
            Self::Forbidden => "forbidden",
            Self::Invalid => "invalid",
            Self::AuditBacklogFull => "audit_backlog_full",
            Self::Unavailable => "unavailable",
        }
    }
}

/// Why an analytics or point-in-time request was refused
/// (`pulsegate_analytics_rejected_total{reason}`); the reason is also the
/// error code of the answer.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum AnalyticsRejection {
    InvalidPersonaId,
    InvalidSince,
    InvalidUntil,
    InvalidRange,
    SpanTooLong,
    InvalidMetric,
    InvalidBucket,
    TooManyBuckets,
    InvalidAt,
    AtInFuture,
    UnknownPersona,
    /// A namespace that is not 1-32 of `[a-z0-9_-]`: 400.
    InvalidNamespace,
    /// Not a `[[channels]]` namespace (`persona` and `system` included): 404.
    UnknownNamespace,
    /// A `[[channels]]` namespace without history, so never audited: 404.
    NamespaceNotAudited,
    /// No `database.url`: 503.
    AuditUnavailable,
    /// Postgres unreachable, failed or over the statement timeout: 503.
    DatabaseUnavailable,
}

impl AnalyticsRejection {
    pub const ALL: [AnalyticsRejection; 16] = [
        Self::InvalidPersonaId,
        Self::InvalidSince,
        Self::InvalidUntil,
        Self::InvalidRange,
        Self::SpanTooLong,
        Self::InvalidMetric,
        Self::InvalidBucket,
        Self::TooManyBuckets,
        Self::InvalidAt,
        Self::AtInFuture,
        Self::UnknownPersona,
        Self::InvalidNamespace,
        Self::UnknownNamespace,
        Self::NamespaceNotAudited,
        Self::AuditUnavailable,
        Self::DatabaseUnavailable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::InvalidPersonaId => "invalid_persona_id",
            Self::InvalidSince => "invalid_since",
            Self::InvalidUntil => "invalid_until",
            Self::InvalidRange => "invalid_range",
            Self::SpanTooLong => "span_too_long",
            Self::InvalidMetric => "invalid_metric",
            Self::InvalidBucket => "invalid_bucket",
            Self::TooManyBuckets => "too_many_buckets",
            Self::InvalidAt => "invalid_at",
            Self::AtInFuture => "at_in_future",
            Self::UnknownPersona => "unknown_persona",
            Self::InvalidNamespace => "invalid_namespace",
            Self::UnknownNamespace => "unknown_namespace",
            Self::NamespaceNotAudited => "namespace_not_audited",
            Self::AuditUnavailable => "audit_unavailable",
            Self::DatabaseUnavailable => "database_unavailable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{AnalyticsRejection, IngestRejection, PublishRejection, Rejection};

    /// The `reason` values docs/architecture.md lists for `metric`.
    fn documented(metric: &str) -> Vec<String> {
        let doc = include_str!("../../docs/architecture.md");
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{metric}`")))
            .unwrap_or_else(|| panic!("docs/architecture.md has no row for {metric}"));
        let labels = row.split('|').nth(3).unwrap_or_default();
        let mut out: Vec<String> = labels
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|s| *s != "reason")
            .map(str::to_owned)
            .collect();
        out.sort();
        out
    }

    fn sorted(labels: impl Iterator<Item = &'static str>) -> Vec<String> {
        let mut v: Vec<String> = labels.map(str::to_owned).collect();
        v.sort();
        v
    }

    #[test]
    fn every_rejection_reason_is_documented() {
        assert_eq!(
            documented("pulsegate_connections_rejected_total"),
            sorted(Rejection::ALL.iter().map(|r| r.label()))
        );
        assert_eq!(
            documented("pulsegate_ingest_rejected_total"),
            sorted(IngestRejection::ALL.iter().map(|r| r.label()))
        );
        assert_eq!(
            documented("pulsegate_publish_rejected_total"),
            sorted(PublishRejection::ALL.iter().map(|r| r.label()))
        );
        assert_eq!(
            documented("pulsegate_analytics_rejected_total"),
            sorted(AnalyticsRejection::ALL.iter().map(|r| r.label()))
        );
    }
}

/// What a permessage-deflate run compressed
/// (`pulsegate_ws_compressions_total{kind}`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Compressed {
    /// A publication, compressed once for every compressing subscriber.
    Broadcast,
    /// A frame for one connection: a reply, a replayed event.
    Connection,
    /// A snapshot's `initial_data`, compressed once per snapshot read and
    /// framing for every compressing client that shares the read.
    Snapshot,
}

impl Compressed {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Broadcast => "broadcast",
            Self::Connection => "connection",
            Self::Snapshot => "snapshot",
        }
    }
}

impl EncodeLabelValue for Compressed {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CompressedLabel {
    pub kind: Compressed,
}
