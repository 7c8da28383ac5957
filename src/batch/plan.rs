//! Hash and plan: where each input's output goes, which inputs are skipped up front (output
//! exists, would overwrite an input, collides with another output), the SHA-256 of the rest
//! (streamed, in parallel), and the groups of byte-identical inputs that share one prediction.
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::report::Status;
use super::walk::Input;
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

/// SHA-256 of a file's bytes, streamed, as lowercase hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// One input and what planning decided about it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub input: Input,
    pub dest: PathBuf,
    pub sha256: Option<String>,
    /// Set when the input is settled before any work (skipped or failed), with the reason.
    pub settled: Option<(Status, String)>,
}

/// Byte-identical inputs: one prediction, written to every member's destination.
#[derive(Debug, Clone)]
pub struct Group {
    pub sha256: String,
    /// Indices into [`Plan::entries`]; the first is the primary, the rest are duplicates.
    pub members: Vec<usize>,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub entries: Vec<Entry>,
    pub groups: Vec<Group>,
}

/// Decide destinations, skip what must be skipped, hash the rest in parallel, group by hash.
pub fn plan(
    inputs: Vec<Input>,
    output_dir: &Path,
    format: OutputFormat,
    overwrite: bool,
    on_hashed: &(dyn Fn() + Sync),
) -> Plan {
    let input_paths: HashSet<PathBuf> = inputs
        .iter()
        .filter_map(|i| i.source.canonicalize().ok())
        .collect();
    let mut claimed: HashMap<PathBuf, PathBuf> = HashMap::new();
    let mut entries: Vec<Entry> = inputs
        .into_iter()
        .map(|input| {
            let dest = format.destination(output_dir, &input);
            let settled = if let Some(first) = claimed.get(&dest) {
                Some((
                    Status::Failed,
                    format!(
                        "output {} is already the output of {}",
                        dest.display(),
                        first.display()
                    ),
                ))
            } else if dest
                .canonicalize()
                .map(|c| input_paths.contains(&c))
                .unwrap_or(false)
            {
                Some((
                    Status::Failed,
                    format!("output {} would overwrite an input", dest.display()),
                ))
            } else if !overwrite && dest.exists() {
                Some((
                    Status::Skipped,
                    "output exists (use --overwrite to replace it)".into(),
                ))
            } else {
                None
            };
            claimed
                .entry(dest.clone())
                .or_insert_with(|| input.source.clone());
            Entry {
                input,
                dest,
                sha256: None,
                settled,
            }
        })
        .collect();

    entries.par_iter_mut().for_each(|e| {
        if e.settled.is_none() {
            match sha256_file(&e.input.source) {
                Ok(h) => e.sha256 = Some(h),
                Err(err) => e.settled = Some((Status::Failed, format!("cannot read: {err}"))),
            }
        }
        on_hashed();
    });

    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if let (None, Some(h)) = (&e.settled, &e.sha256) {
            match index.get(h.as_str()) {
                Some(&g) => groups[g].members.push(i),
                None => {
                    index.insert(h, groups.len());
                    groups.push(Group {
                        sha256: h.clone(),
                        members: vec![i],
                    });
                }
            }
        }
    }
    Plan { entries, groups }
}
