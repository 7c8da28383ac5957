//! One integration-test binary (see Cargo.toml `autotests = false`): each module is one area.
mod cli;
mod model;
mod ops;
mod pipeline;
mod util;
