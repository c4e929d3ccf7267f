//! Integration tests against real redis-server processes.

mod api;
mod common;
mod config;
mod fanout;
mod faults;
mod protocol;
mod resume;
mod shutdown;
