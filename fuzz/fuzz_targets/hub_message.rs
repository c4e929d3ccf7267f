//! The hub's inspection of a Redis publication (`hub::message::inspect`),
//! where anyone who can PUBLISH reaches: any bytes must give routing fields
//! or a drop reason, never a panic or a stack overflow, and an accepted
//! payload wrapped for `/ws` must be one JSON object again.
//! Seeds (deep and wide documents): `fuzz/seeds/hub_message/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pulsegate::hub::message::{inspect, wrapped, Bounds};

fuzz_target!(|data: &[u8]| {
    let bounds = Bounds {
        max_bytes: 1 << 20,
        max_depth: 64,
    };
    match inspect(data, bounds) {
        Ok(meta) => {
            let d = wrapped(data, &meta, &std::sync::Arc::from("persona:p"));
            // A text frame: 2-10 header bytes, then the envelope.
            let header = match d.frame.get(1).map(|b| b & 0x7f) {
                Some(126) => 4,
                Some(127) => 10,
                _ => 2,
            };
            let body = &d.frame[header..];
            let v: serde_json::Value = serde_json::from_slice(body).expect("valid envelope");
            assert!(v.is_object());
        }
        Err(reason) => {
            let _ = (reason.label(), reason.to_string());
        }
    }
});
