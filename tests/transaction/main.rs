//! KeyValue.Transaction behaviour against a real redis-server: guards, all-or-nothing
//! operations, per-operation results and exact 64-bit counters.
//!
//! One test binary (`cargo test --test transaction`), split by topic into the modules below;
//! helpers they share live in [`support`].

#[path = "../common/mod.rs"]
mod common;
mod support;

mod atomicity;
mod bad_input;
mod commit;
mod counters;
mod guards;
