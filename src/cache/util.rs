//! Small helpers shared by the backends: lease tokens, clocks, poisoned-mutex recovery, glob
//! escaping, and scrubbing secrets out of messages.
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

/// Lowercase hex of some bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

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

/// Escape Redis glob metacharacters so that `s` matches literally in `SCAN MATCH`.
pub(crate) fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Percent-decode a URL component (invalid escapes are kept as they are).
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hexval = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hexval(b[i + 1]), hexval(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Words that must never appear in a message (a password, raw and percent-decoded).
#[derive(Debug, Clone, Default)]
pub(crate) struct Secrets(Vec<String>);

impl Secrets {
    pub(crate) fn add(&mut self, secret: &str) {
        if !secret.is_empty() && !self.0.iter().any(|s| s == secret) {
            self.0.push(secret.to_owned());
            // Longest first, so that a secret containing another is replaced whole.
            self.0.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    pub(crate) fn words(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// Replace every secret in `msg` with `***` and redact any URL userinfo in it.
    pub(crate) fn scrub(&self, msg: &str) -> String {
        let mut out = super::spec::redact_urls_in(msg);
        for s in &self.0 {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
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

    #[test]
    fn percent() {
        assert_eq!(percent_decode("p%40ss%2"), "p@ss%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }

    #[test]
    fn scrub_secrets() {
        let mut s = Secrets::default();
        s.add("hunter2");
        assert_eq!(s.scrub("auth hunter2 failed"), "auth *** failed");
    }
}
