//! `none`: no cache. Every lookup misses, every lease is acquired, puts are no-ops.
use std::time::Duration;

use super::backend::{Cache, CacheError, CacheStats, Lease, LeaseOutcome, Lookup, Miss};
use super::key::CacheKey;
use super::util::new_token;

/// The cache that caches nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCache;

impl Cache for NoCache {
    fn describe(&self) -> String {
        "none".to_owned()
    }

    fn get_many(&self, keys: &[CacheKey]) -> Vec<Lookup> {
        vec![Lookup::Miss(Miss::Absent); keys.len()]
    }

    fn put(&self, _: &CacheKey, _: &[u8], _: Option<Duration>) -> Result<(), CacheError> {
        Ok(())
    }

    fn try_lease(&self, key: &CacheKey, _: Duration) -> Result<LeaseOutcome, CacheError> {
        Ok(LeaseOutcome::Acquired(Lease {
            key: key.clone(),
            token: new_token(),
        }))
    }

    fn release(&self, _: &Lease) -> Result<(), CacheError> {
        Ok(())
    }

    fn renew(&self, _lease: &Lease, _ttl: Duration) -> Result<bool, CacheError> {
        Ok(true)
    }

    fn keeps_values(&self) -> bool {
        false
    }

    fn lease_left(&self, _: &CacheKey) -> Result<Option<Duration>, CacheError> {
        Ok(None)
    }

    fn stats(&self) -> Result<CacheStats, CacheError> {
        Ok(CacheStats {
            entries: 0,
            bytes: Some(0),
            details: vec![("backend".to_owned(), "none (caching disabled)".to_owned())],
        })
    }

    fn clear(&self) -> Result<u64, CacheError> {
        Ok(0)
    }

    fn check_writable(&self) -> Result<(), CacheError> {
        Ok(())
    }
}
