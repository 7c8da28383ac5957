//! Where a released checkpoint may already be on this machine: `./weights/`, the user data dir
//! (where ddcolor downloads to), and a Hugging Face hub cache (where the Python pipeline
//! downloads to). Only looks; never writes.
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::models::{ModelName, PTH_REPO, REVISION, WEIGHTS_FILE};

/// A place a checkpoint was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// `./weights/` (the repository's folder when run from its root).
    LocalDir,
    /// The user data dir, where `ddcolor weights fetch` and first use download to.
    DataDir,
    /// A Hugging Face hub cache.
    HubCache,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Place::LocalDir => "./weights",
            Place::DataDir => "data dir",
            Place::HubCache => "hub cache",
        })
    }
}

/// A checkpoint on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    pub place: Place,
}

/// The folders searched, in order. Built from the environment by [`Locations::from_env`].
#[derive(Debug, Clone, Default)]
pub struct Locations {
    local: Option<PathBuf>,
    data: Option<PathBuf>,
    hub: Option<PathBuf>,
}

/// An absolute path from a variable (XDG variables must be absolute; others are taken as is).
fn abs(v: Option<OsString>) -> Option<PathBuf> {
    v.map(PathBuf::from).filter(|p| p.is_absolute())
}

impl Locations {
    /// `./weights`, the data dir and the hub cache that the process environment names.
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var_os(k), Some(PathBuf::from("weights")))
    }

    /// As [`Locations::from_env`] with the variables read through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>, local: Option<PathBuf>) -> Self {
        let var = |k: &str| var(k).filter(|v| !v.is_empty());
        let home = var("HOME")
            .or_else(|| var("USERPROFILE"))
            .map(PathBuf::from);
        let data = var("DDCOLOR_WEIGHTS_DIR")
            .map(PathBuf::from)
            .or_else(|| abs(var("XDG_DATA_HOME")).map(|d| d.join("ddcolor").join("weights")))
            .or_else(|| {
                if cfg!(windows) {
                    var("LOCALAPPDATA").map(|d| PathBuf::from(d).join("ddcolor").join("weights"))
                } else {
                    None
                }
            })
            .or_else(|| {
                home.as_ref().map(|h| {
                    h.join(".local")
                        .join("share")
                        .join("ddcolor")
                        .join("weights")
                })
            });
        // huggingface_hub's own order (constants.py).
        let hub = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .or_else(|| var("HF_HOME").map(|h| PathBuf::from(h).join("hub")))
            .or_else(|| abs(var("XDG_CACHE_HOME")).map(|c| c.join("huggingface").join("hub")))
            .or_else(|| home.map(|h| h.join(".cache").join("huggingface").join("hub")));
        Self { local, data, hub }
    }

    /// Explicit folders (for tests and embedding): `local` like `./weights`, `data` the
    /// download folder, `hub` a hub cache root.
    pub fn new(local: Option<PathBuf>, data: Option<PathBuf>, hub: Option<PathBuf>) -> Self {
        Self { local, data, hub }
    }

    /// The folder that holds `NAME/pytorch_model.bin` for downloaded models.
    pub fn data_dir(&self) -> Option<&Path> {
        self.data.as_deref()
    }

    /// The Hugging Face hub cache root that is searched.
    pub fn hub_cache(&self) -> Option<&Path> {
        self.hub.as_deref()
    }

    /// Where `model` is downloaded to: `<data dir>/<name>/` (pytorch_model.bin, config.json).
    pub fn download_dir(&self, model: ModelName) -> Option<PathBuf> {
        self.data.as_ref().map(|d| d.join(model.as_str()))
    }

    /// File names tried in `./weights/`, in order.
    fn local_candidates(&self, model: ModelName) -> Vec<PathBuf> {
        let Some(dir) = &self.local else {
            return Vec::new();
        };
        let n = model.as_str();
        vec![
            dir.join(n).join(WEIGHTS_FILE),
            dir.join(format!("ddcolor_{n}.pth")),
            dir.join(format!("ddcolor_{n}.bin")),
            dir.join(format!("ddcolor_{n}.safetensors")),
        ]
    }

    /// The first copy of `model` on this machine, in resolution order.
    pub fn find(&self, model: ModelName) -> Option<Found> {
        let found = |path: PathBuf, place| Some(Found { path, place });
        for p in self.local_candidates(model) {
            if p.is_file() {
                return found(p, Place::LocalDir);
            }
        }
        if let Some(dir) = self.download_dir(model) {
            let p = dir.join(WEIGHTS_FILE);
            if p.is_file() {
                return found(p, Place::DataDir);
            }
        }
        if let Some(hub) = &self.hub {
            if let Some(p) = hub_snapshot_file(hub, &model.repo(), WEIGHTS_FILE)
                .or_else(|| hub_snapshot_file(hub, PTH_REPO, &model.pth_file()))
            {
                return found(p, Place::HubCache);
            }
        }
        None
    }

    /// What [`Locations::find`] looks at, for messages.
    pub fn searched(&self, model: ModelName) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if let Some(dir) = &self.local {
            let n = model.as_str();
            out.push(format!(
                "{}, {}/ddcolor_{n}.{{pth,bin,safetensors}}",
                crate::text::shown(&dir.join(n).join(WEIGHTS_FILE)),
                crate::text::shown(dir)
            ));
        }
        if let Some(dir) = self.download_dir(model) {
            out.push(crate::text::shown(&dir.join(WEIGHTS_FILE)));
        }
        if let Some(hub) = &self.hub {
            for (repo, file) in [
                (model.repo(), WEIGHTS_FILE.to_owned()),
                (PTH_REPO.to_owned(), model.pth_file()),
            ] {
                out.push(crate::text::shown(
                    &hub.join(repo_folder(&repo))
                        .join("snapshots")
                        .join("<revision>")
                        .join(file),
                ));
            }
        }
        out
    }
}

/// `piddnad/ddcolor_paper` -> `models--piddnad--ddcolor_paper` (the hub cache's folder name).
pub fn repo_folder(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

/// `file` in the hub cache's snapshot of `repo`: the revision `refs/main` names, else the most
/// recently written snapshot that has the file. Snapshot entries are symbolic links into
/// `blobs/`; a dangling one (blob deleted) does not count.
fn hub_snapshot_file(hub: &Path, repo: &str, file: &str) -> Option<PathBuf> {
    let root = hub.join(repo_folder(repo));
    let snapshots = root.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(root.join("refs").join(REVISION)) {
        let p = snapshots.join(rev.trim()).join(file);
        if p.is_file() {
            return Some(p);
        }
    }
    let mut best: Option<(SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(&snapshots).ok()?.flatten() {
        let p = entry.path().join(file);
        if !p.is_file() {
            continue;
        }
        let t = entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(UNIX_EPOCH);
        if best.as_ref().is_none_or(|(bt, _)| t > *bt) {
            best = Some((t, p));
        }
    }
    best.map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| {
            pairs
                .iter()
                .find(|(pk, _)| pk == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn folders_follow_the_documented_precedence() {
        let l = Locations::from_vars(vars(&[("HOME", "/h")]), None);
        assert_eq!(
            l.data_dir(),
            Some(Path::new("/h/.local/share/ddcolor/weights"))
        );
        assert_eq!(l.hub_cache(), Some(Path::new("/h/.cache/huggingface/hub")));
        let l = Locations::from_vars(
            vars(&[
                ("HOME", "/h"),
                ("XDG_DATA_HOME", "/x"),
                ("XDG_CACHE_HOME", "/c"),
            ]),
            None,
        );
        assert_eq!(l.data_dir(), Some(Path::new("/x/ddcolor/weights")));
        assert_eq!(l.hub_cache(), Some(Path::new("/c/huggingface/hub")));
        // relative XDG paths are ignored, as the spec says
        let l = Locations::from_vars(vars(&[("HOME", "/h"), ("XDG_DATA_HOME", "rel")]), None);
        assert_eq!(
            l.data_dir(),
            Some(Path::new("/h/.local/share/ddcolor/weights"))
        );
        let l = Locations::from_vars(
            vars(&[
                ("HOME", "/h"),
                ("DDCOLOR_WEIGHTS_DIR", "/w"),
                ("HF_HOME", "/hf"),
                ("XDG_DATA_HOME", "/x"),
            ]),
            None,
        );
        assert_eq!(l.data_dir(), Some(Path::new("/w")));
        assert_eq!(l.hub_cache(), Some(Path::new("/hf/hub")));
        let l = Locations::from_vars(vars(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/hc")]), None);
        assert_eq!(l.hub_cache(), Some(Path::new("/hc")));
        assert_eq!(l.data_dir(), None);
        assert_eq!(
            l.download_dir(ModelName::Paper),
            None,
            "no HOME, no data dir"
        );
    }

    #[test]
    fn repo_folders_are_named_like_huggingface_hub() {
        assert_eq!(
            repo_folder(&ModelName::PaperTiny.repo()),
            "models--piddnad--ddcolor_paper_tiny"
        );
        assert_eq!(repo_folder(PTH_REPO), "models--piddnad--DDColor-models");
    }
}
