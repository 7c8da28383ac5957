//! What the stages of a run share ([`Shared`]): what the run reads (options, cache, model,
//! index), what it counts and tells (counters, the durable report, warnings said once), what
//! stops it (the fatal error), and what coordinates the images in flight (leases, the dedup
//! map, slots, the queues back to the prep workers). The images themselves are in
//! [`super::stage`].
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::Sender;

use super::dedup::Dedup;
use super::index::Index;
use super::lease::Leases;
use super::model::LazyModel;
use super::options::BatchOptions;
use super::report::{CacheOp, Counts, Progress, Record, ReportSink, Status, Summary};
use super::stage::{Entry, Image, Role, Slots, Waiting, Work};
use crate::cache::{value, Cache, CacheKey, Lease};
use crate::error::Error;

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
    /// The in-run dedup map: primaries in flight, with the copies waiting for them.
    pub dedup: Dedup<Entry>,
    pub slots: Arc<Slots>,
    /// Inputs handed to the prep workers and not yet passed on to inference or the writer, nor
    /// settled: in the work and retry queues, in a worker, or waiting in the poller; kept by
    /// their [`super::stage::Open`] guards.
    pub open: Arc<AtomicUsize>,
    pub walk_done: AtomicBool,
    /// Work handed back by the poller or by a worker (files changed under the run).
    retry: Sender<Work>,
    /// Images another process is inferring, for the poller.
    defer: Sender<Waiting>,
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
        retry: Sender<Work>,
        defer: Sender<Waiting>,
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

    /// Hand work back to the prep workers (open, by its guard, until they are done with it).
    pub fn hand_back(&self, work: Work) {
        let _ = self.retry.send(work);
    }

    /// Hand an image to the poller: another process holds its lease.
    pub fn defer(&self, waiting: Waiting) {
        let _ = self.defer.send(waiting);
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

    /// Settle `entry` without an output.
    pub fn settle(&self, entry: &Entry, sha: Option<&[u8; 32]>, status: Status, reason: &str) {
        self.record(entry.record(sha, status, None, Some(reason.to_owned())));
    }

    /// Settle `image` and the copies waiting for it without an output.
    pub fn settle_all(&self, image: &Image, status: Status, reason: &str) {
        self.settle(&image.entry, Some(&image.sha), status, reason);
        if image.role == Role::Primary {
            for w in self.flight.dedup.finish(&image.sha, None) {
                self.settle(&w, Some(&image.sha), status, reason);
            }
        }
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
