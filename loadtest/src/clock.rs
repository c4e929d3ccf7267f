//! The shared clock: nanoseconds since the Unix epoch. Publisher and
//! subscribers run on the same machine, so one wall clock serves both, even
//! across worker processes.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
