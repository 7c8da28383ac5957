//! Where each input's output goes, and the checks made before any byte of the input is read:
//! an output that exists is skipped (unless `--overwrite`), one that another input of this run
//! already claimed fails, and one that would replace an input fails. Decided on one thread, in
//! walk order, remembering only 8-byte hashes of what it has seen.
use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use super::report::Status;
use super::walk::Input;
use crate::error::Error;
use crate::keywords::keyword_enum;

/// `--format`: the output's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// The input's own format (by extension).
    #[default]
    Same,
    Png,
    Jpeg,
    Tiff,
    Webp,
}

keyword_enum!(OutputFormat, "format", {
    Same => "same",
    Png => "png",
    Jpeg => "jpg" | "jpeg",
    Tiff => "tiff" | "tif",
    Webp => "webp",
});

impl OutputFormat {
    fn extension(self) -> Option<&'static str> {
        match self {
            Self::Same => None,
            Self::Png => Some("png"),
            Self::Jpeg => Some("jpg"),
            Self::Tiff => Some("tif"),
            Self::Webp => Some("webp"),
        }
    }

    /// Where `input` is written inside `output_dir`.
    pub fn destination(self, output_dir: &Path, input: &Input) -> PathBuf {
        let dest = output_dir.join(&input.relative);
        match self.extension() {
            Some(ext) => dest.with_extension(ext),
            None => dest,
        }
    }
}

fn hash_path(p: &Path) -> u64 {
    let mut h = DefaultHasher::new();
    p.hash(&mut h);
    h.finish()
}

/// The destination decisions of one run.
pub struct Destinations {
    output: PathBuf,
    format: OutputFormat,
    overwrite: bool,
    /// The output folder, resolved, if it exists.
    out_canon: Option<PathBuf>,
    /// Input folders that are the output folder or lie inside it: any existing file below
    /// them may be an input that a later step of the walk reaches.
    roots_in_output: Vec<PathBuf>,
    /// Destinations claimed so far (hashes of the paths).
    claimed: HashSet<u64>,
    /// Inputs seen so far that live inside the output folder (hashes of resolved paths).
    inputs_in_output: HashSet<u64>,
    /// Sweep the stale temporary files of each destination folder the run visits (not in a
    /// dry run), whether or not anything is written there.
    sweep: bool,
    /// Folders swept so far (hashes of the paths).
    swept: HashSet<u64>,
}

impl Destinations {
    pub fn new(output: &Path, format: OutputFormat, overwrite: bool, roots: &[PathBuf]) -> Self {
        let out_canon = output.canonicalize().ok();
        let roots_in_output = match &out_canon {
            Some(out) => roots
                .iter()
                .filter_map(|r| r.canonicalize().ok())
                .filter(|r| r.is_dir() && r.starts_with(out))
                .collect(),
            None => Vec::new(),
        };
        Self {
            output: output.to_owned(),
            format,
            overwrite,
            out_canon,
            roots_in_output,
            claimed: HashSet::new(),
            inputs_in_output: HashSet::new(),
            sweep: false,
            swept: HashSet::new(),
        }
    }

    /// Sweep the temporary files dead writers left in each destination folder visited
    /// ([`crate::imageio::sweep_temps`]): a run that skips every file still clears them.
    pub fn sweeping(mut self, sweep: bool) -> Self {
        self.sweep = sweep;
        self
    }

    /// The destination of `input`, or why it is settled without being read: `Skipped` (the
    /// output exists) or `Failed` (claimed twice, or it would replace an input).
    pub fn decide(&mut self, input: &Input) -> Result<PathBuf, (Status, String)> {
        let dest = self.format.destination(&self.output, input);
        if let Some(out) = &self.out_canon {
            if let Ok(src) = input.source.canonicalize() {
                if src.starts_with(out) {
                    self.inputs_in_output.insert(hash_path(&src));
                }
            }
        }
        if !self.claimed.insert(hash_path(&dest)) {
            return Err((
                Status::Failed,
                format!(
                    "output {} is already the output of another input",
                    crate::text::shown(&dest)
                ),
            ));
        }
        #[cfg(unix)]
        if let Some(link) = crate::confined::link_between(&self.output, &dest) {
            return Err((
                Status::Failed,
                format!(
                    "{} is a symbolic link: outputs are never written outside the output \
                     folder (replace the link by a folder, or make the output folder where the \
                     link points)",
                    crate::text::shown(&link)
                ),
            ));
        }
        if self.sweep {
            if let Some(dir) = dest.parent() {
                if self.swept.insert(hash_path(dir)) {
                    crate::imageio::sweep_temps(dir);
                }
            }
        }
        match std::fs::symlink_metadata(&dest) {
            Err(_) => Ok(dest),
            Ok(_) if self.is_an_input(&dest) => Err((
                Status::Failed,
                format!(
                    "output {} would overwrite an input",
                    crate::text::shown(&dest)
                ),
            )),
            Ok(_) if !self.overwrite => Err((
                Status::Skipped,
                "output exists (use --overwrite to replace it)".into(),
            )),
            Ok(_) => Ok(dest),
        }
    }

    /// Whether the existing file `dest` is (or may be) one of this run's inputs.
    fn is_an_input(&self, dest: &Path) -> bool {
        let Ok(c) = dest.canonicalize() else {
            return false;
        };
        self.inputs_in_output.contains(&hash_path(&c))
            || self.roots_in_output.iter().any(|r| c.starts_with(r))
    }
}

/// The checks made once before a run reads anything or loads the model: the output folder is
/// not one of the input folders (plainly or through a symbolic link), and it exists (created
/// here, unless `create` is false, as for `--dry-run`) and can be written. Each refusal names
/// the folder and says why; the CLI exits 2 on it. Returns the outermost folder it created,
/// for [`remove_if_unused`].
pub fn preflight(
    output: &Path,
    input_folders: &[PathBuf],
    create: bool,
) -> Result<Option<PathBuf>, Error> {
    if let Ok(out) = output.canonicalize() {
        for root in input_folders {
            if root.canonicalize().ok().as_deref() == Some(out.as_path()) {
                return Err(Error::OutputIsInput {
                    output: output.to_owned(),
                    input: root.clone(),
                });
            }
        }
    }
    let cannot = |reason: String| Error::OutputUnwritable {
        output: output.to_owned(),
        reason,
    };
    if !create {
        // nothing is created in a dry run: the nearest existing ancestor must be a folder
        let mut p = Some(output);
        while let Some(dir) = p {
            match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => return Ok(None),
                Ok(_) => {
                    return Err(cannot(format!(
                        "{} is not a folder",
                        crate::text::shown(dir)
                    )))
                }
                Err(_) => p = dir.parent().filter(|d| !d.as_os_str().is_empty()),
            }
        }
        return Ok(None);
    }
    if let Ok(m) = std::fs::metadata(output) {
        if !m.is_dir() {
            return Err(cannot("a file is in its place".into()));
        }
    }
    // the outermost folder that is not there yet
    let mut created = None;
    let mut p = Some(output);
    while let Some(dir) = p.filter(|d| !d.as_os_str().is_empty()) {
        if std::fs::symlink_metadata(dir).is_ok() {
            break;
        }
        created = Some(dir.to_path_buf());
        p = dir.parent();
    }
    std::fs::create_dir_all(output).map_err(|e| cannot(e.to_string()))?;
    // a probe file: permissions, read-only mounts, quotas, ACLs all answer the same way
    let probe = crate::imageio::temp_path(&output.join("ddcolor-probe"));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| cannot(e.to_string()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(created)
}

/// Remove `created` (what [`preflight`] made) if it holds folders only: a run that did
/// nothing (a mistyped input, weights that cannot be read) leaves no empty tree behind.
/// Never removes a file; a folder that gained one is kept.
pub fn remove_if_unused(created: &Path) {
    fn prune(dir: &Path) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        let mut empty = true;
        for e in entries.flatten() {
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            empty &= is_dir && prune(&e.path());
        }
        empty && std::fs::remove_dir(dir).is_ok()
    }
    prune(created);
}
