//! What a run may do with a cache, as wrappers around any backend (sccache's
//! `ReadOnlyStorage`), so that the engine asks the cache instead of carrying flags:
//! - [`ReadOnly`] (`--cache-readonly`, or a cache that refused the start-up write probe):
//!   lookups as the backend answers them; no value stored, no lease taken;
//! - [`Required`] (`--require-cache`): every answer as the backend gives it, and a cache
//!   error, or a backend that stops answering, stops the run (exit 3) instead of a warning.
use std::time::Duration;

use super::backend::{Cache, CacheError, CacheErrorKind, CacheStats, Lease, LeaseOutcome, Lookup};
use super::key::CacheKey;

/// A cache read and never written.
pub struct ReadOnly(pub Box<dyn Cache>);

impl ReadOnly {
    fn refused(&self, what: &str) -> CacheError {
        CacheError::new(
            "read-only",
            CacheErrorKind::Config,
            format!("{}: {what}: the cache is used read-only", self.0.describe()),
        )
    }
}

impl Cache for ReadOnly {
    fn describe(&self) -> String {
        self.0.describe()
    }

    fn get_many(&self, keys: &[CacheKey]) -> Vec<Lookup> {
        self.0.get_many(keys)
    }

    fn put(&self, _: &CacheKey, _: &[u8], _: Option<Duration>) -> Result<(), CacheError> {
        Err(self.refused("store"))
    }

    fn try_lease(&self, _: &CacheKey, _: Duration) -> Result<LeaseOutcome, CacheError> {
        Err(self.refused("lease"))
    }

    fn release(&self, _: &Lease) -> Result<(), CacheError> {
        Err(self.refused("release"))
    }

    fn renew(&self, _: &Lease, _: Duration) -> Result<bool, CacheError> {
        Err(self.refused("renew"))
    }

    fn lease_left(&self, key: &CacheKey) -> Result<Option<Duration>, CacheError> {
        self.0.lease_left(key)
    }

    fn stats(&self) -> Result<CacheStats, CacheError> {
        self.0.stats()
    }

    fn clear(&self) -> Result<u64, CacheError> {
        Err(self.refused("clear"))
    }

    fn check_writable(&self) -> Result<(), CacheError> {
        Err(self.refused("probe"))
    }

    fn keeps_values(&self) -> bool {
        false
    }

    fn takes_leases(&self) -> bool {
        false
    }

    fn required(&self) -> bool {
        self.0.required()
    }

    fn down(&self) -> Option<String> {
        self.0.down()
    }
}

/// A cache the run cannot do without.
pub struct Required(pub Box<dyn Cache>);

impl Cache for Required {
    fn describe(&self) -> String {
        self.0.describe()
    }

    fn get_many(&self, keys: &[CacheKey]) -> Vec<Lookup> {
        self.0.get_many(keys)
    }

    fn put(&self, key: &CacheKey, value: &[u8], ttl: Option<Duration>) -> Result<(), CacheError> {
        self.0.put(key, value, ttl)
    }

    fn try_lease(&self, key: &CacheKey, ttl: Duration) -> Result<LeaseOutcome, CacheError> {
        self.0.try_lease(key, ttl)
    }

    fn release(&self, lease: &Lease) -> Result<(), CacheError> {
        self.0.release(lease)
    }

    fn release_retry(&self, lease: &Lease) -> Result<(), CacheError> {
        self.0.release_retry(lease)
    }

    fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, CacheError> {
        self.0.renew(lease, ttl)
    }

    fn lease_left(&self, key: &CacheKey) -> Result<Option<Duration>, CacheError> {
        self.0.lease_left(key)
    }

    fn lease_alive(&self, key: &CacheKey) -> Result<bool, CacheError> {
        self.0.lease_alive(key)
    }

    fn stats(&self) -> Result<CacheStats, CacheError> {
        self.0.stats()
    }

    fn clear(&self) -> Result<u64, CacheError> {
        self.0.clear()
    }

    fn check_writable(&self) -> Result<(), CacheError> {
        self.0.check_writable()
    }

    fn keeps_values(&self) -> bool {
        self.0.keeps_values()
    }

    fn takes_leases(&self) -> bool {
        self.0.takes_leases()
    }

    fn required(&self) -> bool {
        true
    }

    fn down(&self) -> Option<String> {
        self.0.down()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::disk::DiskCache;
    use crate::cache::CacheOptions;

    fn disk(dir: &std::path::Path) -> Box<dyn Cache> {
        Box::new(DiskCache::open(dir, &CacheOptions::default()).unwrap())
    }

    #[test]
    fn a_read_only_cache_reads_and_never_writes() {
        let dir = tempfile::tempdir().unwrap();
        let key = CacheKey::new("t", "model", 64, &"ab".repeat(32));
        disk(dir.path()).put(&key, b"value", None).unwrap();
        let ro = ReadOnly(disk(dir.path()));
        assert!(!ro.keeps_values() && !ro.takes_leases() && !ro.required());
        assert!(matches!(
            &ro.get_many(std::slice::from_ref(&key))[0],
            Lookup::Hit(_)
        ));
        let other = CacheKey::new("t", "model", 64, &"cd".repeat(32));
        let e = ro.put(&other, b"x", None).unwrap_err();
        assert_eq!(e.kind, CacheErrorKind::Config);
        assert!(ro.try_lease(&other, Duration::from_secs(1)).is_err());
        assert!(ro.check_writable().is_err());
        assert!(matches!(
            &disk(dir.path()).get_many(&[other])[0],
            Lookup::Miss(_)
        ));
    }

    #[test]
    fn a_required_cache_is_the_cache_it_wraps() {
        let dir = tempfile::tempdir().unwrap();
        let req = Required(disk(dir.path()));
        assert!(req.required() && req.keeps_values() && req.takes_leases());
        let key = CacheKey::new("t", "model", 64, &"ef".repeat(32));
        req.put(&key, b"value", None).unwrap();
        assert!(matches!(
            &disk(dir.path()).get_many(&[key])[0],
            Lookup::Hit(_)
        ));
        assert!(Required(Box::new(ReadOnly(disk(dir.path()))))
            .put(
                &CacheKey::new("t", "model", 64, &"01".repeat(32)),
                b"v",
                None
            )
            .is_err());
    }
}
