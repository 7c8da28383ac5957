//! Small helpers shared by the backends: lease tokens, hex, clocks, poisoned-mutex recovery.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// A fresh token (32 hex chars, 128 random bits from the OS): what a lease holder proves
/// ownership with. Should the random source fail (it does not on supported systems), a digest
/// of the process, the clock and a counter still keeps tokens unique.
pub(crate) fn new_token() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let mut h = Sha256::new();
        h.update(std::process::id().to_le_bytes());
        h.update(now.to_le_bytes());
        h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        b.copy_from_slice(&h.finalize()[..16]);
    }
    hex(&b)
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

pub(crate) use crate::sync::lock;

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
