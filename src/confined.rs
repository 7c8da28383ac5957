//! Writes confined to a folder: the folders below a root are opened one component at a time
//! with `O_NOFOLLOW` (created where missing), so a symbolic link anywhere between the output
//! folder and an output, made before the run or during it, is refused instead of written
//! through. The file is then created, renamed and removed relative to the folder opened, never
//! by path.
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

/// A folder opened beneath a root, with no symbolic link on the way.
pub struct Dir(OwnedFd);

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

const DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;

/// Why a folder beneath the root cannot be used: a symbolic link (never followed), or not a
/// folder.
fn refused(shown: &Path, link: bool) -> io::Error {
    io::Error::other(if link {
        format!(
            "{} is a symbolic link: outputs are never written outside the output folder \
             (replace the link by a folder, or make the output folder where the link points)",
            crate::text::shown(shown)
        )
    } else {
        format!("{} is not a folder", crate::text::shown(shown))
    })
}

impl Dir {
    /// `root` itself (followed if it is a link: the user named it), then each component of
    /// `relative` (plain names only) opened without following links, created where missing.
    pub fn open_beneath(root: &Path, relative: &Path) -> io::Result<Self> {
        let c = cstr(root.as_os_str())?;
        // SAFETY: open(2) on a NUL-terminated path; the descriptor is owned below
        let fd = check(unsafe { libc::open(c.as_ptr(), DIR_FLAGS) })?;
        // SAFETY: `fd` was just opened and is owned by nothing else
        let mut dir = Self(unsafe { OwnedFd::from_raw_fd(fd) });
        let mut shown = root.to_path_buf();
        for comp in relative.components() {
            let Component::Normal(name) = comp else {
                return Err(io::Error::other(format!(
                    "{} leaves the output folder",
                    crate::text::shown(relative)
                )));
            };
            shown.push(name);
            dir = dir.child(name, &shown)?;
        }
        Ok(dir)
    }

    fn child(&self, name: &OsStr, shown: &Path) -> io::Result<Self> {
        let c = cstr(name)?;
        let flags = DIR_FLAGS | libc::O_NOFOLLOW;
        for _ in 0..3 {
            // SAFETY: openat(2) relative to our open folder, NUL-terminated name
            let fd = unsafe { libc::openat(self.0.as_raw_fd(), c.as_ptr(), flags) };
            if fd >= 0 {
                // SAFETY: `fd` was just opened and is owned by nothing else
                return Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOENT) => {
                    // SAFETY: mkdirat(2) relative to our open folder
                    let r = unsafe { libc::mkdirat(self.0.as_raw_fd(), c.as_ptr(), 0o777) };
                    if r < 0 {
                        let e = io::Error::last_os_error();
                        if e.raw_os_error() != Some(libc::EEXIST) {
                            return Err(e);
                        }
                    }
                }
                Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
                    return Err(refused(shown, self.is_link(&c)));
                }
                _ => return Err(e),
            }
        }
        Err(io::Error::other(format!(
            "{} keeps changing",
            crate::text::shown(shown)
        )))
    }

    fn is_link(&self, name: &CString) -> bool {
        // SAFETY: fstatat(2) into a stat we own, relative to our open folder
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::fstatat(
                self.0.as_raw_fd(),
                name.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        r == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFLNK
    }

    /// A new file `name` in this folder (never an existing one, never through a link).
    pub fn create_new(&self, name: &OsStr) -> io::Result<File> {
        let c = cstr(name)?;
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: openat(2) relative to our open folder; the descriptor is owned below
        let fd = check(unsafe { libc::openat(self.0.as_raw_fd(), c.as_ptr(), flags, 0o666) })?;
        // SAFETY: `fd` was just opened and is owned by nothing else
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Rename `from` to `to`, both in this folder (a link at `to` is replaced, not followed).
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        let (a, b) = (cstr(from)?, cstr(to)?);
        let fd = self.0.as_raw_fd();
        // SAFETY: renameat(2) within our open folder
        check(unsafe { libc::renameat(fd, a.as_ptr(), fd, b.as_ptr()) }).map(|_| ())
    }

    /// Remove the file `name` from this folder.
    pub fn remove(&self, name: &OsStr) -> io::Result<()> {
        let c = cstr(name)?;
        // SAFETY: unlinkat(2) within our open folder
        check(unsafe { libc::unlinkat(self.0.as_raw_fd(), c.as_ptr(), 0) }).map(|_| ())
    }
}

/// The first symbolic link among the folders between `root` and `dest` (`dest` itself
/// excluded: a link there is replaced, not followed), if any: the early, per-file answer; the
/// write itself goes through [`Dir::open_beneath`], which holds even if the link appears later.
pub fn link_between(root: &Path, dest: &Path) -> Option<std::path::PathBuf> {
    let rel = dest.strip_prefix(root).ok()?.parent()?;
    let mut p = root.to_path_buf();
    for comp in rel.components() {
        p.push(comp);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => return Some(p),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}
