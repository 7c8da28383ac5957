//! `disk[:PATH]`: one file per key under a directory (by default [`default_dir`]), safe for
//! several processes at once.
//!
//! Layout: `<root>/<aa>/<tag>-<h>` where `h` is the SHA-256 (hex) of the key string, `aa` its
//! first two hex digits, and `tag` the first 8 hex digits of the SHA-256 of the key prefix
//! (so `stats` and `clear` can tell this prefix's files from another's without reading them).
//! Leases are `<file>.lease`. Writes go to `<root>/<aa>/.tmp-*` and are renamed into place, so
//! a reader sees a whole old value or a whole new one, never a partial one.
//!
//! Size bound: the total size of all value files in the directory (every prefix) is scanned on
//! open and tracked in memory; puts from other processes are picked up by a rescan every 256
//! puts or 5 minutes, and whenever the tracked total goes over the bound. Over the bound, the
//! least recently used files (mtime: set on write, bumped on every hit) are evicted until the
//! total is at most 90% of the bound.
//!
//! TTL: ignored. Disk entries expire only by eviction (values are keyed by content and model,
//! so they never go stale).
//!
//! Leases: `<file>.lease` holds `<token> <expiry unix ms>`, created with `create_new`
//! (O_EXCL), so of several processes exactly one creates it. A lease whose expiry has passed is
//! taken over: takeovers of one lease are serialised by `<file>.lease.takeover` (also O_EXCL;
//! the others answer `HeldElsewhere` and look again later); the process holding it renames the
//! expired lease to a unique name, checks that what it moved is still the expired lease (else
//! puts it back), and creates its own with `create_new` again. `release` is compare-and-delete:
//! rename aside, check the token, delete (or put back a lease that is not ours).
//! The file format and its helpers are in `lease_file.rs`.
//!
//! A holder renews its lease (`renew`: token checked, then a new expiry written beside the
//! lease and renamed over it) every third of its TTL. Lease files of holders that died, and
//! expired more than a minute ago, are removed by the scan on open.
//!
//! Known limit: a holder that overruns its TTL and releases at the very moment another process
//! takes its lease over can cost that process its fresh lease (two processes then infer the
//! same image once: wasted work, never a wrong result).
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use super::backend::{
    Cache, CacheError, CacheErrorKind, CacheStats, Lease, LeaseOutcome, Lookup, Miss,
};
use super::key::CacheKey;
use super::lease_file::{create_lease, put_back, read_lease, suffixed, UNPARSED_LEASE_GRACE};
use super::options::CacheOptions;
use super::util::{hex, lock, new_token, now_ms, ttl_ms};

/// Rescan the directory after this many puts (other processes write too).
const RESCAN_PUTS: u32 = 256;
/// ... or after this long.
const RESCAN_AFTER: Duration = Duration::from_secs(300);
/// Temporary files older than this are debris from a crashed writer and are removed on scan.
const STALE_TMP: Duration = Duration::from_secs(3600);
/// A lease file this long past its expiry belongs to a holder that died: removed on scan.
const DEAD_LEASE_AFTER_MS: u64 = 60_000;

/// `$XDG_CACHE_HOME/ddcolor` (when set and absolute), else `$HOME/.cache/ddcolor`.
pub fn default_dir() -> Result<PathBuf, CacheError> {
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME") {
        let xdg = PathBuf::from(xdg);
        if xdg.is_absolute() {
            return Ok(xdg.join("ddcolor"));
        }
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".cache").join("ddcolor")),
        None => Err(CacheError {
            backend: "disk".to_owned(),
            kind: CacheErrorKind::Config,
            message: "neither XDG_CACHE_HOME nor HOME is set: give a directory with \
                      `--cache disk:PATH`"
                .to_owned(),
        }),
    }
}

/// A directory cache (see the module docs).
pub struct DiskCache {
    root: PathBuf,
    /// First 8 hex digits of SHA-256 of the key prefix.
    tag: String,
    max_size: Option<u64>,
    state: Mutex<SizeState>,
}

struct SizeState {
    /// Bytes of all value files in the directory, as far as we know.
    total: u64,
    scanned_at: Instant,
    puts_since_scan: u32,
}

/// One value file found by a scan.
struct Entry {
    path: PathBuf,
    size: u64,
    mtime: SystemTime,
    ours: bool,
}

#[derive(Default)]
struct Scan {
    values: Vec<Entry>,
    /// Lease files (and leftovers of takeovers) of our prefix.
    our_leases: Vec<PathBuf>,
}

impl Scan {
    fn total(&self) -> u64 {
        self.values.iter().map(|e| e.size).sum()
    }
}

fn is_hex2(name: &str) -> bool {
    name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

impl DiskCache {
    /// Open (creating it if needed) a cache directory, and scan it for its size.
    pub fn open(root: impl Into<PathBuf>, opts: &CacheOptions) -> Result<Self, CacheError> {
        let root = root.into();
        if let Err(e) = fs::create_dir_all(&root) {
            if !root.is_dir() {
                return Err(CacheError {
                    backend: "disk".to_owned(),
                    kind: CacheErrorKind::Io,
                    message: format!("cannot create {}: {e}", crate::text::shown(&root)),
                });
            }
        }
        let meta = fs::metadata(&root).map_err(|e| CacheError {
            backend: "disk".to_owned(),
            kind: CacheErrorKind::Io,
            message: format!("{}: {e}", crate::text::shown(&root)),
        })?;
        if !meta.is_dir() {
            return Err(CacheError {
                backend: "disk".to_owned(),
                kind: CacheErrorKind::Config,
                message: format!("{} is not a directory", crate::text::shown(&root)),
            });
        }
        let tag = hex(&Sha256::digest(CacheKey::scan_prefix(&opts.prefix).as_bytes())[..4]);
        let cache = Self {
            root,
            tag,
            max_size: opts.max_size,
            state: Mutex::new(SizeState {
                total: 0,
                scanned_at: Instant::now(),
                puts_since_scan: 0,
            }),
        };
        let scan = cache.scan().map_err(|e| cache.err("scan", e))?;
        lock(&cache.state).total = scan.total();
        Ok(cache)
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> CacheError {
        CacheError {
            backend: "disk".to_owned(),
            kind: CacheErrorKind::Io,
            message: format!("{what} in {}: {e}", crate::text::shown(&self.root)),
        }
    }

    /// (shard directory, value file) for a key.
    fn paths(&self, key: &CacheKey) -> (PathBuf, PathBuf) {
        let h = crate::hash::sha256_hex(key.as_str().as_bytes());
        let dir = self.root.join(&h[..2]);
        let file = dir.join(format!("{}-{h}", self.tag));
        (dir, file)
    }

    fn lease_path(&self, key: &CacheKey) -> PathBuf {
        suffixed(&self.paths(key).1, ".lease")
    }

    /// Walk the shard directories: every value file (any prefix) and our lease files. Removes
    /// temporary files left behind by crashed writers.
    fn scan(&self) -> io::Result<Scan> {
        let mut scan = Scan::default();
        let our_prefix = format!("{}-", self.tag);
        for shard in fs::read_dir(&self.root)? {
            let Ok(shard) = shard else { continue };
            let name = shard.file_name();
            let Some(name) = name.to_str() else { continue };
            if !is_hex2(name) || !shard.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Ok(files) = fs::read_dir(shard.path()) else {
                continue;
            };
            for f in files {
                let Ok(f) = f else { continue };
                let fname = f.file_name();
                let Some(fname) = fname.to_str() else {
                    continue;
                };
                // Gone meanwhile (evicted or renamed by another process): skip.
                let Ok(meta) = f.metadata() else { continue };
                if !meta.is_file() {
                    continue;
                }
                if fname.starts_with('.') {
                    let old = meta
                        .modified()
                        .ok()
                        .and_then(|m| m.elapsed().ok())
                        .is_some_and(|age| age > STALE_TMP);
                    if old {
                        let _ = fs::remove_file(f.path());
                    }
                    continue;
                }
                let ours = fname.starts_with(&our_prefix);
                if fname.ends_with(".lease") {
                    // a lease whose holder died and that nobody took over since: litter
                    let dead = read_lease(&f.path())
                        .ok()
                        .and_then(|l| l.expiry_ms)
                        .is_some_and(|e| e.saturating_add(DEAD_LEASE_AFTER_MS) < now_ms());
                    if dead {
                        let _ = fs::remove_file(f.path());
                        continue;
                    }
                }
                if fname.contains(".lease") {
                    if ours {
                        scan.our_leases.push(f.path());
                    }
                    continue;
                }
                if fname.contains('.') {
                    continue;
                }
                scan.values.push(Entry {
                    path: f.path(),
                    size: meta.len(),
                    mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    ours,
                });
            }
        }
        Ok(scan)
    }

    /// After a put of `written` bytes replacing `replaced`: keep the running total and evict
    /// the least recently used files when over the bound.
    fn account(&self, written: u64, replaced: u64, keep: &Path) {
        let Some(max) = self.max_size else { return };
        let mut st = lock(&self.state);
        st.total = st.total.saturating_add(written).saturating_sub(replaced);
        st.puts_since_scan += 1;
        let due = st.puts_since_scan >= RESCAN_PUTS || st.scanned_at.elapsed() >= RESCAN_AFTER;
        if st.total <= max && !due {
            return;
        }
        let Ok(scan) = self.scan() else { return };
        st.scanned_at = Instant::now();
        st.puts_since_scan = 0;
        st.total = scan.total();
        if st.total <= max {
            return;
        }
        let low = max - max / 10;
        let mut values = scan.values;
        values.sort_by(|a, b| a.mtime.cmp(&b.mtime).then_with(|| a.path.cmp(&b.path)));
        for e in values {
            if st.total <= low {
                break;
            }
            if e.path == keep {
                continue;
            }
            match fs::remove_file(&e.path) {
                Ok(()) => st.total = st.total.saturating_sub(e.size),
                // Evicted by another process already.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    st.total = st.total.saturating_sub(e.size)
                }
                Err(_) => {}
            }
        }
    }

    /// With the takeover lock held: replace an expired lease by ours. `Some(true)`: acquired,
    /// `Some(false)`: a live lease is there, `None`: no lease any more.
    fn take_over(&self, path: &Path, token: &str, ttl: Duration) -> io::Result<Option<bool>> {
        match read_lease(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
            Ok(l) if l.alive(now_ms()) => return Ok(Some(false)),
            Ok(_) => {}
        }
        // Move the expired lease aside under a name only we use (of two renames of one file,
        // one succeeds), check that what moved is still the expired one (else put it back),
        // then create ours with O_EXCL: a process that saw no lease in between and created
        // one wins, and we report it held.
        let aside = suffixed(path, &format!(".stale-{token}"));
        match fs::rename(path, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        match read_lease(&aside) {
            Ok(l) if l.alive(now_ms()) => {
                put_back(&aside, path);
                return Ok(Some(false));
            }
            _ => {
                let _ = fs::remove_file(&aside);
            }
        }
        let expiry = now_ms().saturating_add(ttl_ms(ttl));
        match create_lease(path, token, expiry) {
            Ok(()) => Ok(Some(true)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Some(false)),
            Err(e) => Err(e),
        }
    }

    fn get_one(&self, key: &CacheKey) -> Lookup {
        let (_, file) = self.paths(key);
        match fs::read(&file) {
            Ok(bytes) => {
                // The LRU clock. A read-only cache cannot be touched: fine, still a hit.
                if let Ok(f) = File::options().append(true).open(&file) {
                    let _ = f.set_modified(SystemTime::now());
                }
                Lookup::Hit(bytes)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Lookup::Miss(Miss::Absent),
            Err(e) => Lookup::Miss(Miss::Error(format!("{}: {e}", crate::text::shown(&file)))),
        }
    }
}

impl Cache for DiskCache {
    fn describe(&self) -> String {
        format!("disk:{}", crate::text::shown(&self.root))
    }

    fn get_many(&self, keys: &[CacheKey]) -> Vec<Lookup> {
        keys.iter().map(|k| self.get_one(k)).collect()
    }

    /// `ttl` is ignored: disk entries leave only by LRU eviction or `clear`.
    fn put(&self, key: &CacheKey, value: &[u8], _ttl: Option<Duration>) -> Result<(), CacheError> {
        let (dir, file) = self.paths(key);
        fs::create_dir_all(&dir).map_err(|e| self.err("put", e))?;
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("value");
        let tmp = dir.join(format!(".tmp-{name}-{}", new_token()));
        let write = || -> io::Result<()> {
            let mut f = File::options().write(true).create_new(true).open(&tmp)?;
            f.write_all(value)?;
            f.flush()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(self.err("put", e));
        }
        let replaced = fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        if let Err(e) = fs::rename(&tmp, &file) {
            let _ = fs::remove_file(&tmp);
            return Err(self.err("put", e));
        }
        self.account(value.len() as u64, replaced, &file);
        Ok(())
    }

    fn try_lease(&self, key: &CacheKey, ttl: Duration) -> Result<LeaseOutcome, CacheError> {
        let (dir, _) = self.paths(key);
        fs::create_dir_all(&dir).map_err(|e| self.err("lease", e))?;
        let path = self.lease_path(key);
        let token = new_token();
        let acquired = || {
            LeaseOutcome::Acquired(Lease {
                key: key.clone(),
                token: token.clone(),
            })
        };
        for _ in 0..3 {
            let expiry = now_ms().saturating_add(ttl_ms(ttl));
            match create_lease(&path, &token, expiry) {
                Ok(()) => return Ok(acquired()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(self.err("lease", e)),
            }
            match read_lease(&path) {
                // Released meanwhile: try to create it again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.err("lease", e)),
                Ok(l) if l.alive(now_ms()) => return Ok(LeaseOutcome::HeldElsewhere),
                Ok(_) => {}
            }
            // Expired. Takeovers of one lease are serialised by `<lease>.takeover` (O_EXCL):
            // when a holder dies, every waiter notices at once, and only one may replace it.
            let lock_path = suffixed(&path, ".takeover");
            match File::options()
                .write(true)
                .create_new(true)
                .open(&lock_path)
            {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // Someone else is taking over. A takeover lock left by a crash is cleared
                    // once old; either way, try again later.
                    let old = fs::metadata(&lock_path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|m| m.elapsed().ok())
                        .is_some_and(|age| age > UNPARSED_LEASE_GRACE);
                    if old {
                        let _ = fs::remove_file(&lock_path);
                    }
                    return Ok(LeaseOutcome::HeldElsewhere);
                }
                Err(e) => return Err(self.err("lease", e)),
            }
            let outcome = self.take_over(&path, &token, ttl);
            let _ = fs::remove_file(&lock_path);
            match outcome {
                Ok(Some(true)) => return Ok(acquired()),
                Ok(Some(false)) => return Ok(LeaseOutcome::HeldElsewhere),
                // The expired lease vanished (released): start over.
                Ok(None) => continue,
                Err(e) => return Err(self.err("lease", e)),
            }
        }
        Ok(LeaseOutcome::HeldElsewhere)
    }

    fn release(&self, lease: &Lease) -> Result<(), CacheError> {
        let path = self.lease_path(&lease.key);
        match read_lease(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.err("release", e)),
            Ok(l) if l.token.as_deref() != Some(lease.token.as_str()) => return Ok(()),
            Ok(_) => {}
        }
        // Compare-and-delete: move it aside, check it is still ours, then delete (or put back
        // a lease that replaced ours between the read and the rename).
        let aside = suffixed(&path, &format!(".released-{}", new_token()));
        match fs::rename(&path, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.err("release", e)),
        }
        match read_lease(&aside) {
            Ok(l) if l.token.as_deref() != Some(lease.token.as_str()) => put_back(&aside, &path),
            _ => {
                let _ = fs::remove_file(&aside);
            }
        }
        Ok(())
    }

    fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, CacheError> {
        let path = self.lease_path(&lease.key);
        match read_lease(&path) {
            Ok(l) if l.token.as_deref() == Some(lease.token.as_str()) => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.err("renew", e)),
        }
        // written beside it and renamed over it: a reader sees the old or the new expiry
        let tmp = suffixed(&path, &format!(".renew-{}", lease.token));
        let expiry = now_ms().saturating_add(ttl_ms(ttl));
        let written = fs::write(&tmp, format!("{} {expiry}\n", lease.token))
            .and_then(|()| fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(self.err("renew", e));
        }
        Ok(true)
    }

    fn lease_left(&self, key: &CacheKey) -> Result<Option<Duration>, CacheError> {
        match read_lease(&self.lease_path(key)) {
            Ok(l) => Ok(l.left(now_ms())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("lease", e)),
        }
    }

    fn stats(&self) -> Result<CacheStats, CacheError> {
        let scan = self.scan().map_err(|e| self.err("stats", e))?;
        let total = scan.total();
        let (entries, bytes) = scan
            .values
            .iter()
            .filter(|e| e.ours)
            .fold((0u64, 0u64), |(n, b), e| (n + 1, b + e.size));
        let now = now_ms();
        let live_leases = scan
            .our_leases
            .iter()
            .filter(|p| p.to_str().is_some_and(|s| s.ends_with(".lease")))
            .filter(|p| read_lease(p).is_ok_and(|l| l.alive(now)))
            .count();
        {
            let mut st = lock(&self.state);
            st.total = total;
            st.scanned_at = Instant::now();
            st.puts_since_scan = 0;
        }
        let mut details = vec![
            (
                "path".to_owned(),
                crate::text::shown(&self.root).to_string(),
            ),
            (
                "directory bytes (all prefixes)".to_owned(),
                total.to_string(),
            ),
            (
                "max size".to_owned(),
                self.max_size.map_or_else(
                    || "unbounded".to_owned(),
                    |m| format!("{m} bytes ({:.1} GiB)", m as f64 / (1u64 << 30) as f64),
                ),
            ),
            ("live leases".to_owned(), live_leases.to_string()),
        ];
        details.push((
            "ttl".to_owned(),
            "none: results are evicted by size (least recently used), --cache-ttl is for Redis"
                .to_owned(),
        ));
        Ok(CacheStats {
            entries,
            bytes: Some(bytes),
            details,
        })
    }

    fn clear(&self) -> Result<u64, CacheError> {
        let scan = self.scan().map_err(|e| self.err("clear", e))?;
        let mut removed = 0u64;
        for path in scan
            .values
            .iter()
            .filter(|e| e.ours)
            .map(|e| &e.path)
            .chain(scan.our_leases.iter())
        {
            match fs::remove_file(path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.err("clear", e)),
            }
        }
        let total = self.scan().map(|s| s.total()).unwrap_or(0);
        let mut st = lock(&self.state);
        st.total = total;
        st.scanned_at = Instant::now();
        st.puts_since_scan = 0;
        Ok(removed)
    }

    fn check_writable(&self) -> Result<(), CacheError> {
        let probe = self.root.join(format!(".probe-{}", new_token()));
        let payload = b"ddcolor cache probe";
        let result = (|| -> io::Result<()> {
            let mut f = File::options().write(true).create_new(true).open(&probe)?;
            f.write_all(payload)?;
            drop(f);
            if fs::read(&probe)? != payload {
                return Err(io::Error::other("probe read back different bytes"));
            }
            Ok(())
        })();
        let _ = fs::remove_file(&probe);
        result.map_err(|e| self.err("not writable", e))
    }
}
