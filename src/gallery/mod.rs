//! `ddcolor gallery`: a static review page from run reports. One self-contained folder (an
//! `index.html` with its data inline, and `thumbs/`) that opens from a USB stick with no
//! server and no network: per image the original and the output side by side, the status,
//! model, size and time, the reason of a failure or skip; filters by status and folder,
//! keyboard navigation, and flags that become a `--files-from` list for the rerun. Pages of
//! [`PAGE_SIZE`] cards and lazily loaded thumbnails keep it usable at 10,000 images.
//!
//! Thumbnails (JPEG, long side [`GalleryOptions::thumb_side`]) are made in parallel from the
//! sources and outputs the reports name, through the same decoder as `colorize` (16-bit scans,
//! TIFF, EXIF orientation); one that is newer than its image is kept.
use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::{Component, Path, PathBuf};

use rayon::prelude::*;
use serde_json::{json, Value};

use crate::imageio;

mod html;

/// Cards per page.
pub const PAGE_SIZE: usize = 48;

/// One input, as the last report line about it says.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The input as the report names it (relative to `cwd`, or absolute).
    pub path: String,
    pub status: String,
    pub output: Option<String>,
    pub error: Option<String>,
    pub ms: Option<u64>,
    pub model: Option<String>,
    pub size: Option<u64>,
    /// The folder whose tree the output mirrors (see `colorize --report`).
    pub root: Option<String>,
    /// The folder `colorize` ran in: relative paths are relative to it.
    pub cwd: Option<String>,
}

impl Entry {
    /// The input's file, found from any folder: relative to the run's folder when the report
    /// says which (reports of older versions: relative to this process's folder).
    pub fn source(&self) -> PathBuf {
        self.resolve(&self.path)
    }

    /// The output's file, found from any folder.
    pub fn output_file(&self) -> Option<PathBuf> {
        self.output.as_deref().map(|o| self.resolve(o))
    }

    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        match &self.cwd {
            Some(cwd) if p.is_relative() => normalise(&Path::new(cwd).join(p)),
            _ => normalise(p),
        }
    }

    /// The `--files-from` line that reruns this input into the same output:
    /// `ROOT/./RELATIVE` (rsync's marker), absolute when the run's folder is known.
    pub fn rerun_line(&self) -> Option<String> {
        let root = self.root.as_deref()?;
        let relative = Path::new(&self.path).strip_prefix(root).ok()?;
        let root = self.resolve(root);
        Some(format!(
            "{}/./{}",
            root.to_string_lossy().trim_end_matches('/'),
            relative.to_string_lossy()
        ))
    }

    /// A `skipped` line because the output was already there: it says nothing new about an
    /// image an earlier line (a run that wrote it) describes. Such a line names the output
    /// that exists; the other skips (already colour) name none (so the report's wording of
    /// the reason is not read).
    fn output_was_there(&self) -> bool {
        self.status == "skipped" && self.output.is_some()
    }
}

/// `p` without `.` and with each `..` taken back where it can be (the file need not exist).
fn normalise(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            c => out.push(c),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Read NDJSON reports (`colorize --report`), in order: the last line about an input wins (a
/// rerun, a requeued task's second attempt), except that a line that only says its output was
/// already there does not hide what an earlier line said about that output. Inputs are told
/// apart by their files, so reports written from different folders merge. Lines that are not
/// report lines are counted and skipped.
pub fn read_reports(paths: &[PathBuf]) -> Result<(Vec<Entry>, usize), String> {
    let mut order: Vec<PathBuf> = Vec::new();
    let mut last: HashMap<PathBuf, Entry> = HashMap::new();
    let mut bad = 0;
    for p in paths {
        let f = std::fs::File::open(p)
            .map_err(|e| format!("cannot read the report {}: {e}", crate::text::shown(p)))?;
        for line in std::io::BufReader::new(f).lines() {
            let line =
                line.map_err(|e| format!("cannot read the report {}: {e}", crate::text::shown(p)))?;
            if line.trim().is_empty() {
                continue;
            }
            let Some(e) = serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| entry(&v))
            else {
                bad += 1;
                continue;
            };
            let key = if e.path == "-" {
                PathBuf::from(format!("-\0{}", order.len()))
            } else {
                e.source()
            };
            match last.get(&key) {
                None => order.push(key.clone()),
                Some(old)
                    if e.output_was_there()
                        && old.status != "failed"
                        && old.output_file().is_some()
                        && old.output_file() == e.output_file() =>
                {
                    continue
                }
                Some(_) => {}
            }
            last.insert(key, e);
        }
    }
    let entries = order.into_iter().filter_map(|p| last.remove(&p)).collect();
    Ok((entries, bad))
}

fn entry(v: &Value) -> Option<Entry> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    Some(Entry {
        path: s("path")?,
        status: s("status")?,
        output: s("output"),
        error: s("error"),
        ms: v.get("ms").and_then(Value::as_u64),
        model: s("model"),
        size: v.get("size").and_then(Value::as_u64),
        root: s("root"),
        cwd: s("cwd"),
    })
}

#[derive(Debug, Clone)]
pub struct GalleryOptions {
    pub title: String,
    /// Long side of the thumbnails, in pixels.
    pub thumb_side: u32,
    /// Images that may be decoded at once for thumbnails (bounded by `max_pixels`).
    pub max_pixels: u64,
}

/// What [`build`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GalleryStats {
    pub images: usize,
    pub thumbnails: usize,
    pub reused: usize,
    /// Sources or outputs named in the reports that are not there (moved, deleted, or the
    /// report is older than `cwd` in reports and was written elsewhere), each with where it was
    /// looked for.
    pub missing: Vec<PathBuf>,
    /// Sources or outputs that are there but could not be decoded (a damaged input, which
    /// the report says failed), with why.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// Why a thumbnail could not be made.
enum ThumbError {
    NotFound,
    Unreadable(String),
}

/// Write `out/index.html` and `out/thumbs/` for `entries`.
pub fn build(entries: &[Entry], out: &Path, opts: &GalleryOptions) -> Result<GalleryStats, String> {
    let thumbs = out.join("thumbs");
    std::fs::create_dir_all(&thumbs)
        .map_err(|e| format!("cannot create {}: {e}", crate::text::shown(&thumbs)))?;
    // (source image, thumbnail name) for every side the report names
    let jobs: Vec<(PathBuf, String)> = entries
        .iter()
        .flat_map(|e| {
            let [before_name, after_name] = thumb_names(&e.source());
            let before = (e.path != "-").then(|| (e.source(), before_name));
            let after = e
                .output
                .as_deref()
                .filter(|o| *o != "-")
                .and_then(|_| e.output_file())
                .map(|o| (o, after_name));
            [before, after].into_iter().flatten()
        })
        .collect();
    let made: Vec<(String, PathBuf, Result<bool, ThumbError>)> = jobs
        .par_iter()
        .map(|(src, name)| {
            let r = thumbnail(src, &thumbs.join(name), opts);
            (name.clone(), src.clone(), r)
        })
        .collect();
    let mut stats = GalleryStats {
        images: entries.len(),
        ..Default::default()
    };
    let mut ok: HashSet<String> = HashSet::new();
    let mut why: HashMap<String, String> = HashMap::new();
    for (name, src, r) in made {
        match r {
            Ok(fresh) => {
                if fresh {
                    stats.thumbnails += 1;
                } else {
                    stats.reused += 1;
                }
                ok.insert(name);
            }
            Err(ThumbError::NotFound) => {
                why.insert(name, format!("not found: {}", crate::text::shown(&src)));
                stats.missing.push(src);
            }
            Err(ThumbError::Unreadable(e)) => {
                why.insert(name, format!("cannot be shown: {e}"));
                stats.unreadable.push((src, e));
            }
        }
    }
    // in path order, as an archivist browses folders
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let items: Vec<Value> = sorted
        .iter()
        .map(|e| {
            let key = e.source();
            let [before, after] = thumb_names(&key);
            let shown = |name: &String| ok.contains(name).then(|| format!("thumbs/{name}"));
            let folder = Path::new(&e.path)
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            json!({
                "key": key.to_string_lossy(),
                "path": e.path,
                "folder": folder,
                "status": e.status,
                "output": e.output,
                "error": e.error,
                "ms": e.ms,
                "model": e.model,
                "size": e.size,
                "before": shown(&before),
                "after": shown(&after),
                "before_why": why.get(&before),
                "after_why": why.get(&after),
                "rerun": e.rerun_line(),
            })
        })
        .collect();
    // flags are kept per gallery (every file:// page shares one browser storage)
    let id = crate::hash::hex(&crate::batch::read::sha256(
        items
            .iter()
            .filter_map(|i| i["key"].as_str())
            .collect::<Vec<_>>()
            .join("\n")
            .as_bytes(),
    ));
    let data = json!({
        "title": opts.title,
        "id": &id[..16],
        "page_size": PAGE_SIZE,
        "items": items,
    });
    let template = include_str!("page.html");
    let html = html::fill(
        template,
        &[
            ("CSP", &html::text(&html::content_security_policy(template))),
            ("TITLE", &html::text(&opts.title)),
            ("DATA", &html::json_for_script(&data)),
        ],
    );
    let index = out.join("index.html");
    imageio::write_atomic(&index, |w| {
        w.write_all(html.as_bytes())
            .map_err(|e| crate::error::Error::Write {
                path: index.clone(),
                reason: e.to_string(),
            })
    })
    .map_err(|e| e.to_string())?;
    Ok(stats)
}

/// The thumbnail file names of an input and of its output, from a digest of the input's path.
fn thumb_names(path: &Path) -> [String; 2] {
    let key = crate::hash::hex(&crate::batch::read::sha256(
        path.to_string_lossy().as_bytes(),
    ));
    let key = &key[..20];
    [format!("{key}-before.jpg"), format!("{key}-after.jpg")]
}

/// A JPEG thumbnail of `src` at `dest`; `Ok(false)` when `dest` is already newer than `src`.
fn thumbnail(src: &Path, dest: &Path, opts: &GalleryOptions) -> Result<bool, ThumbError> {
    let src_time = match std::fs::metadata(src).and_then(|m| m.modified()) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ThumbError::NotFound),
        Err(e) => return Err(ThumbError::Unreadable(e.to_string())),
    };
    if let Ok(t) = std::fs::metadata(dest).and_then(|m| m.modified()) {
        if t >= src_time {
            return Ok(false);
        }
    }
    let unreadable = |e: &dyn std::fmt::Display| ThumbError::Unreadable(e.to_string());
    let img = imageio::decode(src, opts.max_pixels).map_err(|e| unreadable(&e))?;
    let (w, h) = (img.width(), img.height());
    let side = opts.thumb_side.max(16);
    let scale = (side as f64 / w.max(h) as f64).min(1.0);
    let (tw, th) = (
        ((w as f64 * scale).round() as u32).max(1),
        ((h as f64 * scale).round() as u32).max(1),
    );
    // 8-bit RGB for the browser (16-bit scans and gray images alike)
    let rgb = img.to_rgb8();
    let small = if (tw, th) == (w, h) {
        rgb
    } else {
        image::imageops::resize(&rgb, tw, th, image::imageops::FilterType::Triangle)
    };
    imageio::save_with(
        &image::DynamicImage::ImageRgb8(small),
        dest,
        None,
        &imageio::Encoding::jpeg(85),
    )
    .map_err(|e| unreadable(&e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_about_a_path_wins_and_junk_is_counted() {
        let dir = std::env::temp_dir().join(format!("ddcolor-gallery-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.ndjson"), dir.join("b.ndjson"));
        std::fs::write(
            &a,
            "{\"path\":\"x.jpg\",\"status\":\"failed\",\"error\":\"boom\",\"ms\":1}\n\
             not json\n{\"path\":\"y.jpg\",\"status\":\"inferred\",\"output\":\"o/y.jpg\"}\n",
        )
        .unwrap();
        std::fs::write(
            &b,
            "{\"path\":\"x.jpg\",\"status\":\"cached\",\"output\":\"o/x.jpg\",\"model\":\"paper\",\"size\":512}\n",
        )
        .unwrap();
        let (entries, bad) = read_reports(&[a, b]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(bad, 1);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].path, "x.jpg");
        assert_eq!(entries[0].status, "cached");
        assert_eq!(entries[0].model.as_deref(), Some("paper"));
        assert_eq!(entries[0].size, Some(512));
        assert_eq!(entries[1].output.as_deref(), Some("o/y.jpg"));
    }
}
