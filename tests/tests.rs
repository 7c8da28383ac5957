//! One integration-test binary (see Cargo.toml `autotests = false`): each module is one area.
#![allow(clippy::disallowed_macros)] // a tool of our own: printing that panics is fine
mod archivist;
mod batch;
mod batch_redis;
mod bf16;
mod cache;
mod cli;
mod faults;
mod fidelity;
mod first_hour;
mod fuzz;
#[cfg(feature = "cuda")]
mod gpu;
mod hub_server;
mod model;
mod ops;
mod overhead;
mod pipeline;
mod readme;
mod redis_util;
mod review;
mod shard;
mod shared_cache;
mod stream;
mod streams;
mod unattended;
mod util;
mod weights;
