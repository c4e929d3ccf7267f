//! Integration tests against real redis-server processes.

mod api;
mod audit;
mod bad_bytes;
mod channels;
mod clientlog;
mod cluster;
mod common;
mod compression;
mod config;
mod container;
mod fanout;
mod faults;
mod functions;
mod grafana;
mod hostile;
mod outages;
mod pg;
mod protocol;
mod recent;
mod resume;
mod runtime;
mod security;
mod shared_reads;
mod shutdown;
mod sse;
mod topology;
