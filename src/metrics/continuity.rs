//! What the gap repair did after a resubscription (`src/redis/gap.rs`), and
//! the Redis nodes the gateway is connected to (`/readyz` shows them too).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why a persona's missed publications could not be read back.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LossLabel {
    /// `went_back` (the stream is behind what was forwarded: a failover lost
    /// writes), `trimmed`, `too_many_missed`.
    pub reason: &'static str,
}

/// One Redis node, as `host:port`, and which connection reaches it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    pub node: String,
    /// `command` or `subscriber`.
    pub conn: &'static str,
}

#[derive(Default)]
pub struct Continuity {
    /// Channel repairs run (after a reconnect, failover, slot move or lag).
    pub repairs: Counter,
    /// Stream entries forwarded by repairs (missed while resubscribing).
    pub repaired_entries: Counter,
    /// Publications dropped because their offset was already forwarded
    /// (read back by a repair, or delivered by two nodes during a slot move).
    pub duplicates: Counter,
    /// Personas whose clients got a fresh `initial_data` (`recovered: false`)
    /// because the missed entries were gone.
    pub history_lost: Family<LossLabel, Counter>,
    /// Ranges of stream entries a failover lost, recorded in the audit's
    /// `audit_lost_ranges` by this instance (`src/audit/losses.rs`).
    pub lost_ranges: Counter,
    /// 1 for each Redis node a connection is open to.
    pub node_up: Family<NodeLabel, Gauge>,
}

impl Continuity {
    pub fn register(&self, r: &mut Registry) {
        for (name, help, c) in [
            (
                "redis_gap_repairs",
                "Channel gap repairs run after a resubscription (reconnect, failover, slot move, lag)",
                &self.repairs,
            ),
            (
                "redis_gap_repaired_entries",
                "Stream entries forwarded by gap repairs",
                &self.repaired_entries,
            ),
            (
                "audit_lost_ranges",
                "Ranges of stream entries a failover lost (acknowledged, then gone from the promoted replica), recorded in audit_lost_ranges",
                &self.lost_ranges,
            ),
            (
                "redis_duplicates_dropped",
                "Publications dropped because their offset was already forwarded",
                &self.duplicates,
            ),
        ] {
            r.register(name, help, c.clone());
        }
        r.register(
            "redis_history_lost",
            "Personas whose missed entries were gone after a resubscription (clients got initial_data with recovered: false), by reason",
            self.history_lost.clone(),
        );
        r.register(
            "redis_node_up",
            "1 for each Redis node a connection is open to, by node and connection",
            self.node_up.clone(),
        );
    }
}
