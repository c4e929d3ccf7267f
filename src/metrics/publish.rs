//! Channel publications over HTTP (`POST /api/channels/{channel}/publish`):
//! accepted, and refused by reason.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::labels::{PublishRejection, ReasonLabel};

#[derive(Default)]
pub struct Publish {
    /// `pulsegate_published_total`.
    pub accepted: Counter,
    /// `pulsegate_publish_rejected_total{reason}`.
    pub rejected: Family<ReasonLabel, Counter>,
}

impl Publish {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "published",
            "Messages accepted through POST /api/channels/{channel}/publish",
            self.accepted.clone(),
        );
        r.register(
            "publish_rejected",
            "Channel publications over HTTP refused, by reason",
            self.rejected.clone(),
        );
    }

    pub fn rejected(&self, reason: PublishRejection) {
        let reason = reason.label();
        self.rejected.get_or_create(&ReasonLabel { reason }).inc();
    }
}
