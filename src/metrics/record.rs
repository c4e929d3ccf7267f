//! Recording one event in the metrics it touches: typed reasons become
//! their labels here, and the runtime sampler's totals move with them.

use super::{
    AnalyticsRejection, CodeLabel, ErrorLabel, IngestRejection, LimitLabel, Metrics, ReasonLabel,
    Rejection,
};

impl Metrics {
    pub fn close_sent(&self, code: u16) {
        self.closes_sent(code, 1);
    }

    /// `n` closes with `code` at once (a batch of the shutdown drain).
    pub fn closes_sent(&self, code: u16, n: usize) {
        self.ws_closes
            .get_or_create(&CodeLabel { code })
            .inc_by(n as u64);
    }

    pub fn client_error(&self, code: &'static str) {
        self.runtime.errors.inc();
        self.client_errors.get_or_create(&ErrorLabel { code }).inc();
    }

    pub fn resume(&self, reason: &'static str) {
        self.resumes.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn analytics_rejected(&self, reason: AnalyticsRejection) {
        let reason = reason.label();
        self.analytics_rejected
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn ingest_rejected(&self, reason: IngestRejection) {
        let reason = reason.label();
        self.ingest_rejected
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn rate_limited(&self, limit: &'static str) {
        self.runtime.refusals.inc();
        self.rate_limited.get_or_create(&LimitLabel { limit }).inc();
    }

    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn rejected(&self, reason: Rejection) {
        let reason = reason.label();
        self.connections_rejected
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }
}
