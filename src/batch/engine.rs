//! The stages of a batch run and the channels between them:
//! - the *walker* thread streams inputs, decides each destination (skip checks need no read)
//!   and hands the rest on (bounded: it runs at most a few dozen paths ahead);
//! - *prep workers* read each file once, hash it, dedup it, look it up, lease it, and decode
//!   it ([`super::prep`]);
//! - the *poller* watches images another process holds the lease for, and hands them back
//!   when their value lands or the lease lapses;
//! - the calling thread runs the model (loaded on first need), stores values and releases
//!   leases; the *heartbeat* renews the leases held meanwhile;
//! - two *writers* compose full-resolution colour, write every destination atomically and
//!   record each input ([`super::write`]).
//!
//! Records are written as they happen; nothing is kept per input beyond the stages' bounds and
//! the in-run dedup map of hashes.
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender};

use super::dedup::Dedup;
use super::dest::Destinations;
use super::index::Index;
use super::lease::Leases;
use super::model::LazyModel;
use super::report::{Counts, Progress, Record, ReportSink, Status, Summary};
use super::walk::{Found, Input, Sources};
use super::BatchOptions;
use crate::cache::{value, Cache, CacheKey, Lease};
use crate::error::Error;
use crate::meta::Metadata;
use crate::pipeline::{Keep, Prepared};

/// What a run did.
#[derive(Debug)]
pub struct Outcome {
    pub summary: Summary,
    /// Whether the weights were loaded (a run with nothing to infer never loads them).
    pub model_loaded: bool,
}

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
    /// Looked up in the cache once already (hits and misses are counted once).
    pub looked_up: bool,
    /// The prediction, when the cache (or another process through it) had it.
    pub cached: Option<Vec<f32>>,
    pub lease: Option<Lease>,
    /// Its place among the images in flight, held from the read of its bytes until it is
    /// written or settled.
    pub slot: Option<Slot>,
}

impl Item {
    pub fn new(input: Input, dest: PathBuf) -> Self {
        Self {
            input,
            dest,
            started: Instant::now(),
            sha: None,
            bytes: None,
            primary: false,
            dup: false,
            looked_up: false,
            cached: None,
            lease: None,
            slot: None,
        }
    }

    pub fn sha_hex(&self) -> Option<String> {
        self.sha.as_ref().map(super::read::hex)
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
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
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
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
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

/// Run state shared by every stage: counters, the report, warnings said once, the fatal error
/// that stops the run.
pub(crate) struct Shared<'a> {
    pub opts: &'a BatchOptions,
    pub cache: &'a dyn Cache,
    pub model: &'a LazyModel,
    pub index: &'a Index,
    pub leases: Leases<'a>,
    pub dedup: Dedup,
    pub progress: Progress,
    sink: Option<&'a ReportSink>,
    summary: Mutex<Summary>,
    counts: Mutex<Counts>,
    warned: Mutex<HashSet<String>>,
    fatal: Mutex<Option<Error>>,
    pub aborted: AtomicBool,
    /// Items handed to the prep workers and not yet passed on to inference or the writer, nor
    /// settled: in the work and retry queues, in a worker, or waiting in the poller.
    pub open: AtomicUsize,
    pub walk_done: AtomicBool,
    /// Work handed back by the poller or by a worker (files changed under the run).
    pub retry: Sender<Item>,
    /// Images another process is inferring, for the poller.
    pub defer: Sender<Item>,
    /// Hash hits from the index (files not read to learn their hash).
    pub index_hits: AtomicU64,
    pub slots: Arc<Slots>,
}

impl Shared<'_> {
    pub fn summary(&self) -> std::sync::MutexGuard<'_, Summary> {
        self.summary.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn counts(&self, f: impl FnOnce(&mut Counts)) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut c);
        self.progress.update(&c);
    }

    /// Print a warning the first time its `kind` comes up.
    pub fn warn_once(&self, kind: &str, msg: impl FnOnce() -> String) {
        let first = self
            .warned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(kind.to_owned());
        if first {
            self.progress
                .println(&format!("ddcolor: warning: {}", msg()));
        }
    }

    /// Add a note to the summary, once.
    pub fn note_once(&self, note: &str) {
        let mut s = self.summary();
        if !s.notes.iter().any(|n| n == note) {
            s.notes.push(note.to_owned());
        }
    }

    /// Stop the run: `e` is what `run` returns.
    pub fn abort(&self, e: Error) {
        let mut f = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(e);
        }
        self.aborted.store(true, Ordering::SeqCst);
    }

    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    /// One open item left the prep stage (passed on, settled or dropped).
    pub fn done_with_one(&self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }

    /// Hand an item back to the prep workers (counted as open until they are done with it).
    pub fn hand_back(&self, item: Item) {
        self.open.fetch_add(1, Ordering::SeqCst);
        let _ = self.retry.send(item);
    }

    /// Hand an item to the poller: another process holds its lease.
    pub fn defer_item(&self, item: Item) {
        self.open.fetch_add(1, Ordering::SeqCst);
        let _ = self.defer.send(item);
    }

    /// The walk is over and no item is left in the prep stage or the poller.
    pub fn finished(&self) -> bool {
        self.walk_done.load(Ordering::SeqCst) && self.open.load(Ordering::SeqCst) == 0
    }

    /// Settle one input: count it, print failures, and append its line to the report.
    pub fn record(&self, r: Record) {
        if r.status == Status::Failed {
            self.progress.println(&format!(
                "ddcolor: error: {}: {}",
                r.path.display(),
                r.error.as_deref().unwrap_or("failed")
            ));
        }
        if let Some(sink) = self.sink {
            if let Err(e) = sink.write(&r) {
                self.warn_once("report", || format!("cannot write the report: {e}"));
            }
        }
        self.summary().count(r.status);
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

    /// Settle `item` without an output.
    pub fn settle(&self, item: &Item, status: Status, reason: &str) {
        self.record(Record {
            path: item.input.source.clone(),
            sha256: item.sha_hex(),
            status,
            output: None,
            error: Some(reason.to_owned()),
            millis: item.started.elapsed().as_millis() as u64,
        });
    }

    /// The cache key of an image (loads the model if its identity is not known yet).
    pub fn key(&self, sha: &[u8; 32]) -> Result<(CacheKey, usize), Error> {
        let (id, channels) = self.model.identity(self.index)?;
        let key = CacheKey::new(
            &self.opts.cache_prefix,
            &id[..16],
            self.model.size(),
            &super::read::hex(sha),
        );
        Ok((key, channels))
    }

    /// A stored value as a prediction, if it is intact.
    pub fn decode_value(&self, bytes: &[u8], channels: usize) -> Option<Vec<f32>> {
        value::decode(bytes, self.model.size(), channels)
    }

    /// Release a lease; a failure is a warning (the lease expires on its own).
    pub fn release(&self, lease: Option<Lease>) {
        if let Some(lease) = lease {
            if let Err(e) = self.leases.release(&lease) {
                self.warn_once("cache-release", || {
                    format!("cannot release an inference lease ({e})")
                });
            }
        }
    }
}

/// Writer threads (compose, encode, write).
const WRITERS: usize = 2;

/// How many prep workers: 2 to 4, by cores.
fn readers(opts: &BatchOptions) -> usize {
    if opts.readers > 0 {
        return opts.readers;
    }
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 4)
}

/// Colorize everything `sources` names. Failures are per file (in the report); the run ends
/// early only on a fatal error (the weights cannot be loaded), which is returned.
pub fn run(
    model: &LazyModel,
    cache: &dyn Cache,
    index: &Index,
    sources: &Sources,
    opts: &BatchOptions,
    sink: Option<&ReportSink>,
) -> Result<Outcome, Error> {
    let started = Instant::now();
    let (retry_tx, retry_rx) = unbounded::<Item>();
    let (defer_tx, defer_rx) = unbounded::<Item>();
    let shared = Shared {
        opts,
        cache,
        model,
        index,
        leases: Leases::new(cache, opts.lease_ttl),
        dedup: Dedup::default(),
        progress: Progress::new(opts.quiet || opts.dry_run),
        sink,
        summary: Mutex::new(Summary {
            cache: cache.describe(),
            ..Summary::default()
        }),
        counts: Mutex::new(Counts::default()),
        warned: Mutex::new(HashSet::new()),
        fatal: Mutex::new(None),
        aborted: AtomicBool::new(false),
        open: AtomicUsize::new(0),
        walk_done: AtomicBool::new(false),
        retry: retry_tx,
        defer: defer_tx,
        index_hits: AtomicU64::new(0),
        // the batch being inferred and two more (decoded, or written by either writer): more
        // would read further ahead of the first output without writing faster
        slots: Slots::new(opts.batch.max(1) + 2),
    };
    if let Some(w) = index.take_warning() {
        shared.warn_once("index", || w);
    }
    let n_readers = readers(opts);
    let (work_tx, work_rx) = bounded::<Item>(64);
    let (infer_tx, infer_rx) = bounded::<Job>(opts.batch.max(1) - 1);
    let (write_tx, write_rx) = bounded::<Ready>(0);
    std::thread::scope(|s| {
        let shared = &shared;
        spawn(s, "ddcolor-walk", move || walker(shared, sources, work_tx));
        spawn(s, "ddcolor-leases", move || shared.leases.heartbeat());
        let workers: Vec<_> = (0..n_readers)
            .map(|i| {
                let (work_rx, retry_rx) = (work_rx.clone(), retry_rx.clone());
                let (infer_tx, write_tx) = (infer_tx.clone(), write_tx.clone());
                spawn(s, &format!("ddcolor-prep{i}"), move || {
                    prep_worker(shared, work_rx, retry_rx, infer_tx, write_tx)
                })
            })
            .collect();
        drop((work_rx, infer_tx));
        spawn(s, "ddcolor-poll", move || {
            super::poll::poller(shared, defer_rx)
        });
        // two writers: encoding is single-threaded, and outputs of large scans take long
        let writers: Vec<_> = (0..WRITERS)
            .map(|i| {
                let write_rx = write_rx.clone();
                spawn(s, &format!("ddcolor-write{i}"), move || {
                    super::write::writer(shared, write_rx)
                })
            })
            .collect();
        drop(write_rx);
        super::infer::infer_loop(shared, infer_rx, &write_tx);
        drop(write_tx);
        for w in workers {
            let _ = w.join();
        }
        for w in writers {
            let _ = w.join();
        }
        shared.leases.stop();
    });
    shared.leases.release_all();
    index.flush();
    shared.progress.finish();
    if let Some(sink) = sink {
        let _ = sink.flush();
    }
    if let Some(e) = shared
        .fatal
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        return Err(e);
    }
    let mut summary = shared.summary().clone();
    summary.unique = shared.dedup.unique();
    summary.elapsed = started.elapsed();
    summary.model_loaded = model.is_loaded();
    summary.hashed = shared
        .counts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .hashed;
    Ok(Outcome {
        summary,
        model_loaded: model.is_loaded(),
    })
}

/// Start a named stage thread (a profile then names the stage).
fn spawn<'scope, 'env, T: Send + 'scope>(
    s: &'scope std::thread::Scope<'scope, 'env>,
    name: &str,
    f: impl FnOnce() -> T + Send + 'scope,
) -> std::thread::ScopedJoinHandle<'scope, T> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn_scoped(s, f)
        .expect("cannot start a thread")
}

/// Stream the inputs, decide destinations, hand the rest to the prep workers.
fn walker(shared: &Shared, sources: &Sources, work: Sender<Item>) {
    let opts = shared.opts;
    let mut dests = Destinations::new(
        &opts.output,
        opts.format,
        opts.overwrite,
        &sources.root_folders(),
    );
    let mut found = 0u64;
    let result = sources.walk(&opts.output, &mut |f| {
        if shared.is_aborted() {
            return false;
        }
        found += 1;
        shared.counts(|c| c.found = found);
        match f {
            Found::Error(path, err) => {
                dry_line(shared, &format!("fail\t{}\t{err}", path.display()));
                shared.record(Record {
                    path,
                    sha256: None,
                    status: Status::Failed,
                    output: None,
                    error: Some(err),
                    millis: 0,
                });
            }
            Found::Input(input) => match dests.decide(&input) {
                Err((status, reason)) => {
                    let action = if status == Status::Skipped {
                        "skip"
                    } else {
                        "fail"
                    };
                    dry_line(
                        shared,
                        &format!("{action}\t{}\t{reason}", input.source.display()),
                    );
                    shared.record(Record {
                        output: (status == Status::Skipped)
                            .then(|| opts.format.destination(&opts.output, &input)),
                        path: input.source,
                        sha256: None,
                        status,
                        error: Some(reason),
                        millis: 0,
                    });
                }
                Ok(dest) => {
                    shared.open.fetch_add(1, Ordering::SeqCst);
                    if work.send(Item::new(input, dest)).is_err() {
                        shared.done_with_one();
                        return false;
                    }
                }
            },
        }
        true
    });
    if let Err(e) = result {
        shared.abort(Error::Usage(format!("cannot read --files-from: {e}")));
    }
    shared.summary().files = found;
    shared.progress.walk_done(found);
    shared.walk_done.store(true, Ordering::SeqCst);
}

/// A `--dry-run` line on stdout.
pub(crate) fn dry_line(shared: &Shared, line: &str) {
    if shared.opts.dry_run {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }
}

fn prep_worker(
    shared: &Shared,
    work: Receiver<Item>,
    retry: Receiver<Item>,
    infer: Sender<Job>,
    write: Sender<Ready>,
) {
    let mut walker_gone = false;
    loop {
        let item = if walker_gone {
            retry.recv_timeout(Duration::from_millis(50)).ok()
        } else {
            select! {
                recv(retry) -> m => m.ok(),
                recv(work) -> m => match m {
                    Ok(item) => Some(item),
                    Err(_) => {
                        walker_gone = true;
                        None
                    }
                },
                default(Duration::from_millis(50)) => None,
            }
        };
        let Some(item) = item else {
            if shared.finished() {
                return;
            }
            continue;
        };
        if shared.is_aborted() {
            shared.release(item.lease);
            shared.done_with_one();
            continue;
        }
        let job = super::prep::advance(shared, item);
        let sent = match job {
            Some(job) if job.ab.is_some() => write.send((job, Ok(()))).is_ok(),
            Some(job) => infer.send(job).is_ok(),
            None => true,
        };
        shared.done_with_one();
        if !sent {
            return;
        }
    }
}
