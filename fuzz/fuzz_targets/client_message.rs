//! The WebSocket client-message parser (`protocol::parse_client_message`):
//! any bytes must give a message or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    if let Err(e) = pulsegate::protocol::parse_client_message(&mut buf, 64) {
        let _ = (e.code(), e.to_string());
    }
});
