//! Small helpers shared by the backends: lease tokens, hex, clocks, poisoned-mutex recovery.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// A fresh random-enough token (32 hex chars): unique across processes and threads, which is
/// all a lease token needs (it proves ownership, it is not a secret).
pub(crate) fn new_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let local = 0u8;
    let mut h = Sha256::new();
    h.update(std::process::id().to_le_bytes());
    h.update(now.to_le_bytes());
    h.update(n.to_le_bytes());
    h.update(format!("{:?}", std::thread::current().id()).as_bytes());
    h.update((&local as *const u8 as usize).to_le_bytes());
    hex(&h.finalize()[..16])
}

pub(crate) use crate::hash::hex;

/// Milliseconds since the Unix epoch (wall clock: lease expiries are shared between processes).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// A TTL in whole milliseconds, at least 1 (Redis rejects `PX 0`).
pub(crate) fn ttl_ms(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

/// Lock a mutex, recovering the data from a poisoned one (a panic elsewhere must not take the
/// cache down with it).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }
}
