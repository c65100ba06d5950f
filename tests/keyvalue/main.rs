//! KeyValue service behaviour against a real redis-server.
//!
//! One test binary (`cargo test --test keyvalue`), split by topic into the modules below;
//! helpers they share live in [`support`].

#[path = "../common/mod.rs"]
mod common;
mod support;

mod bad_input;
mod batches;
mod bounded_responses;
mod compare_and_swap;
mod counters;
mod get_set;
mod reserved;
mod scan;
mod ttl;
mod wrong_type;
