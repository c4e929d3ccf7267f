//! The HTTP ingest body checks (`ingest::prepare`): any bytes, for each
//! route's event type, must give (persona, JSON) or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

const TYPES: [&str; 3] = ["variant_posted", "performance_update", "early_kill"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let mut buf = body.to_vec();
    let event_type = TYPES[selector as usize % TYPES.len()];
    if let Ok((persona, json)) = pulsegate::ingest::prepare(event_type, &mut buf, 64, 64) {
        // What is handed to the function is a JSON object again.
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert!(v.is_object(), "{persona}: {json}");
    }
});
