//! What a backend is: the [`Cache`] trait, and the typed answers it gives ([`Lookup`] with its
//! [`Miss`] reasons, [`Lease`]/[`LeaseOutcome`], [`CacheStats`], [`CacheError`]).
//!
//! The cache is a speed-up, never a failure: a backend error on lookup is a miss (counted as
//! such), a corrupt value is a miss, and a failed store is a warning. The trait says so in its
//! types: `get_many` cannot fail as a whole, and a miss says why.
use std::fmt;
use std::time::Duration;

use super::key::CacheKey;

/// Why a lookup did not produce a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// The key is not there.
    Absent,
    /// A value was there but failed its header or checksum check (it should be recomputed).
    Corrupt,
    /// The backend could not be asked (network, I/O); the message says why.
    Error(String),
}

/// The answer to one lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The raw stored bytes (decode and verify them with [`super::value::decode`]).
    Hit(Vec<u8>),
    Miss(Miss),
}

/// A held lease: proof that this process may infer the image behind `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: CacheKey,
    /// Random token, so only the holder can release it (compare-and-delete).
    pub token: String,
}

/// What `try_lease` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// We hold it now; infer, `put`, then `release`.
    Acquired(Lease),
    /// Another live process holds it; wait for its value to land.
    HeldElsewhere,
}

/// Backend-level failure (unreachable server, I/O error, bad configuration): what kind, for
/// code to branch on, and a message for people.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{backend}: {message}")]
pub struct CacheError {
    pub backend: String,
    pub kind: CacheErrorKind,
    pub message: String,
}

/// What went wrong with a cache, as far as the caller can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheErrorKind {
    /// The spec, URL, certificates or folder given cannot work as they are.
    Config,
    /// The server could not be reached, did not answer in time, or was given up on (the
    /// breaker tripped).
    Unreachable,
    /// The server's ACL refused a command or a key.
    Refused,
    /// The server answered, but not as a cache should (a probe read back other bytes, an
    /// unexpected reply).
    Server,
    /// A file system error of the disk cache.
    Io,
}

impl CacheError {
    pub fn new(backend: &str, kind: CacheErrorKind, message: impl Into<String>) -> Self {
        Self {
            backend: backend.to_owned(),
            kind,
            message: message.into(),
        }
    }
}

/// `ddcolor cache stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Cached values (leases excluded).
    pub entries: u64,
    /// Bytes they take, where the backend can tell.
    pub bytes: Option<u64>,
    /// Backend-specific lines (`maxmemory-policy`, capacity, path, ...).
    pub details: Vec<(String, String)>,
}

/// One cache backend.
pub trait Cache: Send + Sync {
    /// A human description with no secrets in it (`disk:/home/x/.cache/ddcolor`,
    /// `redis://user:***@host:6379/0`).
    fn describe(&self) -> String;

    /// Look up many keys in as few round trips as the backend allows (one MGET or pipeline per
    /// call for Redis). Returns one answer per key, in order. Never fails as a whole: a backend
    /// error becomes `Miss::Error` for the keys it affects.
    fn get_many(&self, keys: &[CacheKey]) -> Vec<Lookup>;

    /// Store a value (already encoded with [`super::value::encode`]); `ttl` None means no expiry.
    fn put(&self, key: &CacheKey, value: &[u8], ttl: Option<Duration>) -> Result<(), CacheError>;

    /// Take the inference lease for `key` for `ttl` (`SET <key>:lease <token> NX PX <ms>` for
    /// Redis, a lock file with an expiry for disk). An expired lease (its holder died) is taken
    /// over.
    fn try_lease(&self, key: &CacheKey, ttl: Duration) -> Result<LeaseOutcome, CacheError>;

    /// Release a lease we hold (compare-and-delete: a lease that expired and was taken over by
    /// another process is left alone).
    fn release(&self, lease: &Lease) -> Result<(), CacheError>;

    /// Release a lease whose release failed before, once more, even if the backend is
    /// [`Cache::down`] (a network backend's breaker is ignored for this call: a failover may be
    /// over by now). For the end of a run, so that other runs do not wait a TTL for images
    /// nobody is inferring.
    fn release_retry(&self, lease: &Lease) -> Result<(), CacheError> {
        self.release(lease)
    }

    /// Extend a lease we hold to `ttl` from now (compare-and-extend): `Ok(false)` if it is no
    /// longer ours (it lapsed, and maybe another process took it). The batch engine renews
    /// every held lease every third of its TTL, so a live holder never loses one.
    fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, CacheError>;

    /// How long until the live lease on `key` lapses if its holder stops renewing it; `None`
    /// if there is none (to notice a holder that died before storing, and to tell a waiting
    /// user for how long at most).
    fn lease_left(&self, key: &CacheKey) -> Result<Option<Duration>, CacheError>;

    /// Whether a live lease exists for `key`.
    fn lease_alive(&self, key: &CacheKey) -> Result<bool, CacheError> {
        self.lease_left(key).map(|left| left.is_some())
    }

    fn stats(&self) -> Result<CacheStats, CacheError>;

    /// Remove every value and lease under this cache's prefix; returns how many keys went.
    fn clear(&self) -> Result<u64, CacheError>;

    /// Write and read back a probe key once: a cache that cannot be written is used read-only.
    fn check_writable(&self) -> Result<(), CacheError>;

    /// Whether values put here can ever be read back (`false` for [`super::none::NoCache`]):
    /// a run with no cache need not encode them.
    fn keeps_values(&self) -> bool {
        true
    }

    /// Whether a run takes inference leases here (`false` for a cache used read-only,
    /// [`super::policy::ReadOnly`]: it stores nothing, so others would wait for nothing).
    fn takes_leases(&self) -> bool {
        true
    }

    /// Whether a cache error stops the run instead of a warning (`--require-cache`,
    /// [`super::policy::Required`]).
    fn required(&self) -> bool {
        false
    }

    /// Why the backend is no longer asked, once it stopped answering mid-run (a network
    /// backend's circuit breaker tripped after calls in a row timed out or lost the
    /// connection); `None` while it works. A backend that is down fails every call at once;
    /// [`super::failover::Failover`] sends them to a fallback cache instead.
    fn down(&self) -> Option<String> {
        None
    }
}

impl fmt::Debug for dyn Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}
