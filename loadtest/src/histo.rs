//! Histograms: latency is recorded on the hot path into one histogram per
//! runtime thread (an uncontended lock), merged when the run ends; the rare
//! timings (connect, reconnect) share one locked histogram each.
//! Histograms cross process boundaries as base64 of the V2 encoding.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;

pub type Hist = Histogram<u64>;

/// Microseconds, 1 µs to 10 min, 3 significant digits.
pub fn new_hist() -> Hist {
    let mut h = Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
    h.auto(true);
    h
}

static THREAD_HISTS: Mutex<Vec<Arc<Mutex<Hist>>>> = Mutex::new(Vec::new());

thread_local! {
    static LATENCY: Arc<Mutex<Hist>> = {
        let h = Arc::new(Mutex::new(new_hist()));
        THREAD_HISTS.lock().expect("registry").push(h.clone());
        h
    };
}

/// Runs `f` with this thread's latency histogram locked. Must not await.
pub fn with_latency<R>(f: impl FnOnce(&mut Hist) -> R) -> R {
    LATENCY.with(|h| f(&mut h.lock().expect("latency histogram")))
}

/// The merge of every thread's latency histogram.
pub fn merged_latency() -> Hist {
    let mut out = new_hist();
    for h in THREAD_HISTS.lock().expect("registry").iter() {
        let _ = out.add(&*h.lock().expect("latency histogram"));
    }
    out
}

pub fn encode(h: &Hist) -> String {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut bytes)
        .expect("serialising to memory");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn decode(s: &str) -> anyhow::Result<Hist> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .context("histogram base64")?;
    let h: Hist = Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| anyhow::anyhow!("histogram decode: {e:?}"))?;
    Ok(h)
}

/// Adds `other` into `into`, growing it as needed.
pub fn merge(into: &mut Hist, other: &Hist) {
    let _ = into.add(other);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut h = new_hist();
        for v in [1, 10, 100, 1000, 123_456] {
            h.record(v).unwrap();
        }
        let back = decode(&encode(&h)).unwrap();
        assert_eq!(back.len(), 5);
        assert_eq!(back.max(), h.max());
    }
}
