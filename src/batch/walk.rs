//! Discovering inputs as a stream: files and folders named on the command line or in
//! `--files-from`, and where each one's output goes inside the output folder (mirroring the
//! input tree, never outside it). Nothing is collected: each input is handed on as it is found.
use std::io::{BufRead, Read};
use std::path::{Component, Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};

/// Image extensions picked up inside folders (case-insensitive).
pub const DEFAULT_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "tif", "tiff", "bmp", "webp"];

/// How folders are walked.
#[derive(Debug, Clone)]
pub struct WalkOptions {
    pub extensions: Vec<String>,
    pub include: Option<GlobSet>,
    pub exclude: Option<GlobSet>,
    pub follow_symlinks: bool,
}

impl Default for WalkOptions {
    fn default() -> Self {
        Self {
            extensions: DEFAULT_EXTENSIONS.iter().map(|s| s.to_string()).collect(),
            include: None,
            exclude: None,
            follow_symlinks: false,
        }
    }
}

/// Compile `--include`/`--exclude` globs. A glob without a `/` matches the file name at any
/// depth (`*.tif`), one with a `/` matches the path relative to the folder walked.
pub fn glob_set(patterns: &[String]) -> Result<Option<GlobSet>, String> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let p = if p.contains('/') {
            p.clone()
        } else {
            format!("**/{p}")
        };
        b.add(Glob::new(&p).map_err(|e| format!("bad glob {p:?}: {e}"))?);
    }
    b.build().map(Some).map_err(|e| e.to_string())
}

/// One image to colorize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// Where to read it.
    pub source: PathBuf,
    /// Its path inside the output folder (relative, no `..`), with the input's extension.
    pub relative: PathBuf,
}

impl Input {
    /// The folder whose tree is mirrored for this input: `source` less `relative` (the folder
    /// named on the command line, the part of a `--files-from` entry before `/./`, `.` for a
    /// relative entry mirrored whole, the file's folder for a file named directly). `None`
    /// when `source` does not end with `relative` (standard input's stand-in).
    pub fn root(&self) -> Option<PathBuf> {
        let up = self.relative.components().count();
        let mut root = self.source.clone();
        if !root.ends_with(&self.relative) {
            return None;
        }
        for _ in 0..up {
            root.pop();
        }
        Some(if root.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            root
        })
    }
}

/// Inputs found, plus the paths that could not be used and why.
#[derive(Debug, Default)]
pub struct Discovery {
    pub inputs: Vec<Input>,
    pub errors: Vec<(PathBuf, String)>,
}

/// A relative path with only normal components (`./` dropped); `None` if it has `..`, a root
/// or a prefix, i.e. if it could point outside the output folder.
pub fn safe_relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

fn has_image_extension(p: &Path, exts: &[String]) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| exts.iter().any(|x| x.eq_ignore_ascii_case(e)))
        .unwrap_or(false)
}

/// Our own temporary files (`.name.PID@HOST.N.ddcolor-tmp`) are never inputs.
fn is_our_temp(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.ends_with(crate::imageio::TEMP_SUFFIX))
        .unwrap_or(false)
}

/// What the walk hands on: an input, a path that cannot be used and why, or a file inside a
/// folder that was left out and why (counted, so that a run that finds nothing says why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Input(Input),
    Error(PathBuf, String),
    LeftOut(PathBuf, LeftOut),
}

/// Why a file inside a folder is not an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeftOut {
    /// A symbolic link, not followed without `-L`.
    Symlink,
    /// Not a regular file (a FIFO, a socket, a device).
    NotAFile,
    /// Its extension is not one of the image formats read.
    NotAnImage,
    /// It matches no `--include` glob.
    NotIncluded,
    /// It matches an `--exclude` glob.
    Excluded,
}

/// Where inputs come from: paths named on the command line, and a `--files-from` list.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub roots: Vec<PathBuf>,
    /// `--files-from` (`-`: standard input) and whether it is NUL-separated.
    pub list: Option<(PathBuf, bool)>,
    pub opts: WalkOptions,
}

impl Sources {
    /// Folders named on the command line (the roots that are directories), for the engine's
    /// check that an output never replaces an input.
    pub fn root_folders(&self) -> Vec<PathBuf> {
        self.roots.iter().filter(|r| r.is_dir()).cloned().collect()
    }

    /// Walk everything, calling `emit` for each input or error as it is found; stops early
    /// when `emit` returns false. A `--files-from` list is read entry by entry (a pipe from
    /// `find` is consumed as it arrives). Fails only if the list itself cannot be read.
    pub fn walk(
        &self,
        output_dir: &Path,
        emit: &mut dyn FnMut(Found) -> bool,
    ) -> std::io::Result<()> {
        if !walk_roots(&self.roots, &self.opts, output_dir, emit) {
            return Ok(());
        }
        let Some((list, nul)) = &self.list else {
            return Ok(());
        };
        let reader: Box<dyn BufRead> = if list == Path::new("-") {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(std::io::BufReader::new(std::fs::File::open(list)?))
        };
        let sep = if *nul { b'\0' } else { b'\n' };
        for entry in reader.split(sep) {
            let mut e = entry?;
            if !nul && e.ends_with(b"\r") {
                e.pop();
            }
            if e.is_empty() {
                continue;
            }
            if !nul && e.contains(&b'\0') {
                // `find -print0 | ddcolor colorize --files-from -` without -0: one "line" of
                // NUL-separated names
                let first = e.split(|&b| b == b'\0').next().unwrap_or_default();
                let msg = "the --files-from list holds NUL bytes: it is NUL-separated (as \
                           find -print0 and xargs -0 write); add -0 (--null)";
                if !emit(Found::Error(bytes_to_path(first), msg.into())) {
                    break;
                }
                continue;
            }
            if !listed(&bytes_to_path(&e), &self.opts, output_dir, emit) {
                break;
            }
        }
        Ok(())
    }
}

/// Walk `roots` (files or folders) into a [`Discovery`] (see [`walk_roots`]).
pub fn discover(roots: &[PathBuf], opts: &WalkOptions, output_dir: &Path) -> Discovery {
    let mut d = Discovery::default();
    walk_roots(roots, opts, output_dir, &mut |f| {
        d.push(f);
        true
    });
    d
}

impl Discovery {
    fn push(&mut self, f: Found) {
        match f {
            Found::Input(i) => self.inputs.push(i),
            Found::Error(p, e) => self.errors.push((p, e)),
            Found::LeftOut(..) => {}
        }
    }
}

/// Walk `roots` (files or folders). A file named directly is taken whatever its extension and
/// lands at `DIR/<file name>`; files inside a folder are filtered by extension and globs and
/// keep their path relative to that folder. The output folder is skipped if it lies inside an
/// input folder. Returns false if `emit` asked to stop.
pub fn walk_roots(
    roots: &[PathBuf],
    opts: &WalkOptions,
    output_dir: &Path,
    emit: &mut dyn FnMut(Found) -> bool,
) -> bool {
    let out_canon = output_dir.canonicalize().ok();
    for root in roots {
        let meta = match std::fs::metadata(root) {
            Ok(m) => m,
            Err(e) => {
                if !emit(Found::Error(root.clone(), format!("cannot read: {e}"))) {
                    return false;
                }
                continue;
            }
        };
        let more = if !meta.is_dir() {
            emit(match root.file_name() {
                Some(name) => Found::Input(Input {
                    source: root.clone(),
                    relative: PathBuf::from(name),
                }),
                None => Found::Error(root.clone(), "has no file name".into()),
            })
        } else {
            walk_folder(root, opts, out_canon.as_deref(), emit)
        };
        if !more {
            return false;
        }
    }
    true
}

fn walk_folder(
    root: &Path,
    opts: &WalkOptions,
    out_canon: Option<&Path>,
    emit: &mut dyn FnMut(Found) -> bool,
) -> bool {
    if out_canon.is_some() && root.canonicalize().ok().as_deref() == out_canon {
        return emit(Found::Error(
            root.to_path_buf(),
            "is the output folder: nothing in it is colorized (choose another --output)".into(),
        ));
    }
    let mut it = walkdir::WalkDir::new(root)
        .follow_links(opts.follow_symlinks)
        .sort_by_file_name()
        .into_iter();
    while let Some(entry) = it.next() {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = e
                    .path()
                    .map(Path::to_path_buf)
                    .unwrap_or(root.to_path_buf());
                if !emit(Found::Error(path, format!("cannot walk: {e}"))) {
                    return false;
                }
                continue;
            }
        };
        let path = entry.path();
        if entry.file_type().is_dir() {
            if let (Some(out), Ok(c)) = (out_canon, path.canonicalize()) {
                if c == out {
                    it.skip_current_dir();
                }
            }
            continue;
        }
        if is_our_temp(path) {
            continue;
        }
        let left_out = if entry.path_is_symlink() && !opts.follow_symlinks {
            // symlinks are only seen here when not followed
            Some(LeftOut::Symlink)
        } else if !entry.file_type().is_file() {
            Some(LeftOut::NotAFile)
        } else if !has_image_extension(path, &opts.extensions) {
            Some(LeftOut::NotAnImage)
        } else {
            let rel = path.strip_prefix(root).unwrap_or(path);
            if opts.include.as_ref().is_some_and(|inc| !inc.is_match(rel)) {
                Some(LeftOut::NotIncluded)
            } else if opts.exclude.as_ref().is_some_and(|exc| exc.is_match(rel)) {
                Some(LeftOut::Excluded)
            } else {
                None
            }
        };
        if let Some(why) = left_out {
            if !emit(Found::LeftOut(path.to_path_buf(), why)) {
                return false;
            }
            continue;
        }
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        let found = match safe_relative(rel) {
            Some(relative) => Found::Input(Input {
                source: path.to_path_buf(),
                relative,
            }),
            None => Found::Error(path.to_path_buf(), "unsafe path".into()),
        };
        if !emit(found) {
            return false;
        }
    }
    true
}

/// Paths listed in `--files-from` (newline-separated, or NUL-separated with `-0`). Blank
/// entries are ignored; a trailing `\r` is dropped from newline-separated lists.
pub fn parse_file_list(data: &[u8], nul: bool) -> Vec<PathBuf> {
    let sep = if nul { b'\0' } else { b'\n' };
    data.split(|&b| b == sep)
        .map(|e| {
            if !nul && e.ends_with(b"\r") {
                &e[..e.len() - 1]
            } else {
                e
            }
        })
        .filter(|e| !e.is_empty())
        .map(bytes_to_path)
        .collect()
}

#[cfg(unix)]
fn bytes_to_path(b: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(b))
}

#[cfg(not(unix))]
fn bytes_to_path(b: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(b).into_owned())
}

/// Read a `--files-from` source (`-` is standard input).
pub fn read_file_list(source: &Path, nul: bool) -> std::io::Result<Vec<PathBuf>> {
    let mut data = Vec::new();
    if source == Path::new("-") {
        std::io::stdin().lock().read_to_end(&mut data)?;
    } else {
        std::fs::File::open(source)?.read_to_end(&mut data)?;
    }
    Ok(parse_file_list(&data, nul))
}

/// One `--files-from` entry: `find album -print0` keeps its tree (`DIR/album/...`); absolute
/// paths and paths with `..` land at `DIR/<file name>`. A folder in the list is walked.
fn listed(
    p: &Path,
    opts: &WalkOptions,
    output_dir: &Path,
    emit: &mut dyn FnMut(Found) -> bool,
) -> bool {
    if let Some((root, relative)) = split_marker(p) {
        return emit(match safe_relative(&relative) {
            Some(relative) => Found::Input(Input {
                source: root.join(&relative),
                relative,
            }),
            None => Found::Error(
                p.to_path_buf(),
                "the part after /./ must be a relative path without ..".into(),
            ),
        });
    }
    if p.is_dir() {
        return walk_roots(
            std::slice::from_ref(&p.to_path_buf()),
            opts,
            output_dir,
            emit,
        );
    }
    let relative = if p.is_relative() {
        safe_relative(p)
    } else {
        None
    }
    .or_else(|| p.file_name().map(PathBuf::from));
    emit(match relative {
        Some(relative) => Found::Input(Input {
            source: p.to_path_buf(),
            relative,
        }),
        None => Found::Error(p.to_path_buf(), "has no file name".into()),
    })
}

/// rsync's `--relative` marker: `ROOT/./REL` in a `--files-from` entry is the file
/// `ROOT/REL`, mirrored as `REL` (what the gallery's flagged list holds, so that a rerun
/// replaces exactly the outputs of the first run, from any folder). Only a `/./` inside the
/// entry counts: a leading `./` (as `find .` prints) is just the current folder.
fn split_marker(p: &Path) -> Option<(PathBuf, PathBuf)> {
    let b = path_bytes(p);
    let at = b.windows(3).position(|w| w == b"/./")?;
    let root = if at == 0 { &b[..1] } else { &b[..at] };
    Some((bytes_to_path(root), bytes_to_path(&b[at + 3..])))
}

#[cfg(unix)]
fn path_bytes(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().to_vec()
}

#[cfg(not(unix))]
fn path_bytes(p: &Path) -> Vec<u8> {
    p.to_string_lossy().as_bytes().to_vec()
}

/// Inputs from a file list, collected (see [`Sources::walk`] for the streaming form).
pub fn discover_listed(list: &[PathBuf], opts: &WalkOptions, output_dir: &Path) -> Discovery {
    let mut d = Discovery::default();
    for p in list {
        listed(p, opts, output_dir, &mut |f| {
            d.push(f);
            true
        });
    }
    d
}
