//! Atomic writes: a temporary file beside the destination (`.NAME.PID@HOST.N.ddcolor-tmp`),
//! synced, then renamed into place, so a crash never leaves half a file under the final name;
//! and the sweep of temporary files that killed writers left behind.
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The suffix of every temporary file ddcolor writes (`.NAME.PID@HOST.N.ddcolor-tmp`): the
/// walker never takes them as inputs, and [`sweep_temps`] removes those whose writer is gone.
pub const TEMP_SUFFIX: &str = ".ddcolor-tmp";

/// This machine's name, as temporary file names carry it (`-` where it cannot be read).
fn host_name() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().replace(['/', '.', '@'], "_"))
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "-".into())
    })
}

/// A temporary name beside `dest`, unique to this process and call (swept by [`sweep_temps`]
/// if its writer dies before it is renamed or removed).
pub(crate) fn temp_path(dest: &Path) -> PathBuf {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(
        ".{name}.{}@{}.{n}{TEMP_SUFFIX}",
        std::process::id(),
        host_name()
    ))
}

/// A temporary file this long untouched is stale whoever wrote it (a writer on another
/// machine, whose process we cannot ask about).
pub const TEMP_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Whether process `pid` is alive on this machine.
#[cfg(unix)]
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
pub fn process_alive(_pid: u32) -> bool {
    true
}

/// Whether the temporary file `name` (a file name ending in [`TEMP_SUFFIX`]) was left by a
/// writer that is gone: written on this machine by a process that no longer runs, or
/// untouched for [`TEMP_STALE_AFTER`].
pub fn temp_is_stale(name: &str, age: std::time::Duration) -> bool {
    if !name.ends_with(TEMP_SUFFIX) {
        return false;
    }
    if age >= TEMP_STALE_AFTER {
        return true;
    }
    // `.NAME.PID@HOST.N.ddcolor-tmp` (or `.NAME.PID.N.ddcolor-tmp` from older versions)
    let stem = &name[..name.len() - TEMP_SUFFIX.len()];
    let mut parts = stem.rsplitn(3, '.');
    let (_n, writer) = (parts.next(), parts.next());
    let Some(writer) = writer else {
        return false;
    };
    let (pid, host) = match writer.split_once('@') {
        Some((pid, host)) => (pid, Some(host)),
        None => (writer, None),
    };
    match (pid.parse::<u32>(), host) {
        (Ok(pid), Some(h)) if h == host_name() => !process_alive(pid),
        (Ok(pid), None) => !process_alive(pid),
        _ => false,
    }
}

/// Remove the stale temporary files ([`temp_is_stale`]) directly inside `dir`; returns how
/// many went. Errors (a folder that does not exist yet, a file another sweeper took) are
/// ignored: this is housekeeping.
pub fn sweep_temps(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.ends_with(TEMP_SUFFIX) {
            continue;
        }
        let Ok(meta) = e.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        if temp_is_stale(name, age) && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// [`write_atomic_then`] for a `dest` inside the folder `root`: the folders between them are
/// opened (and made) one by one without following symbolic links, and the temporary file is
/// created and renamed relative to the folder opened, so nothing is written outside `root`
/// even if a folder in the tree is replaced by a link during the run.
#[cfg(unix)]
pub fn write_atomic_beneath(
    root: &Path,
    dest: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
    before_rename: impl FnOnce(),
) -> Result<()> {
    let werr = |reason: String| Error::Write {
        path: dest.to_owned(),
        reason,
    };
    let (Ok(rel), Some(name)) = (dest.strip_prefix(root), dest.file_name()) else {
        return Err(werr("not inside the output folder".into()));
    };
    let dir = crate::confined::Dir::open_beneath(root, rel.parent().unwrap_or(Path::new("")))
        .map_err(|e| werr(e.to_string()))?;
    let tmp = temp_path(dest);
    let tmp_name = tmp.file_name().unwrap_or_default().to_owned();
    write_synced_then_rename(
        dest,
        || dir.create_new(&tmp_name),
        write,
        before_rename,
        || dir.rename(&tmp_name, name),
        || {
            let _ = dir.remove(&tmp_name);
        },
    )
}

#[cfg(not(unix))]
pub fn write_atomic_beneath(
    _root: &Path,
    dest: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
    before_rename: impl FnOnce(),
) -> Result<()> {
    write_atomic_then(dest, write, before_rename)
}

/// Write `bytes` to `dest` atomically: a temporary file in the same folder, fsync, rename.
pub fn write_atomic(dest: &Path, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    write_atomic_then(dest, write, || {})
}

/// [`write_atomic`], calling `before_rename` once the temporary file is complete and synced,
/// just before it is renamed into place: what it records (a report line) is durable before
/// the output exists, so a process killed at any moment never leaves an output unrecorded.
pub fn write_atomic_then(
    dest: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
    before_rename: impl FnOnce(),
) -> Result<()> {
    let werr = |reason: String| Error::Write {
        path: dest.to_owned(),
        reason,
    };
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| werr(format!("cannot create folder: {e}")))?;
    }
    let tmp = temp_path(dest);
    write_synced_then_rename(
        dest,
        || std::fs::File::create(&tmp),
        write,
        before_rename,
        || std::fs::rename(&tmp, dest),
        || {
            let _ = std::fs::remove_file(&tmp);
        },
    )
}

/// The one sequence of both atomic writes: create the temporary file, write it through a
/// buffer, sync it, call `before_rename`, rename it into place; on any error remove it. How
/// the file is created, renamed and removed is the caller's (by path, or relative to a folder
/// opened without following links).
fn write_synced_then_rename(
    dest: &Path,
    create: impl FnOnce() -> std::io::Result<std::fs::File>,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
    before_rename: impl FnOnce(),
    rename: impl FnOnce() -> std::io::Result<()>,
    remove: impl FnOnce(),
) -> Result<()> {
    let werr = |e: std::io::Error| Error::Write {
        path: dest.to_owned(),
        reason: e.to_string(),
    };
    let result = (|| {
        let mut out = BufWriter::new(create().map_err(werr)?);
        write(&mut out)?;
        let file = out.into_inner().map_err(|e| werr(e.into_error()))?;
        file.sync_all().map_err(werr)?;
        before_rename();
        rename().map_err(werr)
    })();
    if result.is_err() {
        remove();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_files_of_dead_or_old_writers_are_stale() {
        let me = std::process::id();
        let host = host_name();
        let young = std::time::Duration::from_secs(1);
        // ours, alive: kept; an old one: stale whoever wrote it
        assert!(!temp_is_stale(
            &format!(".a.png.{me}@{host}.0{TEMP_SUFFIX}"),
            young
        ));
        assert!(temp_is_stale(
            &format!(".a.png.{me}@{host}.0{TEMP_SUFFIX}"),
            TEMP_STALE_AFTER
        ));
        // a dead writer on this machine (an exited child), in both name formats
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let dead = c.id();
        c.wait().unwrap();
        assert!(temp_is_stale(
            &format!(".a.png.{dead}@{host}.3{TEMP_SUFFIX}"),
            young
        ));
        assert!(temp_is_stale(
            &format!(".a.png.{dead}.3{TEMP_SUFFIX}"),
            young
        ));
        // another machine's writer: only by age; not ours at all: never
        assert!(!temp_is_stale(
            &format!(".a.png.{dead}@elsewhere.3{TEMP_SUFFIX}"),
            young
        ));
        assert!(!temp_is_stale(".a.png.tmp", TEMP_STALE_AFTER));
        // the name temp_path makes is recognised
        let t = temp_path(Path::new("/x/photo.v2.jpg"));
        let name = t.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with(".photo.v2.jpg.") && name.ends_with(TEMP_SUFFIX),
            "{name}"
        );
        assert!(!temp_is_stale(name, young));
    }
}
