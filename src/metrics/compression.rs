//! permessage-deflate: how often the gateway compressed, and what it saved.
//! `bytes_out ÷ bytes_in` is the compression ratio of what was compressed;
//! a run whose result was no smaller counts its input on both sides (the
//! frame went out plain).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::{Compressed, CompressedLabel};

#[derive(Default)]
pub struct Compressions {
    pub runs: Family<CompressedLabel, Counter>,
    pub bytes_in: Family<CompressedLabel, Counter>,
    pub bytes_out: Family<CompressedLabel, Counter>,
}

impl Compressions {
    pub fn register(&self, r: &mut Registry) {
        for (name, help, c) in [
            (
                "ws_compressions",
                "permessage-deflate runs, by what they compressed (a publication once for all its subscribers, an initial_data once per shared snapshot read, or one connection's frame)",
                &self.runs,
            ),
            (
                "ws_compression_bytes_in",
                "Payload bytes given to permessage-deflate",
                &self.bytes_in,
            ),
            (
                "ws_compression_bytes_out",
                "Payload bytes that came out of permessage-deflate (the input again when compressing did not shrink it)",
                &self.bytes_out,
            ),
        ] {
            r.register(name, help, c.clone());
        }
    }

    /// One run over `before` payload bytes; `after` is `None` when the
    /// result was not smaller.
    pub fn record(&self, kind: Compressed, before: usize, after: Option<usize>) {
        let label = CompressedLabel { kind };
        self.runs.get_or_create(&label).inc();
        self.bytes_in.get_or_create(&label).inc_by(before as u64);
        self.bytes_out
            .get_or_create(&label)
            .inc_by(after.unwrap_or(before) as u64);
    }
}
