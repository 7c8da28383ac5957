//! The result cache: one small trait, one module per backend, one factory on top.
//!
//! What is cached is the model's ab prediction at model resolution for one image, keyed by the
//! image's SHA-256 and the model's identity: small, and independent of output format and size.
//! The cache is a speed-up, never a failure: a backend error on lookup is a miss (counted as
//! such), a corrupt value is a miss, and a failed store is a warning.
//!
//! Files, each importing only from those above it in this list:
//! - [`key`] (keys, built in one place), [`value`] (the stored format, with its checksum),
//!   `backend.rs` (the [`Cache`] trait and its typed answers: [`Lookup`], [`Miss`], [`Lease`],
//!   [`LeaseOutcome`], [`CacheStats`], [`CacheError`]), `options.rs` ([`CacheOptions`],
//!   [`TlsFiles`], [`parse_size`]), `secret.rs` ([`redact`] and scrubbing passwords out of messages),
//!   `util.rs` (tokens, clocks);
//! - the backends: [`disk`], [`none`], [`redis`] (one implementation over a single server,
//!   [`redis::single`], or a cluster, [`redis::cluster`]);
//! - [`failover`]: a network backend with the fallback it switches to once it goes down;
//! - [`policy`]: what a run may do with a cache, as wrappers (read-only, required);
//! - the factory, `spec.rs`: [`CacheSpec::parse`] once, then [`open_spec`] (or [`open`] for
//!   both at once), with [`CacheSpec::fallback`] for a remote cache that cannot be reached.
//!
//! This file only names them and re-exports what callers use.
mod backend;
pub mod disk;
pub mod failover;
pub mod key;
mod lease_file;
pub mod none;
mod options;
pub mod policy;
pub mod redis;
mod secret;
mod spec;
mod util;
pub mod value;

pub use backend::{
    Cache, CacheError, CacheErrorKind, CacheStats, Lease, LeaseOutcome, Lookup, Miss,
};
pub use key::CacheKey;
pub use options::{parse_size, CacheOptions, TlsFiles};
pub use secret::redact;
pub use spec::{open, open_spec, parse_spec, CacheSpec};
