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
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender};

use super::dest::Destinations;
use super::index::Index;
use super::lease::Leases;
use super::model::LazyModel;
use super::options::BatchOptions;
use super::prep::Prepped;
use super::report::{Progress, Record, ReportSink, Status, Summary};
use super::stage::{Entry, Found, Job, Never, Open, Ready, Slots, Waiting, Work};
use super::state::{Context, Flight, Shared, Stop, Tally};
use super::walk::{self, Sources};
use crate::cache::Cache;
use crate::error::Error;

/// What a run did.
#[derive(Debug)]
pub struct Outcome {
    pub summary: Summary,
    /// Whether the weights were loaded (a run with nothing to infer never loads them).
    pub model_loaded: bool,
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
    let created = super::dest::preflight(&opts.output, &sources.root_folders(), !opts.dry_run)?;
    let result = run_in(model, cache, index, sources, opts, sink);
    // a run that did nothing leaves no output folder behind (a mistyped path, weights that
    // cannot be read): only the folders preflight made, only when they hold no file
    if let Some(dir) = created {
        let did_nothing = match &result {
            Err(_) => true,
            Ok(o) => o.summary.found == 0 || o.summary.failed == o.summary.files,
        };
        if did_nothing {
            super::dest::remove_if_unused(&dir);
        }
    }
    result
}

fn run_in(
    model: &LazyModel,
    cache: &dyn Cache,
    index: &Index,
    sources: &Sources,
    opts: &BatchOptions,
    sink: Option<&ReportSink>,
) -> Result<Outcome, Error> {
    let started = Instant::now();
    let (retry_tx, retry_rx) = unbounded::<Work>();
    let (defer_tx, defer_rx) = unbounded::<Waiting>();
    let shared = Shared {
        ctx: Context {
            opts,
            cache,
            model,
            index,
        },
        tally: Tally::new(
            Progress::new(opts.quiet || opts.dry_run),
            sink,
            Summary {
                cache: cache.describe(),
                dry_run: opts.dry_run,
                has_report: sink.is_some(),
                ..Summary::default()
            },
        ),
        stop: Stop::default(),
        // the batch being inferred and two more (decoded, or written by either writer): more
        // would read further ahead of the first output without writing faster
        flight: Flight::new(
            Leases::new(cache, opts.lease_ttl),
            Slots::new(opts.batch.max(1) + 2),
            retry_tx,
            defer_tx,
        ),
    };
    if let Some(w) = index.take_warning() {
        shared.tally.warn_once("index", || w);
    }
    let n_readers = readers(opts);
    let (work_tx, work_rx) = bounded::<Found>(64);
    let (infer_tx, infer_rx) = bounded::<Job>(opts.batch.max(1) - 1);
    let (write_tx, write_rx) = bounded::<Ready>(0);
    // closed once the walker and every open input's guard are gone: the end of the prep stage
    let (alive_tx, alive_rx) = bounded::<Never>(0);
    std::thread::scope(|s| {
        let shared = &shared;
        spawn(s, "ddcolor-walk", move || {
            walker(shared, sources, work_tx, alive_tx)
        });
        spawn(s, "ddcolor-leases", move || {
            shared.flight.leases.heartbeat()
        });
        let workers: Vec<_> = (0..n_readers)
            .map(|i| {
                let (work_rx, retry_rx) = (work_rx.clone(), retry_rx.clone());
                let (infer_tx, write_tx) = (infer_tx.clone(), write_tx.clone());
                let queues = Queues {
                    work: work_rx,
                    retry: retry_rx,
                    alive: alive_rx.clone(),
                };
                spawn(s, &format!("ddcolor-prep{i}"), move || {
                    prep_worker(shared, queues, infer_tx, write_tx)
                })
            })
            .collect();
        drop((work_rx, infer_tx));
        spawn(s, "ddcolor-poll", move || {
            super::poll::poller(shared, defer_rx, alive_rx)
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
        let n_store = super::store::threads();
        let (store_tx, store_rx) = bounded::<super::store::Store>(n_store);
        let storers: Vec<_> = (0..n_store)
            .map(|i| {
                let store_rx = store_rx.clone();
                spawn(s, &format!("ddcolor-store{i}"), move || {
                    super::store::storer(shared, store_rx)
                })
            })
            .collect();
        drop(store_rx);
        super::infer::infer_loop(shared, infer_rx, &write_tx, &store_tx);
        drop((write_tx, store_tx));
        for w in workers {
            let _ = w.join();
        }
        for w in writers {
            let _ = w.join();
        }
        // the leases of values being stored stay renewed until they are released
        for w in storers {
            let _ = w.join();
        }
        shared.flight.leases.stop();
    });
    let (stuck, last_error) = shared.flight.leases.release_all();
    if stuck > 0 {
        shared.tally.warn_once("leases-stuck", || {
            format!(
                "{stuck} inference lease{} could not be released ({}; retried for {} s): other \
                 runs wait up to {} s before colorizing th{} image{}",
                if stuck == 1 { "" } else { "s" },
                last_error.as_deref().unwrap_or("the cache did not answer"),
                super::lease::RELEASE_RETRY_FOR
                    .min(shared.ctx.opts.lease_ttl)
                    .as_secs(),
                shared.ctx.opts.lease_ttl.as_secs(),
                if stuck == 1 { "at" } else { "ose" },
                if stuck == 1 { "" } else { "s" },
            )
        });
    }
    index.flush();
    shared.tally.progress.finish();
    if let Some(sink) = sink {
        let _ = sink.flush();
    }
    if let Some(e) = shared.stop.take_fatal() {
        return Err(e);
    }
    let mut summary = shared.tally.summary().clone();
    // renewals and end-of-run releases that failed: no caller counted them
    let unreported = shared.flight.leases.unreported.load(Ordering::Relaxed);
    summary.cache_errors += unreported;
    summary
        .cache_errors_by
        .add(super::report::CacheOp::Release, unreported);
    summary.unique = shared.flight.dedup.unique();
    summary.elapsed = started.elapsed();
    summary.model_loaded = model.is_loaded();
    {
        let c = crate::sync::lock(&shared.tally.counts);
        summary.hashed = c.hashed;
        summary.bytes_read = c.bytes_read;
    }
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
/// The walk: every input found goes to the prep workers with its [`Open`] guard; `alive` is
/// dropped when the walk is over.
fn walker(shared: &Shared, sources: &Sources, work: Sender<Found>, alive: Sender<Never>) {
    let opts = shared.ctx.opts;
    let mut dests = Destinations::new(
        &opts.output,
        opts.format,
        opts.overwrite,
        &sources.root_folders(),
    )
    .sweeping(!opts.dry_run);
    let mut found = 0u64;
    let mut total = 0u64;
    let result = sources.walk(&opts.output, &mut |f| {
        if shared.stop.is_aborted() {
            return false;
        }
        if let walk::Found::LeftOut(_, why) = f {
            *shared.tally.summary().left_out.entry(why).or_default() += 1;
            return true;
        }
        total += 1;
        // another shard's input: not opened, not hashed, not reported (an error that has no
        // relative path yet is reported by the shard its path falls in)
        if let Some(shard) = opts.shard {
            let relative = match &f {
                walk::Found::Input(i) => i.relative.as_path(),
                walk::Found::Error(p, _) | walk::Found::LeftOut(p, _) => p.as_path(),
            };
            if !shard.takes(relative) {
                return true;
            }
        }
        found += 1;
        shared.tally.counts(|c| c.found = found);
        match f {
            walk::Found::Error(path, err) => {
                shared.ctx.dry_line(&format!(
                    "fail\t{}\t{}",
                    crate::text::shown(&path),
                    crate::text::escape_controls(&err)
                ));
                shared.record(Record {
                    path,
                    root: None,
                    sha256: None,
                    status: Status::Failed,
                    output: None,
                    error: Some(err),
                    millis: 0,
                });
            }
            walk::Found::LeftOut(..) => {}
            walk::Found::Input(input) => match dests.decide(&input) {
                Err((status, reason)) => {
                    let action = if status == Status::Skipped {
                        "skip"
                    } else {
                        "fail"
                    };
                    shared.ctx.dry_line(&format!(
                        "{action}\t{}\t{reason}",
                        crate::text::shown(&input.source)
                    ));
                    shared.record(Record {
                        output: (status == Status::Skipped)
                            .then(|| opts.format.destination(&opts.output, &input)),
                        root: input.root(),
                        path: input.source,
                        sha256: None,
                        status,
                        error: Some(reason),
                        millis: 0,
                    });
                }
                Ok(dest) => {
                    let found = Found {
                        entry: Entry::new(input, dest),
                        open: Open::new(&shared.flight.open, &alive),
                    };
                    if work.send(found).is_err() {
                        return false;
                    }
                }
            },
        }
        true
    });
    if let Err(e) = result {
        shared.stop.abort(Error::FileList {
            path: sources
                .list
                .as_ref()
                .map(|(p, _)| p.clone())
                .unwrap_or_default(),
            reason: e.to_string(),
        });
    }
    {
        let mut s = shared.tally.summary();
        s.files = found;
        s.found = total;
        s.shard = opts.shard.map(|sh| (sh, total));
    }
    shared.tally.progress.walk_done(found);
    shared.flight.walk_done.store(true, Ordering::SeqCst);
}

/// What a prep worker takes work from: the walk, the items handed back, and the liveness
/// channel whose closing ends the prep stage.
struct Queues {
    work: Receiver<Found>,
    retry: Receiver<Work>,
    alive: Receiver<Never>,
}

fn prep_worker(shared: &Shared, q: Queues, infer: Sender<Job>, write: Sender<Ready>) {
    let mut walker_gone = false;
    loop {
        // the prep stage is over when `alive` closes: the walk is done and no input is open
        let work = if walker_gone {
            select! {
                recv(q.retry) -> m => m.ok(),
                recv(q.alive) -> _ => return,
            }
        } else {
            select! {
                recv(q.retry) -> m => m.ok(),
                recv(q.work) -> m => match m {
                    Ok(found) => Some(Work::Found(found)),
                    Err(_) => {
                        walker_gone = true;
                        None
                    }
                },
                recv(q.alive) -> _ => return,
            }
        };
        let Some(work) = work else {
            continue;
        };
        if shared.stop.is_aborted() {
            // work holds no lease: dropped, its guard with it
            continue;
        }
        let prepped = super::prep::advance(shared, work);
        shared.check_cache();
        let sent = match prepped {
            Some(Prepped::Cached(predicted)) => write.send(Ok(predicted)).is_ok(),
            Some(Prepped::Model(job)) => infer.send(job).is_ok(),
            None => true,
        };
        if !sent {
            return;
        }
    }
}
