//! pulsegate: a Redis-backed real-time pub/sub gateway.
//!
//! Data flows Redis → [`redis::subscriber`] → [`hub`] → per-connection
//! [`hub::outbox`] → [`ws::writer`] → WebSocket (or [`sse`] → Server-Sent
//! Events); [`http`] serves REST beside it.
//! `docs/architecture.md` draws the same map.
#![forbid(unsafe_code)]

pub mod analytics;
pub mod answers;
pub mod app;
pub mod audit;
pub mod auth;
#[cfg(test)]
mod bench_sql;
pub mod channel_name;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod json_limit;
pub mod keys;
pub mod metrics;
pub mod pointintime;
pub mod protocol;
pub mod publish;
pub mod query;
pub mod ratelimit;
pub mod redis;
pub mod runtime;
pub mod server;
pub mod shutdown;
pub mod simulate;
pub mod singleflight;
pub mod snapshot;
pub mod sse;
pub mod stream;
pub mod telemetry;
pub mod time;
pub mod top;
pub mod undecodable;
pub mod ws;
