//! The leases this process holds, kept alive by a heartbeat. A lease is taken just before an
//! image is decoded for inference and released as soon as its value is stored; while it is
//! held, the heartbeat renews it every third of its TTL. So a live holder never loses its
//! lease however long inference takes, and a holder that dies (or is stopped) blocks its
//! image for at most one TTL.
//!
//! A release that fails (the server went away, a master died before its replica took over)
//! would leave the lease behind for other runs to wait out. Such leases are kept, and before
//! the run ends they are released again, for up to [`RELEASE_RETRY_FOR`], past the backend's
//! circuit breaker: a failover is usually over within seconds.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::cache::{Cache, CacheError, Lease};

/// How long the end of a run keeps trying to release leases whose release failed (bounded by
/// the lease TTL too: after that they are gone anyway).
pub const RELEASE_RETRY_FOR: Duration = Duration::from_secs(15);

/// The held leases of one run.
pub struct Leases<'a> {
    cache: &'a dyn Cache,
    ttl: Duration,
    held: Mutex<HashMap<String, Lease>>,
    /// Leases whose release failed, to be released again before the run ends.
    orphans: Mutex<Vec<Lease>>,
    stop: Mutex<bool>,
    wake: Condvar,
    /// Renewals that found the lease gone (it lapsed and another process took it).
    pub lost: AtomicU64,
    /// Renewals and releases that failed because the backend did.
    pub errors: AtomicU64,
    /// Those of them that no caller was told of (renewals, releases at the end of a run):
    /// the engine adds them to the summary's error counts.
    pub unreported: AtomicU64,
}

impl<'a> Leases<'a> {
    pub fn new(cache: &'a dyn Cache, ttl: Duration) -> Self {
        Self {
            cache,
            ttl,
            held: Mutex::new(HashMap::new()),
            orphans: Mutex::new(Vec::new()),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            lost: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            unreported: AtomicU64::new(0),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Start renewing `lease`.
    pub fn hold(&self, lease: &Lease) {
        crate::sync::lock(&self.held).insert(lease.token.clone(), lease.clone());
    }

    /// Stop renewing `lease` and release it (compare-and-delete).
    pub fn release(&self, lease: &Lease) -> Result<(), CacheError> {
        crate::sync::lock(&self.held).remove(&lease.token);
        let r = self.cache.release(lease);
        if r.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
            crate::sync::lock(&self.orphans).push(lease.clone());
        }
        r
    }

    /// How many leases are held now.
    pub fn len(&self) -> usize {
        crate::sync::lock(&self.held).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Renew every held lease every `ttl / 3` until [`Leases::stop`].
    pub fn heartbeat(&self) {
        let period = (self.ttl / 3).max(Duration::from_millis(50));
        let mut stopped = crate::sync::lock(&self.stop);
        loop {
            let (guard, _) = self
                .wake
                .wait_timeout(stopped, period)
                .unwrap_or_else(|p| p.into_inner());
            stopped = guard;
            if *stopped {
                return;
            }
            drop(stopped);
            self.renew_all();
            stopped = crate::sync::lock(&self.stop);
        }
    }

    fn renew_all(&self) {
        let leases: Vec<Lease> = crate::sync::lock(&self.held).values().cloned().collect();
        for lease in leases {
            match self.cache.renew(&lease, self.ttl) {
                Ok(true) => {}
                Ok(false) => {
                    // lapsed (this process was stopped longer than the TTL) and maybe taken
                    // over: inference goes on (the value is the same whoever stores it)
                    self.lost.fetch_add(1, Ordering::Relaxed);
                    crate::sync::lock(&self.held).remove(&lease.token);
                }
                Err(_) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    self.unreported.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// End the heartbeat.
    pub fn stop(&self) {
        *crate::sync::lock(&self.stop) = true;
        self.wake.notify_all();
    }

    /// Release whatever is still held (a run that ends early), then retry the releases that
    /// failed during the run or now, for up to [`RELEASE_RETRY_FOR`] (and the lease TTL),
    /// with the backend's breaker ignored. Returns how many leases are still not released
    /// (other runs wait up to one TTL for those images) and the last error, as the backend
    /// said it (a server that refused is not one that did not answer).
    pub fn release_all(&self) -> (usize, Option<String>) {
        let mut last = None;
        let held: Vec<Lease> = crate::sync::lock(&self.held)
            .drain()
            .map(|(_, l)| l)
            .collect();
        let mut pending: Vec<Lease> = std::mem::take(&mut *crate::sync::lock(&self.orphans));
        for l in held {
            if let Err(e) = self.cache.release(&l) {
                last = Some(e.to_string());
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.unreported.fetch_add(1, Ordering::Relaxed);
                pending.push(l);
            }
        }
        let deadline = Instant::now() + RELEASE_RETRY_FOR.min(self.ttl);
        let mut pause = Duration::from_millis(200);
        while !pending.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_secs(2));
            pending.retain(|l| match self.cache.release_retry(l) {
                Ok(()) => false,
                Err(e) => {
                    last = Some(e.to_string());
                    true
                }
            });
        }
        (pending.len(), last)
    }
}
