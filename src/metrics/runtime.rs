//! The figures behind `system:runtime` that the labelled families cannot
//! give cheaply (summing a family means encoding it): running totals of
//! errors and rate-limit refusals, bumped beside their families; and the
//! sampler's own counters, which prove it idles while nobody watches.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Default)]
pub struct RuntimeMetrics {
    /// Samples taken (on the channel's interval, and for `request_metrics`).
    pub samples: Counter,
    /// Clients watching `system:runtime`.
    pub watchers: Gauge,
    /// Not exported (each has its own family): errors the gateway answered
    /// or dropped, summed over their labels.
    pub errors: Counter,
    /// Not exported (`rate_limited` has them by limit): every refusal of a
    /// rate limit.
    pub refusals: Counter,
}

impl RuntimeMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "runtime_samples",
            "Runtime samples taken (only while a client watches system:runtime, or asks request_metrics)",
            self.samples.clone(),
        );
        r.register(
            "runtime_watchers",
            "Clients watching system:runtime",
            self.watchers.clone(),
        );
    }
}
