//! Batch colorizing: discover files ([`walk`]) -> hash and plan ([`plan`]) -> cache lookup,
//! lease, decode, infer, compose, write atomically ([`exec`]) -> report ([`report`]).
pub mod exec;
pub mod plan;
pub mod report;
pub mod walk;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::cache::{Cache, CacheKey, Lookup};
use crate::colorizer::Colorizer;

pub use plan::OutputFormat;
pub use report::{Record, Status, Summary};

/// Everything a batch run needs besides the model and the cache.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    pub output: PathBuf,
    pub format: OutputFormat,
    pub overwrite: bool,
    pub dry_run: bool,
    /// Images per forward pass.
    pub batch: usize,
    pub max_pixels: u64,
    /// Expiry of stored values (None: keep until evicted).
    pub cache_ttl: Option<Duration>,
    /// Read the cache, never write it (and take no leases).
    pub cache_readonly: bool,
    pub cache_prefix: String,
    /// How long an inference lease lasts; a holder that dies blocks others at most this long.
    pub lease_ttl: Duration,
    pub quiet: bool,
    /// Colorize photos that are already in colour (by default they are skipped).
    pub force: bool,
    /// JPEG quality of JPEG outputs (1-100).
    pub jpeg_quality: u8,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            output: PathBuf::from("colorized"),
            format: OutputFormat::Same,
            overwrite: false,
            dry_run: false,
            batch: 1,
            max_pixels: crate::imageio::DEFAULT_MAX_PIXELS,
            cache_ttl: None,
            cache_readonly: false,
            cache_prefix: crate::cache::key::DEFAULT_PREFIX.into(),
            lease_ttl: Duration::from_secs(120),
            quiet: false,
            force: false,
            jpeg_quality: crate::imageio::JPEG_QUALITY,
        }
    }
}

/// What a run did.
#[derive(Debug)]
pub struct Outcome {
    pub summary: Summary,
    /// One per input, in completion order.
    pub records: Vec<Record>,
}

/// Colorize everything `discovery` found. Failures are per file (in the records); the run
/// always completes.
pub fn run(
    colorizer: &Colorizer,
    cache: &dyn Cache,
    discovery: walk::Discovery,
    opts: &BatchOptions,
    sink: Option<&report::ReportSink>,
) -> Outcome {
    let started = Instant::now();
    let total = (discovery.inputs.len() + discovery.errors.len()) as u64;
    let progress = report::Progress::new(total, opts.quiet || opts.dry_run);
    let summary = Summary {
        files: total,
        cache: cache.describe(),
        ..Summary::default()
    };
    let shared = exec::Shared::new(summary, sink, &progress);
    for (path, err) in discovery.errors {
        shared.record(Record {
            path,
            sha256: None,
            status: Status::Failed,
            output: None,
            error: Some(err),
            millis: 0,
        });
    }
    let hashed = std::sync::atomic::AtomicU64::new(0);
    let plan = plan::plan(
        discovery.inputs,
        &opts.output,
        opts.format,
        opts.overwrite,
        &|| {
            hashed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        },
    );
    shared.summary().unique = plan.groups.len() as u64;
    let keys: Vec<CacheKey> = plan
        .groups
        .iter()
        .map(|g| cache_key(colorizer, &opts.cache_prefix, &g.sha256))
        .collect();

    if opts.dry_run {
        dry_run(cache, &plan, &keys, &shared);
    } else {
        for e in &plan.entries {
            if let Some((status, reason)) = &e.settled {
                shared.record(Record {
                    path: e.input.source.clone(),
                    sha256: e.sha256.clone(),
                    status: *status,
                    output: (*status == Status::Skipped).then(|| e.dest.clone()),
                    error: Some(reason.clone()),
                    millis: 0,
                });
            }
        }
        exec::Exec {
            colorizer,
            cache,
            opts,
            plan: &plan,
            keys,
            shared: &shared,
        }
        .run();
    }
    progress.finish();
    if let Some(sink) = sink {
        let _ = sink.flush();
    }
    let mut summary = shared.summary().clone();
    summary.elapsed = started.elapsed();
    let records = shared
        .records
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    Outcome { summary, records }
}

/// The cache key of an image for this model and size.
pub fn cache_key(colorizer: &Colorizer, prefix: &str, sha256: &str) -> CacheKey {
    CacheKey::new(
        prefix,
        &colorizer.model().identity()[..16],
        colorizer.size(),
        sha256,
    )
}

/// `--dry-run`: say what would happen to each input, write and infer nothing.
fn dry_run(cache: &dyn Cache, plan: &plan::Plan, keys: &[CacheKey], shared: &exec::Shared) {
    let mut cached = vec![false; plan.groups.len()];
    for (chunk_i, chunk) in keys.chunks(16).enumerate() {
        for (j, look) in cache.get_many(chunk).into_iter().enumerate() {
            let hit = matches!(look, Lookup::Hit(_));
            cached[chunk_i * 16 + j] = hit;
            let mut s = shared.summary();
            if hit {
                s.cache_hits += 1;
            } else {
                s.cache_misses += 1;
            }
        }
    }
    let mut lines: Vec<(usize, String)> = Vec::new();
    for (g, group) in plan.groups.iter().enumerate() {
        for (k, &m) in group.members.iter().enumerate() {
            let action = match (k, cached[g]) {
                (0, false) => "infer",
                (0, true) => "cache",
                _ => "duplicate",
            };
            let e = &plan.entries[m];
            lines.push((
                m,
                format!(
                    "{action}\t{}\t{}",
                    e.input.source.display(),
                    e.dest.display()
                ),
            ));
        }
    }
    for (m, e) in plan.entries.iter().enumerate() {
        if let Some((status, reason)) = &e.settled {
            let action = if *status == Status::Skipped {
                "skip"
            } else {
                "fail"
            };
            lines.push((
                m,
                format!("{action}\t{}\t{reason}", e.input.source.display()),
            ));
        }
    }
    lines.sort();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (_, l) in lines {
        let _ = writeln!(out, "{l}");
    }
}
