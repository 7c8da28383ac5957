//! What a run tells its user: one record per input (NDJSON with `--report`), a summary and
//! the progress bar on stderr (the Prometheus textfile, `--metrics-file`: [`super::metrics`]).
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::ProgressBar;
use serde_json::json;

/// The fate of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// The model ran on it in this process.
    Inferred,
    /// Its colours came from the cache (or from another process through the cache).
    Cached,
    /// A byte-identical copy of another input of this run: written from the same prediction.
    Duplicate,
    /// Not processed (its output exists, or it is not wanted); the reason says which.
    Skipped,
    /// Could not be processed; the error says why.
    Failed,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Inferred,
        Status::Cached,
        Status::Duplicate,
        Status::Skipped,
        Status::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Inferred => "inferred",
            Status::Cached => "cached",
            Status::Duplicate => "duplicate",
            Status::Skipped => "skipped",
            Status::Failed => "failed",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub path: PathBuf,
    /// The folder whose tree the output mirrors ([`super::walk::Input::root`]).
    pub root: Option<PathBuf>,
    pub sha256: Option<String>,
    pub status: Status,
    pub output: Option<PathBuf>,
    /// The error for `failed`, the reason for `skipped`.
    pub error: Option<String>,
    pub millis: u64,
}

impl Record {
    pub fn to_json(&self) -> String {
        self.to_json_with(None)
    }

    /// The NDJSON line, with the run's model and size when known (`model`, `size`).
    pub fn to_json_with(&self, run: Option<&RunInfo>) -> String {
        let mut v = json!({
            "path": self.path.to_string_lossy(),
            "sha256": self.sha256,
            "status": self.status.as_str(),
            "output": self.output.as_ref().map(|p| p.to_string_lossy()),
            "error": self.error,
            "ms": self.millis,
        });
        if let Some(map) = v.as_object_mut() {
            // a name that is not UTF-8 is shown lossily above (U+FFFD), and kept exactly here
            if let Some(hex) = bytes_hex_if_lossy(&self.path) {
                map.insert("path_bytes".into(), json!(hex));
            }
            if let Some(hex) = self.output.as_deref().and_then(bytes_hex_if_lossy) {
                map.insert("output_bytes".into(), json!(hex));
            }
        }
        if let (Some(run), Some(map)) = (run, v.as_object_mut()) {
            map.insert("model".into(), json!(run.model));
            map.insert("size".into(), json!(run.size));
            map.insert(
                "root".into(),
                json!(self.root.as_ref().map(|p| p.to_string_lossy())),
            );
            map.insert("cwd".into(), json!(run.cwd));
        }
        v.to_string()
    }
}

/// The bytes of a path that is not valid UTF-8, as lowercase hex (`None` for UTF-8 paths,
/// which JSON holds exactly): `bytes.fromhex(line["path_bytes"])` gives the name back.
fn bytes_hex_if_lossy(p: &Path) -> Option<String> {
    if p.to_str().is_some() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Some(crate::hash::hex(p.as_os_str().as_bytes()))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// What every line of a run's report says about the run: the model (its name, or the
/// checkpoint's file name), the size it saw and the folder it ran in, so that merged reports
/// of several runs (and the gallery) still tell them apart and find their files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    pub model: String,
    pub size: usize,
    /// The folder the run worked in (absolute): relative paths in the report are relative to
    /// it, so the gallery (and anyone) can find the files from elsewhere.
    pub cwd: Option<String>,
}

/// Counters for the summary and the metrics file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub files: u64,
    pub unique: u64,
    pub inferred: u64,
    pub cached: u64,
    pub duplicate: u64,
    pub skipped: u64,
    pub failed: u64,
    /// Model forward passes (batches) run.
    pub forward_passes: u64,
    /// Images whose colours came from the cache (each counted once, by how it was served).
    pub cache_hits: u64,
    /// Images the model ran on here (their lookup missed and no other process stored them).
    pub cache_misses: u64,
    /// Cache operations that failed because the backend did, all kinds together.
    pub cache_errors: u64,
    /// The same, by kind of operation.
    pub cache_errors_by: CacheErrorCounts,
    pub elapsed: Duration,
    pub cache: String,
    /// Notes for the summary (e.g. a format that drops bit depth), each said once.
    pub notes: Vec<String>,
    /// Files read and hashed (the rest got their hash from the index, or needed none).
    pub hashed: u64,
    /// Whether the weights were loaded (a run with nothing to infer never loads them).
    pub model_loaded: bool,
    /// Bytes of input files read (each file read once, unless the index gave its hash and it
    /// was read later to decode it).
    pub bytes_read: u64,
    /// The shard this run took, and how many inputs the walk found in all shards (`files` are
    /// this shard's).
    pub shard: Option<(super::shard::Shard, u64)>,
    /// Skipped inputs by reason (the reason's text up to its parenthesis: `output exists`).
    pub skips: std::collections::BTreeMap<String, u64>,
    /// Files inside folders that were not inputs, by why.
    pub left_out: std::collections::BTreeMap<super::walk::LeftOut, u64>,
    /// What a `--dry-run` would do.
    pub planned: Planned,
    /// The run was a `--dry-run`.
    pub dry_run: bool,
    /// Paths the walk found in all shards, inputs and unusable paths alike (0: the run had
    /// nothing at all to look at, e.g. an empty or unmounted folder).
    pub found: u64,
    /// A `--report` is written (the failure line points to it).
    pub has_report: bool,
}

/// A `--dry-run`'s plan for one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Infer,
    Cache,
    Duplicate,
}

impl Plan {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Infer => "infer",
            Self::Cache => "cache",
            Self::Duplicate => "duplicate",
        }
    }
}

/// What a `--dry-run` would do, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Planned {
    pub infer: u64,
    pub cache: u64,
    pub duplicate: u64,
}

impl Planned {
    pub fn add(&mut self, p: Plan) {
        match p {
            Plan::Infer => self.infer += 1,
            Plan::Cache => self.cache += 1,
            Plan::Duplicate => self.duplicate += 1,
        }
    }
}

/// `n thing` or `n things`.
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl super::walk::LeftOut {
    /// `n <what>` with why, for the summary.
    fn describe(self, n: u64) -> String {
        use super::walk::LeftOut as L;
        match self {
            L::Symlink => format!(
                "{} (not followed without -L)",
                plural(n, "symbolic link", "symbolic links")
            ),
            L::NotAFile => plural(
                n,
                "special file (not a regular file)",
                "special files (not regular files)",
            ),
            L::NotAnImage => format!(
                "{} (not .jpg, .png, .tif, .bmp or .webp)",
                plural(n, "file that is not an image", "files that are not images")
            ),
            L::NotIncluded => format!(
                "{} no --include glob matched (globs are case-sensitive)",
                plural(n, "file", "files")
            ),
            L::Excluded => format!("{} matched --exclude", plural(n, "file", "files")),
        }
    }
}

/// Failed cache operations by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheErrorCounts {
    /// Lookups (including those of images waiting for another process's value).
    pub get: u64,
    /// Stores of computed values.
    pub put: u64,
    /// Taking an inference lease.
    pub lease: u64,
    /// Releasing or renewing a lease.
    pub release: u64,
}

/// A kind of cache operation, for [`CacheErrorCounts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOp {
    Get,
    Put,
    Lease,
    Release,
}

impl CacheOp {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Put => "put",
            Self::Lease => "lease",
            Self::Release => "release",
        }
    }
}

impl CacheErrorCounts {
    pub fn add(&mut self, op: CacheOp, n: u64) {
        match op {
            CacheOp::Get => self.get += n,
            CacheOp::Put => self.put += n,
            CacheOp::Lease => self.lease += n,
            CacheOp::Release => self.release += n,
        }
    }

    pub fn total(&self) -> u64 {
        self.get + self.put + self.lease + self.release
    }

    pub(super) fn by_op(&self) -> [(CacheOp, u64); 4] {
        [
            (CacheOp::Get, self.get),
            (CacheOp::Put, self.put),
            (CacheOp::Lease, self.lease),
            (CacheOp::Release, self.release),
        ]
    }
}

impl Summary {
    /// An input counted as `was` turned out failed (its output never reached its reader).
    pub fn recount_as_failed(&mut self, was: Status) {
        let n = match was {
            Status::Inferred => &mut self.inferred,
            Status::Cached => &mut self.cached,
            Status::Duplicate => &mut self.duplicate,
            Status::Skipped => &mut self.skipped,
            Status::Failed => return,
        };
        *n = n.saturating_sub(1);
        self.failed += 1;
    }

    pub fn count(&mut self, s: Status) {
        match s {
            Status::Inferred => self.inferred += 1,
            Status::Cached => self.cached += 1,
            Status::Duplicate => self.duplicate += 1,
            Status::Skipped => self.skipped += 1,
            Status::Failed => self.failed += 1,
        }
    }

    pub fn by_status(&self, s: Status) -> u64 {
        match s {
            Status::Inferred => self.inferred,
            Status::Cached => self.cached,
            Status::Duplicate => self.duplicate,
            Status::Skipped => self.skipped,
            Status::Failed => self.failed,
        }
    }

    /// Cache hits over lookups, if any lookup was made.
    pub fn hit_rate(&self) -> Option<f64> {
        let n = self.cache_hits + self.cache_misses;
        (n > 0).then(|| self.cache_hits as f64 / n as f64)
    }

    /// The human summary printed at the end of a run.
    pub fn render(&self) -> String {
        let files = plural(self.files, "file", "files");
        let skipped = if self.skips.is_empty() {
            format!("{} skipped", self.skipped)
        } else {
            let why: Vec<String> = self.skips.iter().map(|(r, n)| format!("{n} {r}")).collect();
            format!("{} skipped ({})", self.skipped, why.join(", "))
        };
        let mut s = if self.dry_run {
            format!(
                "dry run: {files}, {} unique: would infer {}, take {} from the cache, write {} \
                 duplicate{}; {skipped}, {} failed",
                self.unique,
                self.planned.infer,
                self.planned.cache,
                self.planned.duplicate,
                if self.planned.duplicate == 1 { "" } else { "s" },
                self.failed
            )
        } else {
            let errors = if self.cache_errors == 0 {
                "0 errors".to_owned()
            } else {
                let kinds: Vec<String> = self
                    .cache_errors_by
                    .by_op()
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(op, n)| format!("{} {n}", op.as_str()))
                    .collect();
                format!("{} errors: {}", self.cache_errors, kinds.join(", "))
            };
            let lookups = self.cache_hits + self.cache_misses;
            let hits = match self.hit_rate() {
                Some(r) => format!(
                    "{} of {} served from it ({:.1}%)",
                    self.cache_hits,
                    plural(lookups, "image", "images"),
                    r * 100.0
                ),
                None => "no image looked up".to_owned(),
            };
            format!(
                "{files}, {} unique: {} inferred, {} cached, {} duplicate, {skipped}, {} failed\n\
                 cache {}: {hits}, {errors}; {}; {:.1} s",
                self.unique,
                self.inferred,
                self.cached,
                self.duplicate,
                self.failed,
                self.cache,
                plural(self.forward_passes, "forward pass", "forward passes"),
                self.elapsed.as_secs_f64()
            )
        };
        if self.failed > 0 {
            s.push_str(&format!(
                "\n{} failed: {} say why",
                plural(self.failed, "file", "files"),
                if self.has_report {
                    "the messages above, and `\"status\":\"failed\"` lines in the report,"
                } else {
                    "the messages above"
                }
            ));
        }
        if !self.left_out.is_empty() {
            let why: Vec<String> = self.left_out.iter().map(|(k, n)| k.describe(*n)).collect();
            s.push_str(&format!("\nleft out: {}", why.join("; ")));
        }
        if self.files == 0 {
            s.push_str(if self.found == 0 && self.left_out.is_empty() {
                "\nnothing to colorize: no file at all was found in the paths given (an empty \
                 or unmounted folder?)"
            } else if self.left_out.is_empty() {
                "\nnothing to colorize: no image file was found in the paths given"
            } else {
                "\nnothing to colorize: every file found was left out (see above)"
            });
        }
        if let Some((shard, total)) = self.shard {
            s.push_str(&format!("\nshard {shard}: {} of {total} files", self.files));
        }
        for n in &self.notes {
            s.push_str("\nnote: ");
            s.push_str(n);
        }
        s
    }
}

/// Where NDJSON records go: each record reaches the file as one whole line the moment it is
/// made (no buffer in between), so after a crash or `kill -9` the report lists every output
/// that exists.
pub struct ReportSink {
    out: Mutex<Box<dyn Write + Send>>,
    run: Option<RunInfo>,
    /// Records kept back until [`ReportSink::release`] (`--output -`: an image is done only
    /// once it reached standard output).
    held: Option<Mutex<Vec<Record>>>,
}

impl ReportSink {
    /// `-` is standard output; anything else a file (created or truncated, its folder
    /// created as the output folder is: `/var/log/ddcolor/last.ndjson` on a first run).
    pub fn open(target: &Path) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = if target == Path::new("-") {
            Box::new(std::io::stdout())
        } else {
            if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            Box::new(std::fs::File::create(target)?)
        };
        Ok(Self {
            out: Mutex::new(out),
            run: None,
            held: None,
        })
    }

    /// Keep records back until [`ReportSink::release`] says whether the output was delivered.
    pub fn held(mut self) -> Self {
        self.held = Some(Mutex::new(Vec::new()));
        self
    }

    /// Write the records kept back; with `undelivered`, each that was to be delivered (it has
    /// an output) becomes a failure with that reason. Returns the statuses so changed.
    pub fn release(&self, undelivered: Option<&str>) -> (Vec<Status>, std::io::Result<()>) {
        let Some(held) = &self.held else {
            return (Vec::new(), Ok(()));
        };
        let records = std::mem::take(&mut *crate::sync::lock(held));
        let mut changed = Vec::new();
        let mut result = Ok(());
        for mut r in records {
            if let (Some(why), Some(_)) = (undelivered, &r.output) {
                changed.push(r.status);
                r.status = Status::Failed;
                r.output = None;
                r.error = Some(why.to_owned());
            }
            if result.is_ok() {
                result = self.write_now(&r);
            }
        }
        (changed, result)
    }

    /// Add the run's model and size to every line.
    pub fn with_run(mut self, run: RunInfo) -> Self {
        self.run = Some(run);
        self
    }

    pub fn write(&self, r: &Record) -> std::io::Result<()> {
        if let Some(held) = &self.held {
            crate::sync::lock(held).push(r.clone());
            return Ok(());
        }
        self.write_now(r)
    }

    fn write_now(&self, r: &Record) -> std::io::Result<()> {
        let mut line = r.to_json_with(self.run.as_ref());
        line.push('\n');
        let mut out = crate::sync::lock(&self.out);
        out.write_all(line.as_bytes())?;
        out.flush()
    }

    pub fn flush(&self) -> std::io::Result<()> {
        crate::sync::lock(&self.out).flush()
    }
}

/// The progress bar: files found so far, hashed, cached, inferred, written and failed; once
/// the walk is over, a bar with the rate and an ETA. On stderr only when it is a terminal.
pub struct Progress {
    bar: ProgressBar,
}

use crate::progress::{stderr_bar, style};

/// What the progress line shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub found: u64,
    pub hashed: u64,
    pub bytes_read: u64,
    pub cached: u64,
    pub inferred: u64,
    pub written: u64,
    pub failed: u64,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        let bar = stderr_bar(None, quiet);
        // the counts are the last part and cut to the terminal's width: the line never wraps
        // (a wrapped line is drawn again below itself on every tick)
        bar.set_style(style("{spinner} [{elapsed_precise}] {wide_msg}"));
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar }
    }

    /// The walk is over: `total` inputs. From now on a bar with rate and ETA.
    pub fn walk_done(&self, total: u64) {
        self.bar.set_length(total);
        self.bar.set_style(style(
            "{spinner} [{elapsed_precise}] {bar:16} {pos}/{len} ETA {eta} {wide_msg}",
        ));
    }

    pub fn update(&self, c: &Counts) {
        self.bar.set_message(format!(
            "{} found, {} hashed, {} cached, {} inferred, {} written, {} failed",
            c.found, c.hashed, c.cached, c.inferred, c.written, c.failed
        ));
    }

    /// One input settled.
    pub fn inc(&self) {
        self.bar.inc(1);
    }

    /// Print a line above the bar (or plainly when the bar is hidden).
    pub fn println(&self, line: &str) {
        if self.bar.is_hidden() {
            crate::say!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
