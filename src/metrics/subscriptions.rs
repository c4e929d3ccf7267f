//! The subscriber connection's rounds of SUBSCRIBE/UNSUBSCRIBE
//! (`src/redis/reconcile.rs`): channels per round is what batching saves.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// What a round did to one channel
/// (`pulsegate_redis_subscription_changes_total{change}`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ChannelChange {
    /// Subscribed and confirmed.
    Subscribed,
    Unsubscribed,
    /// Its last client left while the gateway drained: left subscribed,
    /// since the connection closes moments later anyway.
    KeptDraining,
}

impl ChannelChange {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subscribed => "subscribed",
            Self::Unsubscribed => "unsubscribed",
            Self::KeptDraining => "kept_draining",
        }
    }
}

impl EncodeLabelValue for ChannelChange {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabel {
    pub change: ChannelChange,
}

#[derive(Default)]
pub struct Subscriptions {
    /// Rounds that sent at least one command.
    pub rounds: Counter,
    pub changes: Family<ChangeLabel, Counter>,
}

impl Subscriptions {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "redis_subscription_rounds",
            "Rounds of SUBSCRIBE/UNSUBSCRIBE on the subscriber connection that sent a command (each: one SUBSCRIBE per 256 new channels, one confirming PING, one UNSUBSCRIBE per 256 dropped ones)",
            self.rounds.clone(),
        );
        r.register(
            "redis_subscription_changes",
            "Channels a round subscribed, unsubscribed, or kept subscribed because the gateway was draining",
            self.changes.clone(),
        );
    }

    pub fn changed(&self, change: ChannelChange, channels: usize) {
        if channels > 0 {
            self.changes
                .get_or_create(&ChangeLabel { change })
                .inc_by(channels as u64);
        }
    }
}
