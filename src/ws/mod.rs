//! A WebSocket after its upgrade (`http/upgrade.rs` does the handshake):
//! the session that reads and answers the client, and the writer that
//! drains the connection's outbox (`hub/outbox.rs`) in batches.

mod frames;
pub mod io;
pub mod reader;
pub mod session;
pub mod writer;
