//! WebSocket connections: handshake, per-connection session (reads), outbox
//! (bounded queue) and writer (batched writes).

pub mod frame;
pub mod outbox;
pub mod reader;
pub mod registry;
pub mod session;
pub mod upgrade;
pub mod writer;
