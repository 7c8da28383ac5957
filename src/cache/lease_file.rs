//! The disk cache's lease files: `<token> <expiry unix ms>`, created with O_EXCL so that of
//! several processes exactly one creates it, read back tolerantly (a file being written counts
//! as live for a short grace period), and the small path helpers the protocol needs.
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A lease file that cannot be parsed (being written right now) counts as live this long.
pub(super) const UNPARSED_LEASE_GRACE: Duration = Duration::from_secs(10);

/// What a lease file says.
pub(super) struct LeaseFile {
    pub(super) token: Option<String>,
    pub(super) expiry_ms: Option<u64>,
    mtime: Option<SystemTime>,
}

impl LeaseFile {
    /// How long until a live lease lapses; `None` if it is not live.
    pub(super) fn left(&self, now: u64) -> Option<std::time::Duration> {
        if !self.alive(now) {
            return None;
        }
        Some(match self.expiry_ms {
            Some(e) => std::time::Duration::from_millis(e - now),
            None => UNPARSED_LEASE_GRACE,
        })
    }

    pub(super) fn alive(&self, now: u64) -> bool {
        match self.expiry_ms {
            Some(e) => e > now,
            // Created but not written yet (or damaged): live for a short grace period.
            None => self
                .mtime
                .and_then(|m| m.elapsed().ok())
                .is_none_or(|age| age < UNPARSED_LEASE_GRACE),
        }
    }
}

pub(super) fn read_lease(path: &Path) -> io::Result<LeaseFile> {
    let mut f = File::open(path)?;
    let mtime = f.metadata().and_then(|m| m.modified()).ok();
    let mut s = String::new();
    // A lease is a few dozen bytes; anything unreadable as text counts as unparsed.
    let _ = Read::by_ref(&mut f).take(256).read_to_string(&mut s);
    let mut parts = s.split_whitespace();
    let token = parts.next().map(str::to_owned);
    let expiry_ms = parts.next().and_then(|e| e.parse().ok());
    Ok(LeaseFile {
        token: expiry_ms.and(token),
        expiry_ms,
        mtime,
    })
}

pub(super) fn create_lease(path: &Path, token: &str, expiry_ms: u64) -> io::Result<()> {
    let mut f = File::options().write(true).create_new(true).open(path)?;
    if let Err(e) = f.write_all(format!("{token} {expiry_ms}\n").as_bytes()) {
        drop(f);
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

/// Move `aside` back to `path` unless something new is at `path` already.
pub(super) fn put_back(aside: &Path, path: &Path) {
    let _ = fs::hard_link(aside, path);
    let _ = fs::remove_file(aside);
}

/// `path` with `suffix` appended to its file name.
pub(super) fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}
