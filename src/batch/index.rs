//! The index of what was already hashed on this machine, so that a rerun over an unchanged
//! archive does not read it again when it only needs the hashes (a dry run, images another
//! process is inferring, duplicates), and so that the model's identity (a digest over every
//! weight) is known without loading the weights:
//! - files: `(resolved path, device, inode, size, mtime, ctime) -> SHA-256`;
//! - models: `(resolved weights path, its stat, the settings) -> identity, output channels`.
//!
//! An entry is trusted only while the file's stat is unchanged *and* the file was already
//! older than [`RACY_WINDOW`] when it was hashed (git's "racily clean" rule): a same-size
//! rewrite within the timestamp granularity of the file system, right after the hash was
//! taken, cannot pass for the old content. The index lives in one SQLite file beside the disk
//! cache; concurrent runs share it (SQLite's locking, a busy timeout). It is a speed-up, never
//! a failure: any error disables it for the run with one warning.
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

/// Whether SQLite says the file is not a database or is corrupt (as opposed to busy, full,
/// or unwritable, which a later run may not meet).
fn is_damaged(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

/// Move a damaged index (and its `-wal`, `-shm` files) aside, to `<name>.damaged-<seconds>`;
/// the new name, or `None` if it could not be moved.
fn move_aside(path: &Path) -> Option<PathBuf> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = path.file_name()?.to_string_lossy().into_owned();
    let aside = path.with_file_name(format!("{name}.damaged-{secs}"));
    std::fs::rename(path, &aside).ok()?;
    for side in ["-wal", "-shm"] {
        let from = path.with_file_name(format!("{name}{side}"));
        let _ = std::fs::rename(
            &from,
            path.with_file_name(format!("{name}.damaged-{secs}{side}")),
        );
    }
    Some(aside)
}

/// A file modified this close to the moment it was hashed is not trusted by later runs.
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// Pending file entries are written in one transaction when this many have gathered.
const FLUSH_EVERY: usize = 256;

/// What identifies a file's content on this machine without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl Stat {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Self {
                dev: meta.dev(),
                ino: meta.ino(),
                size: meta.size(),
                mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
                ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            }
        }
        #[cfg(not(unix))]
        {
            let ns = |t: std::io::Result<SystemTime>| {
                t.ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos() as i64)
            };
            Self {
                dev: 0,
                ino: 0,
                size: meta.len(),
                mtime_ns: ns(meta.modified()),
                ctime_ns: ns(meta.created()),
            }
        }
    }

    /// Whether an entry recorded at `recorded_ns` for a file with this stat can be trusted:
    /// the file had not been touched for [`RACY_WINDOW`] when it was hashed.
    fn settled_at(&self, recorded_ns: i64) -> bool {
        let newest = self.mtime_ns.max(self.ctime_ns);
        newest.saturating_add(RACY_WINDOW.as_nanos() as i64) < recorded_ns
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The stat in columns 0-4 of a row (dev, ino, size, mtime_ns, ctime_ns).
fn stat_of_row(r: &rusqlite::Row) -> rusqlite::Result<Stat> {
    Ok(Stat {
        dev: r.get::<_, i64>(0)? as u64,
        ino: r.get::<_, i64>(1)? as u64,
        size: r.get::<_, i64>(2)? as u64,
        mtime_ns: r.get(3)?,
        ctime_ns: r.get(4)?,
    })
}

fn path_key(p: &Path) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        p.as_os_str().as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        p.to_string_lossy().as_bytes().to_vec()
    }
}

struct Pending {
    path: Vec<u8>,
    stat: Stat,
    sha256: [u8; 32],
    recorded_ns: i64,
}

struct Inner {
    conn: Connection,
    pending: Vec<Pending>,
}

/// The index of one run (see the module documentation).
pub struct Index {
    path: PathBuf,
    inner: Mutex<Option<Inner>>,
    /// Set once the index failed: the warning to print (taken by [`Index::take_warning`]).
    warning: Mutex<Option<String>>,
}

impl Index {
    /// The index file inside `dir` (created if needed).
    pub fn file_in(dir: &Path) -> PathBuf {
        dir.join("index.sqlite3")
    }

    /// Open (or create) the index at `path`. Never fails: an index that cannot be opened is
    /// disabled, with a warning to show.
    pub fn open(path: &Path) -> Self {
        let mut moved = None;
        let mut opened = Self::connect(path);
        if let Err((_, true)) = &opened {
            // a damaged file (not a database, or corrupt): moved aside once, a new one started
            moved = move_aside(path);
            if moved.is_some() {
                opened = Self::connect(path);
            }
        }
        let opened = opened.map_err(|(e, _)| e);
        let index = Self::with_connection(path, opened);
        if let Some(aside) = moved {
            let mut w = crate::sync::lock(&index.warning);
            if w.is_none() {
                *w = Some(format!(
                    "the hash index {} was damaged: moved aside to {} and a new one started \
                     (files are hashed again once)",
                    crate::text::shown(path),
                    crate::text::shown(&aside)
                ));
            }
        }
        index
    }

    /// Open the SQLite file and its tables; `Err((why, damaged))`.
    fn connect(path: &Path) -> Result<Connection, (String, bool)> {
        let plain = |e: String| (e, false);
        let sql = |e: rusqlite::Error| {
            let damaged = is_damaged(&e);
            (e.to_string(), damaged)
        };
        (|| -> Result<Connection, (String, bool)> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| plain(e.to_string()))?;
            }
            let conn = Connection::open(path).map_err(sql)?;
            conn.busy_timeout(Duration::from_secs(10)).map_err(sql)?;
            // WAL lets readers and one writer of several runs work at once; on file systems
            // without shared memory (NFS) SQLite keeps its rollback journal, which also works.
            let _ = conn.pragma_update(None, "journal_mode", "WAL");
            let _ = conn.pragma_update(None, "synchronous", "NORMAL");
            // lookups are one row each, in walk order: a small page cache is enough, and keeps
            // memory flat however large the archive
            let _ = conn.pragma_update(None, "cache_size", -256);
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS files (
                     path BLOB PRIMARY KEY, dev INTEGER, ino INTEGER, size INTEGER,
                     mtime_ns INTEGER, ctime_ns INTEGER, sha256 BLOB, recorded_ns INTEGER
                 ) WITHOUT ROWID;
                 CREATE TABLE IF NOT EXISTS models (
                     path BLOB, settings TEXT, dev INTEGER, ino INTEGER, size INTEGER,
                     mtime_ns INTEGER, ctime_ns INTEGER, identity TEXT, channels INTEGER,
                     recorded_ns INTEGER, PRIMARY KEY (path, settings)
                 ) WITHOUT ROWID;",
            )
            .map_err(sql)?;
            Ok(conn)
        })()
    }

    fn with_connection(path: &Path, opened: Result<Connection, String>) -> Self {
        let (inner, warning) = match opened {
            Ok(conn) => (
                Some(Inner {
                    conn,
                    pending: Vec::new(),
                }),
                None,
            ),
            Err(e) => (
                None,
                Some(format!(
                    "cannot open the hash index {} ({e}); every file is read and hashed",
                    crate::text::shown(path)
                )),
            ),
        };
        Self {
            path: path.to_owned(),
            inner: Mutex::new(inner),
            warning: Mutex::new(warning),
        }
    }

    /// An index that remembers nothing.
    pub fn disabled() -> Self {
        Self {
            path: PathBuf::new(),
            inner: Mutex::new(None),
            warning: Mutex::new(None),
        }
    }

    /// Whether entries are looked up and recorded (an index that could not be opened, or that
    /// failed, is not).
    pub fn is_enabled(&self) -> bool {
        crate::sync::lock(&self.inner).is_some()
    }

    /// The warning of a failed index, once.
    pub fn take_warning(&self) -> Option<String> {
        crate::sync::lock(&self.warning).take()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> rusqlite::Result<T>) -> Option<T> {
        let mut guard = crate::sync::lock(&self.inner);
        let inner = guard.as_mut()?;
        match f(inner) {
            Ok(v) => Some(v),
            Err(e) => {
                *guard = None;
                let aside = is_damaged(&e).then(|| move_aside(&self.path)).flatten();
                *crate::sync::lock(&self.warning) = Some(match aside {
                    Some(a) => format!(
                        "the hash index {} is damaged ({e}): moved aside to {}; the next run \
                         starts a new one",
                        crate::text::shown(&self.path),
                        crate::text::shown(&a)
                    ),
                    None => format!(
                        "the hash index {} failed ({e}); it is not used for the rest of this run",
                        crate::text::shown(&self.path)
                    ),
                });
                None
            }
        }
    }

    /// The SHA-256 recorded for the file at `path` (resolved) with this stat, if it can be
    /// trusted.
    pub fn lookup(&self, path: &Path, stat: &Stat) -> Option<[u8; 32]> {
        let key = path_key(path);
        let row = self
            .with(|inner| {
                inner
                    .conn
                    .query_row(
                        "SELECT dev, ino, size, mtime_ns, ctime_ns, sha256, recorded_ns
                         FROM files WHERE path = ?1",
                        params![key],
                        |r| {
                            Ok((
                                stat_of_row(r)?,
                                r.get::<_, Vec<u8>>(5)?,
                                r.get::<_, i64>(6)?,
                            ))
                        },
                    )
                    .optional()
            })
            .flatten()?;
        let (recorded, sha, recorded_ns) = row;
        if recorded != *stat || !stat.settled_at(recorded_ns) {
            return None;
        }
        sha.try_into().ok()
    }

    /// Remember that the file at `path` (resolved), with `stat` both before and after it was
    /// read, hashes to `sha256`. Written in batches; [`Index::flush`] writes the rest.
    pub fn record(&self, path: &Path, stat: &Stat, sha256: [u8; 32]) {
        let full = {
            let mut guard = crate::sync::lock(&self.inner);
            let Some(inner) = guard.as_mut() else {
                return;
            };
            inner.pending.push(Pending {
                path: path_key(path),
                stat: *stat,
                sha256,
                recorded_ns: now_ns(),
            });
            inner.pending.len() >= FLUSH_EVERY
        };
        if full {
            self.flush();
        }
    }

    /// Write the pending entries.
    pub fn flush(&self) {
        self.with(|inner| {
            if inner.pending.is_empty() {
                return Ok(());
            }
            let pending = std::mem::take(&mut inner.pending);
            let tx = inner.conn.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT OR REPLACE INTO files
                     (path, dev, ino, size, mtime_ns, ctime_ns, sha256, recorded_ns)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                for p in &pending {
                    st.execute(params![
                        p.path,
                        p.stat.dev as i64,
                        p.stat.ino as i64,
                        p.stat.size as i64,
                        p.stat.mtime_ns,
                        p.stat.ctime_ns,
                        &p.sha256[..],
                        p.recorded_ns
                    ])?;
                }
            }
            tx.commit()
        });
    }

    /// The identity and output channels recorded for the weights at `path` (resolved) with
    /// this stat and `settings` (what else the identity depends on: dtype, head count, ...).
    pub fn model_identity(
        &self,
        path: &Path,
        stat: &Stat,
        settings: &str,
    ) -> Option<(String, usize)> {
        let key = path_key(path);
        let (recorded, identity, channels, recorded_ns) = self
            .with(|inner| {
                inner
                    .conn
                    .query_row(
                        "SELECT dev, ino, size, mtime_ns, ctime_ns, identity, channels,
                                recorded_ns
                         FROM models WHERE path = ?1 AND settings = ?2",
                        params![key, settings],
                        |r| {
                            Ok((
                                stat_of_row(r)?,
                                r.get::<_, String>(5)?,
                                r.get::<_, i64>(6)?,
                                r.get::<_, i64>(7)?,
                            ))
                        },
                    )
                    .optional()
            })
            .flatten()?;
        (recorded == *stat && stat.settled_at(recorded_ns)).then_some((identity, channels as usize))
    }

    /// Remember a model's identity (see [`Index::model_identity`]).
    pub fn record_model(
        &self,
        path: &Path,
        stat: &Stat,
        settings: &str,
        identity: &str,
        channels: usize,
    ) {
        let key = path_key(path);
        self.with(|inner| {
            inner
                .conn
                .execute(
                    "INSERT OR REPLACE INTO models
                     (path, settings, dev, ino, size, mtime_ns, ctime_ns, identity, channels,
                      recorded_ns)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![
                        key,
                        settings,
                        stat.dev as i64,
                        stat.ino as i64,
                        stat.size as i64,
                        stat.mtime_ns,
                        stat.ctime_ns,
                        identity,
                        channels as i64,
                        now_ns()
                    ],
                )
                .map(|_| ())
        });
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_trusted_only_for_the_same_stat_and_an_old_enough_file() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(&Index::file_in(dir.path()));
        assert!(idx.take_warning().is_none());
        let old = Stat {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns: now_ns() - 10_000_000_000,
            ctime_ns: now_ns() - 10_000_000_000,
        };
        let p = Path::new("/archive/a.tif");
        idx.record(p, &old, [7; 32]);
        idx.flush();
        assert_eq!(idx.lookup(p, &old), Some([7; 32]));
        // another size, inode or time: not trusted
        for changed in [
            Stat { size: 4, ..old },
            Stat { ino: 9, ..old },
            Stat {
                mtime_ns: old.mtime_ns + 1,
                ..old
            },
            Stat {
                ctime_ns: old.ctime_ns + 1,
                ..old
            },
        ] {
            assert_eq!(idx.lookup(p, &changed), None, "{changed:?}");
        }
        // a file modified just before it was hashed is racy: never trusted
        let fresh = Stat {
            mtime_ns: now_ns(),
            ..old
        };
        idx.record(p, &fresh, [8; 32]);
        idx.flush();
        assert_eq!(idx.lookup(p, &fresh), None);
        // another process sees what this one wrote
        let again = Index::open(&Index::file_in(dir.path()));
        idx.record(Path::new("/b"), &old, [9; 32]);
        drop(idx);
        assert_eq!(again.lookup(Path::new("/b"), &old), Some([9; 32]));
    }

    #[test]
    fn an_unusable_index_is_disabled_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        // a folder where a file is: cannot be created
        let idx = Index::open(&file.join("sub").join("index.sqlite3"));
        assert!(idx
            .take_warning()
            .unwrap()
            .contains("cannot open the hash index"));
        let s = Stat {
            dev: 0,
            ino: 0,
            size: 0,
            mtime_ns: 0,
            ctime_ns: 0,
        };
        idx.record(Path::new("/a"), &s, [0; 32]);
        assert_eq!(idx.lookup(Path::new("/a"), &s), None);
    }
}
