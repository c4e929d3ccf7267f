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
