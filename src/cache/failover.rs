//! A network cache with a fallback behind it, for a run that must go on when its cache stops
//! answering mid-run: while the primary works every call goes to it; once it is
//! [`Cache::down`] (its circuit breaker tripped) every call goes to the fallback, opened then
//! from the spec's [`CacheSpec::fallback`] (the default disk cache for a Redis one), as if the
//! primary had been unreachable at start. A lease taken on the primary and released or renewed
//! on the fallback is simply not found there (released: nothing to do; renewed: lost, and
//! inference goes on).
use std::sync::OnceLock;
use std::time::Duration;

use super::backend::{Cache, CacheError, CacheStats, Lease, LeaseOutcome, Lookup};
use super::key::CacheKey;
use super::none::NoCache;
use super::options::CacheOptions;
use super::spec::CacheSpec;

pub struct Failover {
    primary: Box<dyn Cache>,
    spec: CacheSpec,
    options: CacheOptions,
    fallback: OnceLock<Box<dyn Cache>>,
}

impl Failover {
    /// `primary`, falling back to what `spec` (the primary's spec) falls back to.
    pub fn new(primary: Box<dyn Cache>, spec: &CacheSpec, options: &CacheOptions) -> Self {
        Self {
            primary,
            spec: spec.fallback(),
            options: options.clone(),
            fallback: OnceLock::new(),
        }
    }

    fn fallback(&self) -> &dyn Cache {
        self.fallback
            .get_or_init(|| {
                self.spec
                    .open(&self.options)
                    .unwrap_or_else(|_| Box::new(NoCache))
            })
            .as_ref()
    }

    /// `call` on the primary while it is up; on the fallback once it is down (also for the
    /// call during which it went down).
    fn route<R>(&self, call: impl Fn(&dyn Cache) -> R) -> R {
        if self.primary.down().is_none() {
            let r = call(self.primary.as_ref());
            if self.primary.down().is_none() {
                return r;
            }
        }
        call(self.fallback())
    }
}

impl Cache for Failover {
    fn describe(&self) -> String {
        self.primary.describe()
    }

    fn get_many(&self, keys: &[CacheKey]) -> Vec<Lookup> {
        self.route(|c| c.get_many(keys))
    }

    fn put(&self, key: &CacheKey, value: &[u8], ttl: Option<Duration>) -> Result<(), CacheError> {
        self.route(|c| c.put(key, value, ttl))
    }

    fn try_lease(&self, key: &CacheKey, ttl: Duration) -> Result<LeaseOutcome, CacheError> {
        self.route(|c| c.try_lease(key, ttl))
    }

    fn release(&self, lease: &Lease) -> Result<(), CacheError> {
        self.route(|c| c.release(lease))
    }

    /// Leases are taken on the primary while it is up: a last try goes there, breaker or not.
    fn release_retry(&self, lease: &Lease) -> Result<(), CacheError> {
        self.primary.release_retry(lease)
    }

    fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, CacheError> {
        self.route(|c| c.renew(lease, ttl))
    }

    fn lease_left(&self, key: &CacheKey) -> Result<Option<Duration>, CacheError> {
        self.route(|c| c.lease_left(key))
    }

    fn stats(&self) -> Result<CacheStats, CacheError> {
        self.route(|c| c.stats())
    }

    fn clear(&self) -> Result<u64, CacheError> {
        self.route(|c| c.clear())
    }

    fn check_writable(&self) -> Result<(), CacheError> {
        self.route(|c| c.check_writable())
    }

    /// The primary's reason, and where the run goes on.
    fn down(&self) -> Option<String> {
        self.primary.down().map(|why| {
            format!(
                "{why}; using {} for the rest of this run",
                self.fallback().describe()
            )
        })
    }
}
