//! Integration tests against real redis-server processes.

mod analytics;
mod api;
mod audit;
mod bad_bytes;
mod clientlog;
mod cluster;
mod common;
mod config;
mod fanout;
mod faults;
mod functions;
mod hostile;
mod outages;
mod pg;
mod protocol;
mod resume;
mod security;
mod shared_reads;
mod shutdown;
