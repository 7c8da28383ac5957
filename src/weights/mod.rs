//! Which checkpoint to load: the released models by name ([`ModelName`]), where a copy may
//! already be on this machine ([`Locations`]), and fetching one from the Hugging Face hub when
//! none is ([`hub`]).
//!
//! Resolution order (GUIDE.md "Weights"): `--weights FILE` (or `DDCOLOR_WEIGHTS`); then
//! `./weights/`; then the user data dir (`DDCOLOR_WEIGHTS_DIR`, else
//! `$XDG_DATA_HOME/ddcolor/weights`, else `~/.local/share/ddcolor/weights`); then a Hugging Face
//! hub cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`); then a
//! download into the user data dir.
//!
//! Why not the `hf-hub` crate (what candle's examples use), evaluated for #28 against what
//! [`hub`] does: its sync API (0.4, 0.5) checks no SHA-256 of what it downloaded (the ETag
//! only names the blob), so a truncated or altered file passes; its default headers, the
//! token among them, go with every request it makes, the one to the storage it is redirected
//! to included (its metadata call); it has no message of its own for an offline machine
//! (ours names the file to copy and where to put it, GUIDE.md "Offline machines"); and it
//! brings ureq 2 with its own TLS stack beside the ureq 3 and rustls this crate already
//! builds. Resuming, progress and a lock it has, as [`hub`] does; the rest would have to be
//! written around it. Locations and origins are the URL
//! standard's (`url`), the lock's file identity `same-file`'s: both already in the tree.
pub mod hub;
mod locate;
mod models;

use std::path::{Path, PathBuf};

pub use hub::{Hub, HubError};
pub use locate::{Found, Locations, Place};
pub use models::{ModelName, CONFIG_FILE, HUB_OWNER, PTH_REPO, REVISION, WEIGHTS_FILE};

/// The environment variables this module reads, for the man page and `--help` texts.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "DDCOLOR_WEIGHTS_DIR",
        "Where downloaded checkpoints are kept (NAME/pytorch_model.bin below it). Default: \
         $XDG_DATA_HOME/ddcolor/weights, else ~/.local/share/ddcolor/weights.",
    ),
    (
        "HF_ENDPOINT",
        "The Hugging Face hub to download from (default https://huggingface.co); a mirror works.",
    ),
    (
        "HF_TOKEN",
        "Sent as 'Authorization: Bearer' to HF_ENDPOINT (never to the storage it redirects to).",
    ),
    (
        "HF_HUB_OFFLINE",
        "1: never download; use local copies only.",
    ),
    (
        "HF_HUB_CACHE",
        "A Hugging Face hub cache to look in (else $HF_HOME/hub, else \
         $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub). Only read.",
    ),
];

/// Where a checkpoint is looked for, in order (for the man page; GUIDE.md says the same).
pub const RESOLUTION_ORDER: &[&str] = &[
    "--weights FILE (or DDCOLOR_WEIGHTS): used as it is; a folder means FOLDER/pytorch_model.bin.",
    "./weights/NAME/pytorch_model.bin, then ./weights/ddcolor_NAME.pth, .bin or .safetensors.",
    "The user data dir: $DDCOLOR_WEIGHTS_DIR/NAME/pytorch_model.bin, by default under \
     $XDG_DATA_HOME/ddcolor/weights, else ~/.local/share/ddcolor/weights. Downloads go here.",
    "A Hugging Face hub cache ($HF_HUB_CACHE, else $HF_HOME/hub, else \
     ~/.cache/huggingface/hub): models--piddnad--ddcolor_NAME/snapshots/REV/pytorch_model.bin \
     (REV as refs/main names it), or the authors' ddcolor_NAME.pth in \
     models--piddnad--DDColor-models.",
    "A download of $HF_ENDPOINT/piddnad/ddcolor_NAME/resolve/main/pytorch_model.bin (and \
     config.json) into the user data dir, unless HF_HUB_OFFLINE=1.",
];

/// Where a checkpoint came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--weights` / `DDCOLOR_WEIGHTS`.
    Given,
    /// Found on this machine.
    Local(Place),
    /// Downloaded just now into the user data dir.
    Downloaded,
}

/// A checkpoint file to load.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub path: PathBuf,
    pub source: Source,
}

/// Why no checkpoint could be had.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("--weights {}: no such file or folder", crate::text::shown(.0))]
    GivenMissing(PathBuf),
    #[error(
        "--weights {}: a folder without {WEIGHTS_FILE} in it; name the checkpoint file",
        crate::text::shown(.0)
    )]
    GivenFolder(PathBuf),
    /// Nothing local and no download: what was searched, why there was no download, and what
    /// the user can do.
    #[error("no weights for model {model}: {reason}\n{help}")]
    NotFound {
        model: ModelName,
        reason: String,
        help: String,
    },
    #[error("cannot download model {model}: {source}{help}")]
    Download {
        model: ModelName,
        #[source]
        source: Box<HubError>,
        help: String,
    },
    /// `weights fetch A B ...`: each was tried; these failed (each said on stderr).
    #[error("{failed} of {tried} models could not be fetched (see above)")]
    Several { failed: usize, tried: usize },
    #[error("cannot write to standard output: {0}")]
    Stdout(#[from] std::io::Error),
}

/// The checkpoint `--weights` names: a file, or a folder holding `pytorch_model.bin` (a
/// `huggingface-cli download --local-dir` folder, a hub snapshot).
pub fn given(path: &Path) -> Result<PathBuf, WeightsError> {
    if path.is_dir() {
        let inner = path.join(WEIGHTS_FILE);
        return if inner.is_file() {
            Ok(inner)
        } else {
            Err(WeightsError::GivenFolder(path.to_owned()))
        };
    }
    if !path.exists() {
        return Err(WeightsError::GivenMissing(path.to_owned()));
    }
    Ok(path.to_owned())
}

/// Find the checkpoint: `weights` if given, else `model` in [`Locations`], else download it
/// with `hub` into the user data dir (a progress bar on stderr unless `quiet`).
pub fn resolve(
    weights: Option<&Path>,
    model: ModelName,
    locations: &Locations,
    hub: &Hub,
    quiet: bool,
) -> Result<Resolved, WeightsError> {
    if let Some(w) = weights {
        return Ok(Resolved {
            path: given(w)?,
            source: Source::Given,
        });
    }
    if let Some(found) = locations.find(model) {
        return Ok(Resolved {
            path: found.path,
            source: Source::Local(found.place),
        });
    }
    let path = fetch(model, locations, hub, quiet, false)?;
    Ok(Resolved {
        path,
        source: Source::Downloaded,
    })
}

/// Download `model` (checkpoint, then config.json) into the user data dir, whatever is
/// elsewhere on the machine; a copy already there is kept unless `replace`. Returns the
/// checkpoint's path.
pub fn fetch(
    model: ModelName,
    locations: &Locations,
    hub: &Hub,
    quiet: bool,
    replace: bool,
) -> Result<PathBuf, WeightsError> {
    let Some(dir) = locations.download_dir(model) else {
        return Err(WeightsError::NotFound {
            model,
            reason: "HOME, XDG_DATA_HOME and DDCOLOR_WEIGHTS_DIR are all unset, so there is no \
                     folder to download into"
                .into(),
            help: help_text(model, locations, hub),
        });
    };
    if hub.offline() {
        return Err(WeightsError::NotFound {
            model,
            reason: "none found on this machine, and HF_HUB_OFFLINE forbids downloading".into(),
            help: help_text(model, locations, hub),
        });
    }
    let dest = dir.join(WEIGHTS_FILE);
    hub.download(&model.repo(), WEIGHTS_FILE, &dest, quiet, replace)
        .map_err(|source| WeightsError::Download {
            model,
            help: if source.is_offline() {
                format!("\n{}", help_text(model, locations, hub))
            } else {
                String::new()
            },
            source: Box::new(source),
        })?;
    // config.json only names the head count (8 in every release, the default): a failure here
    // is a warning, not an error.
    let config = dir.join(CONFIG_FILE);
    if replace || !config.exists() {
        if let Err(e) = hub.download(&model.repo(), CONFIG_FILE, &config, true, replace) {
            if !quiet {
                crate::say!("ddcolor: warning: {CONFIG_FILE} of {model} not downloaded ({e}); the default head count (8) is used");
            }
        }
    }
    Ok(dest)
}

/// Where the user can put the file by hand, and the commands that fetch it elsewhere.
pub fn help_text(model: ModelName, locations: &Locations, hub: &Hub) -> String {
    let mut s = String::from("Looked in:\n");
    for place in locations.searched(model) {
        s.push_str(&format!("  {place}\n"));
    }
    let repo = model.repo();
    match locations.download_dir(model) {
        Some(dir) => {
            let d = crate::text::shown(&dir);
            s.push_str(&format!(
                "To use {model} without downloading here, put its {WEIGHTS_FILE} (about {size}) \
                 at\n  {dest}\n({CONFIG_FILE} beside it is optional). Any machine with internet \
                 can fetch both with\n  \
                 huggingface-cli download {repo} {WEIGHTS_FILE} {CONFIG_FILE} --local-dir {d}\n\
                 or\n  \
                 curl -L --create-dirs -o {d}/{WEIGHTS_FILE} {wurl}\n  \
                 curl -L --create-dirs -o {d}/{CONFIG_FILE} {curl}\n\
                 (on another machine, copy the folder to {d} here afterwards). Or pass --weights \
                 FILE.",
                size = model.approx_size(),
                dest = crate::text::shown(&dir.join(WEIGHTS_FILE)),
                wurl = hub.url(&repo, WEIGHTS_FILE),
                curl = hub.url(&repo, CONFIG_FILE),
            ));
        }
        None => s.push_str(&format!(
            "Download {} and pass it with --weights FILE.",
            hub.url(&repo, WEIGHTS_FILE)
        )),
    }
    s
}
