//! Discovering inputs: files and folders named on the command line or in `--files-from`, and
//! where each one's output goes inside the output folder (mirroring the input tree, never
//! outside it).
use std::io::Read;
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

/// Our own temporary files (`.name.PID.N.ddcolor-tmp`) are never inputs.
fn is_our_temp(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.ends_with(".ddcolor-tmp"))
        .unwrap_or(false)
}

/// Walk `roots` (files or folders). A file named directly is taken whatever its extension and
/// lands at `DIR/<file name>`; files inside a folder are filtered by extension and globs and
/// keep their path relative to that folder. The output folder is skipped if it lies inside an
/// input folder.
pub fn discover(roots: &[PathBuf], opts: &WalkOptions, output_dir: &Path) -> Discovery {
    let mut d = Discovery::default();
    let out_canon = output_dir.canonicalize().ok();
    for root in roots {
        let meta = match std::fs::metadata(root) {
            Ok(m) => m,
            Err(e) => {
                d.errors.push((root.clone(), format!("cannot read: {e}")));
                continue;
            }
        };
        if !meta.is_dir() {
            match root.file_name() {
                Some(name) => d.inputs.push(Input {
                    source: root.clone(),
                    relative: PathBuf::from(name),
                }),
                None => d.errors.push((root.clone(), "has no file name".into())),
            }
            continue;
        }
        walk_folder(root, opts, out_canon.as_deref(), &mut d);
    }
    d
}

fn walk_folder(root: &Path, opts: &WalkOptions, out_canon: Option<&Path>, d: &mut Discovery) {
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
                d.errors.push((path, format!("cannot walk: {e}")));
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
        // symlinks are only seen here when not followed
        if !entry.file_type().is_file() || is_our_temp(path) {
            continue;
        }
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        if !has_image_extension(path, &opts.extensions) {
            continue;
        }
        if let Some(inc) = &opts.include {
            if !inc.is_match(rel) {
                continue;
            }
        }
        if let Some(exc) = &opts.exclude {
            if exc.is_match(rel) {
                continue;
            }
        }
        match safe_relative(rel) {
            Some(relative) => d.inputs.push(Input {
                source: path.to_path_buf(),
                relative,
            }),
            None => d.errors.push((path.to_path_buf(), "unsafe path".into())),
        }
    }
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

/// Inputs from a file list: `find album -print0` keeps its tree (`DIR/album/...`); absolute
/// paths and paths with `..` land at `DIR/<file name>`. Folders in the list are walked.
pub fn discover_listed(list: &[PathBuf], opts: &WalkOptions, output_dir: &Path) -> Discovery {
    let mut d = Discovery::default();
    let mut folders = Vec::new();
    for p in list {
        if p.is_dir() {
            folders.push(p.clone());
            continue;
        }
        let relative = if p.is_relative() {
            safe_relative(p)
        } else {
            None
        }
        .or_else(|| p.file_name().map(PathBuf::from));
        match relative {
            Some(relative) => d.inputs.push(Input {
                source: p.clone(),
                relative,
            }),
            None => d.errors.push((p.clone(), "has no file name".into())),
        }
    }
    let more = discover(&folders, opts, output_dir);
    d.inputs.extend(more.inputs);
    d.errors.extend(more.errors);
    d
}
