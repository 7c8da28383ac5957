//! What the stages of a run share: the image in flight ([`Item`], then [`Job`]), the slots
//! that bound how many are in flight, and [`Shared`]: what the run reads (options, cache,
//! model, index), what it counts and tells (counters, the durable report, warnings said once),
//! what stops it (the fatal error), and what coordinates the images in flight (leases, the
//! dedup map, slots, queues).
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crossbeam_channel::Sender;

use super::dedup::Dedup;
use super::index::Index;
use super::lease::Leases;
use super::model::LazyModel;
use super::options::BatchOptions;
use super::report::{CacheOp, Counts, Progress, Record, ReportSink, Status, Summary};
use super::walk::Input;
use crate::cache::{value, Cache, CacheKey, Lease};
use crate::error::Error;
use crate::meta::Metadata;
use crate::pipeline::{Keep, Prepared};

/// One input on its way through the stages.
pub(crate) struct Item {
    pub input: Input,
    pub dest: PathBuf,
    pub started: Instant,
    pub sha: Option<[u8; 32]>,
    /// The file's bytes, once read (read once: hashed and decoded from this buffer).
    pub bytes: Option<Vec<u8>>,
    /// Holds the in-run dedup slot of its hash.
    pub primary: bool,
    /// Its hash was seen before in this run: served from the cache it is a `duplicate`.
    pub dup: bool,
    /// The prediction, when the cache (or another process through it) had it.
    pub cached: Option<Vec<f32>>,
    pub lease: Option<Lease>,
    /// Its place among the images in flight, held from the read of its bytes until it is
    /// written or settled.
    pub slot: Option<Slot>,
    /// Counts it as open in the prep stage while it is there (in a queue, a worker or the
    /// poller); taken and dropped when it is passed on to inference or the writer.
    pub open: Option<Open>,
}

impl Item {
    pub fn new(input: Input, dest: PathBuf, open: Open) -> Self {
        Self {
            open: Some(open),
            input,
            dest,
            started: Instant::now(),
            sha: None,
            bytes: None,
            primary: false,
            dup: false,
            cached: None,
            lease: None,
            slot: None,
        }
    }

    pub fn sha_hex(&self) -> Option<String> {
        self.sha.as_ref().map(|h| crate::hash::hex(h))
    }
}

/// An input open in the prep stage, for as long as this guard lives: it is counted (the
/// poller's "all that will wait are here"), and it keeps the run's end from being seen. The
/// prep workers and the poller end when the channel that every guard and the walker hold a
/// sender of is closed: the walk is over and no input is left in the prep stage (no count
/// kept by hand, no polling for the end).
pub(crate) struct Open {
    count: Arc<AtomicUsize>,
    _alive: Sender<Never>,
}

/// What the liveness channel carries: nothing, ever (only its closing is news).
pub(crate) enum Never {}

impl Open {
    /// The first guard of an input, from the walker's liveness sender.
    pub fn new(count: &Arc<AtomicUsize>, alive: &Sender<Never>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self {
            count: count.clone(),
            _alive: alive.clone(),
        }
    }
}

impl Clone for Open {
    fn clone(&self) -> Self {
        self.count.fetch_add(1, Ordering::SeqCst);
        Self {
            count: self.count.clone(),
            _alive: self._alive.clone(),
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The images in flight between the read of their bytes and their output: a bound on memory
/// (a few files, however large), and on how far reading runs ahead of writing (the first
/// output of a folder of large scans comes after a few of them are read, not all).
pub(crate) struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Slots {
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new(n.max(1)),
            freed: Condvar::new(),
        })
    }

    /// Wait for a free slot.
    pub fn take(self: &Arc<Self>) -> Slot {
        let mut free = crate::sync::lock(&self.free);
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Slot(self.clone())
    }
}

/// A taken slot, given back when dropped.
pub(crate) struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        *crate::sync::lock(&self.0.free) += 1;
        self.0.freed.notify_one();
    }
}

/// What the output keeps of its source besides L: depth, alpha, metadata.
#[derive(Default)]
pub(crate) struct Carry {
    pub keep: Keep,
    pub meta: Metadata,
}

/// A decoded image ready for the model (or, cached, for the writer).
pub(crate) struct Job {
    pub item: Item,
    pub prepared: Prepared,
    pub carry: Carry,
    /// The prediction: from the cache, or filled in by inference.
    pub ab: Option<Vec<f32>>,
    pub status: Status,
}

/// The outcome of inference for one job, on its way to the writer.
pub(crate) type Ready = (Job, Result<(), String>);

/// What every stage of a run shares, in four parts: what it reads ([`Context`]), what it
/// counts and tells ([`Tally`]), what stops it ([`Stop`]) and what coordinates the images in
/// flight ([`Flight`]).
pub(crate) struct Shared<'a> {
    pub ctx: Context<'a>,
    pub tally: Tally<'a>,
    pub stop: Stop,
    pub flight: Flight<'a>,
}

/// What the stages read and never change: the options, the cache, the model, the index.
pub(crate) struct Context<'a> {
    pub opts: &'a BatchOptions,
    pub cache: &'a dyn Cache,
    pub model: &'a LazyModel,
    pub index: &'a Index,
}

/// What the run counts and tells: the progress line and its counts, the summary, the durable
/// report, the warnings and notes said once.
pub(crate) struct Tally<'a> {
    pub progress: Progress,
    pub(super) sink: Option<&'a ReportSink>,
    pub(super) summary: Mutex<Summary>,
    pub(super) counts: Mutex<Counts>,
    warned: Mutex<HashSet<String>>,
    /// The cache was seen [`crate::cache::Cache::down`] (acted on once).
    cache_down: AtomicBool,
}

/// What stops the run: the first fatal error (what `run` returns) and the flag every stage
/// checks.
#[derive(Default)]
pub(crate) struct Stop {
    fatal: Mutex<Option<Error>>,
    aborted: AtomicBool,
}

/// The images in flight and what coordinates them: the leases held, the dedup map, the slots,
/// the queues that hand work back to the prep workers, and how many inputs are open there.
pub(crate) struct Flight<'a> {
    pub leases: Leases<'a>,
    pub dedup: Dedup,
    pub slots: Arc<Slots>,
    /// Items handed to the prep workers and not yet passed on to inference or the writer, nor
    /// settled: in the work and retry queues, in a worker, or waiting in the poller; kept by
    /// their [`Open`] guards.
    pub open: Arc<AtomicUsize>,
    pub walk_done: AtomicBool,
    /// Work handed back by the poller or by a worker (files changed under the run).
    retry: Sender<Item>,
    /// Images another process is inferring, for the poller.
    defer: Sender<Item>,
}

impl Context<'_> {
    /// The cache key of an image (loads the model if its identity is not known yet).
    pub fn key(&self, sha: &[u8; 32]) -> Result<(CacheKey, usize), Error> {
        let (id, channels) = self.model.identity(self.index)?;
        // the model's input depends on how L is computed: OpenCV's way is another input
        let model_id = match self.model.lab() {
            crate::pipeline::LabFlavour::Exact => id[..16].to_owned(),
            crate::pipeline::LabFlavour::OpenCv => format!("{}-cv", &id[..16]),
        };
        let key = CacheKey::new(
            &self.opts.cache_prefix,
            &model_id,
            self.model.size(),
            &crate::hash::hex(sha),
        );
        Ok((key, channels))
    }

    /// A stored value as a prediction, if it is intact.
    pub fn decode_value(&self, bytes: &[u8], channels: usize) -> Option<Vec<f32>> {
        value::decode(bytes, self.model.size(), channels)
    }

    /// A `--dry-run` line on stdout.
    pub fn dry_line(&self, line: &str) {
        if self.opts.dry_run {
            // a reader that went away loses the preview, not the run
            let _ = crate::say::out_line(line);
        }
    }
}

impl<'a> Tally<'a> {
    pub fn new(progress: Progress, sink: Option<&'a ReportSink>, summary: Summary) -> Self {
        Self {
            progress,
            sink,
            summary: Mutex::new(summary),
            counts: Mutex::new(Counts::default()),
            warned: Mutex::new(HashSet::new()),
            cache_down: AtomicBool::new(false),
        }
    }

    pub fn summary(&self) -> std::sync::MutexGuard<'_, Summary> {
        crate::sync::lock(&self.summary)
    }

    pub fn counts(&self, f: impl FnOnce(&mut Counts)) {
        let mut c = crate::sync::lock(&self.counts);
        f(&mut c);
        self.progress.update(&c);
    }

    /// Print a warning the first time its `kind` comes up.
    pub fn warn_once(&self, kind: &str, msg: impl FnOnce() -> String) {
        let first = crate::sync::lock(&self.warned).insert(kind.to_owned());
        if first {
            self.progress.println(&format!(
                "ddcolor: warning: {}",
                crate::text::escape_controls(&msg())
            ));
        }
    }

    /// Add a note to the summary, once.
    pub fn note_once(&self, note: &str) {
        let mut s = self.summary();
        if !s.notes.iter().any(|n| n == note) {
            s.notes.push(note.to_owned());
        }
    }

    /// Count a failed cache operation by kind.
    fn cache_error(&self, op: CacheOp) {
        let mut s = self.summary();
        s.cache_errors += 1;
        s.cache_errors_by.add(op, 1);
    }

    /// Count one settled input, print it if it failed, and append its line to the report.
    fn record(&self, r: &Record) {
        if r.status == Status::Failed {
            self.progress.println(&format!(
                "ddcolor: error: {}: {}",
                crate::text::shown(&r.path),
                crate::text::escape_controls(r.error.as_deref().unwrap_or("failed"))
            ));
        }
        if let Some(sink) = self.sink {
            if let Err(e) = sink.write(r) {
                self.warn_once("report", || format!("cannot write the report: {e}"));
            }
        }
        {
            // each image counts once, by how it was finally served: its colours came from the
            // cache (a hit, whoever stored them) or from the model here (a miss)
            let mut s = self.summary();
            s.count(r.status);
            match r.status {
                Status::Cached => s.cache_hits += 1,
                Status::Inferred => s.cache_misses += 1,
                Status::Skipped => {
                    let reason = r.error.as_deref().unwrap_or("skipped");
                    let short = reason.split(" (").next().unwrap_or(reason).trim();
                    *s.skips.entry(short.to_owned()).or_default() += 1;
                }
                _ => {}
            }
        }
        self.counts(|c| match r.status {
            Status::Failed => c.failed += 1,
            Status::Inferred => {
                c.inferred += 1;
                c.written += 1
            }
            Status::Cached => {
                c.cached += 1;
                c.written += 1
            }
            Status::Duplicate => c.written += 1,
            Status::Skipped => {}
        });
        self.progress.inc();
    }
}

impl Stop {
    /// Stop the run: `e` is what `run` returns (the first one, if several come).
    pub fn abort(&self, e: Error) {
        let mut f = crate::sync::lock(&self.fatal);
        if f.is_none() {
            *f = Some(e);
        }
        self.aborted.store(true, Ordering::SeqCst);
    }

    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    /// The error that stopped the run, if one did.
    pub fn take_fatal(&self) -> Option<Error> {
        crate::sync::lock(&self.fatal).take()
    }
}

impl<'a> Flight<'a> {
    pub fn new(
        leases: Leases<'a>,
        slots: Arc<Slots>,
        retry: Sender<Item>,
        defer: Sender<Item>,
    ) -> Self {
        Self {
            leases,
            dedup: Dedup::default(),
            slots,
            open: Arc::new(AtomicUsize::new(0)),
            walk_done: AtomicBool::new(false),
            retry,
            defer,
        }
    }

    /// Hand an item back to the prep workers (open, by its guard, until they are done with
    /// it).
    pub fn hand_back(&self, item: Item) {
        let _ = self.retry.send(item);
    }

    /// Hand an item to the poller: another process holds its lease.
    pub fn defer(&self, item: Item) {
        let _ = self.defer.send(item);
    }
}

impl Shared<'_> {
    /// A cache operation failed: count it by kind, warn once per kind, and with
    /// `--require-cache` stop the run (exit 3): the cache must answer, and take writes unless
    /// `--cache-readonly`, for the whole run.
    pub fn cache_error(&self, op: CacheOp, what: impl FnOnce() -> String) {
        self.tally.cache_error(op);
        let msg = what();
        if self.ctx.cache.required() {
            self.stop.abort(Error::CacheUnreachable(format!(
                "{msg}; the run stopped (--require-cache): the outputs written so far are in \
                 place and in the report"
            )));
        } else {
            self.tally
                .warn_once(&format!("cache-{}", op.as_str()), || msg);
        }
    }

    /// Notice a cache that stopped answering mid-run (once): with `--require-cache` the run
    /// stops (exit 3), otherwise a warning (the cache switched to its fallback, or fails fast).
    pub fn check_cache(&self) {
        if self.tally.cache_down.load(Ordering::Relaxed) {
            return;
        }
        let Some(why) = self.ctx.cache.down() else {
            return;
        };
        if self.tally.cache_down.swap(true, Ordering::SeqCst) {
            return;
        }
        if self.ctx.cache.required() {
            self.stop.abort(Error::CacheUnreachable(format!(
                "{why}; the run stopped (--require-cache): the outputs written so far are in \
                 place and in the report"
            )));
        } else {
            self.tally.warn_once("cache-down", || {
                format!("the cache stopped answering mid-run: {why}")
            });
            self.tally
                .note_once("the cache went down mid-run; see the warning above");
        }
    }

    /// Settle one input: count it, print failures, and append its line to the report.
    pub fn record(&self, r: Record) {
        self.check_cache();
        self.tally.record(&self.ctx.opts.stdio.apply(r));
    }

    /// Settle `item` without an output.
    pub fn settle(&self, item: &Item, status: Status, reason: &str) {
        self.record(Record {
            path: item.input.source.clone(),
            root: item.input.root(),
            sha256: item.sha_hex(),
            status,
            output: None,
            error: Some(reason.to_owned()),
            millis: item.started.elapsed().as_millis() as u64,
        });
    }

    /// Release a lease; a failure is a warning (the lease expires on its own).
    pub fn release(&self, lease: Option<Lease>) {
        if let Some(lease) = lease {
            if let Err(e) = self.flight.leases.release(&lease) {
                self.cache_error(CacheOp::Release, || {
                    format!("cannot release an inference lease ({e})")
                });
            }
        }
    }
}
