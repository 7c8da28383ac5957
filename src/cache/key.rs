//! Cache keys, built in exactly one place.
//!
//! `<prefix>:v<SCHEMA>:{<image sha256>}:<model id>:<size>`. The braces are a Redis Cluster hash
//! tag: a value and its lease (`<key>:lease`) always live in the same slot. Keys are content
//! hashes plus the model's identity, never file names.
use std::fmt;

/// Bumped whenever the value format or the meaning of a key changes (2: values compressed,
/// `super::value`; 1 held the raw i16 planes).
pub const SCHEMA: u32 = 2;

/// Default key prefix (`--cache-prefix`).
pub const DEFAULT_PREFIX: &str = "ddcolor";

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey {
    key: String,
    image_sha256: String,
}

impl CacheKey {
    /// `image_sha256` and `model_id` are lowercase hex digests.
    pub fn new(prefix: &str, model_id: &str, size: usize, image_sha256: &str) -> Self {
        Self {
            key: format!("{prefix}:v{SCHEMA}:{{{image_sha256}}}:{model_id}:{size}"),
            image_sha256: image_sha256.to_owned(),
        }
    }

    /// The full key string.
    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// The lease key that goes with this value key (same hash tag).
    pub fn lease_key(&self) -> String {
        format!("{}:lease", self.key)
    }

    pub fn image_sha256(&self) -> &str {
        &self.image_sha256
    }

    /// The key's pattern-free prefix (`<prefix>:v<SCHEMA>:`), for scans and clears.
    pub fn scan_prefix(prefix: &str) -> String {
        format!("{prefix}:v{SCHEMA}:")
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}
