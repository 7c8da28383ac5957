//! The decode -> infer -> encode pipeline over the planned groups.
//!
//! Three stages joined by bounded channels, so memory follows `--batch`, not the folder:
//! - the *feeder* thread looks groups up in the cache (one `get_many` per chunk), takes the
//!   inference lease for each miss (double-checking the cache once it holds it), defers images
//!   another process is already inferring, and decodes a batch at a time in parallel;
//! - the calling thread runs the model on the misses of each batch and stores the results;
//! - the *writer* thread composes full-resolution colour and writes every destination.
//!
//! Deferred images are polled until their value lands (then they are `cached`) or their lease
//! lapses without one (then this process takes the lease and infers them itself).
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::plan::Plan;
use super::report::{Progress, Record, ReportSink, Status, Summary};
use super::BatchOptions;
use crate::cache::{self, value, Cache, CacheKey, Lease, LeaseOutcome, Lookup, Miss};
use crate::colorizer::Colorizer;
use crate::error::Error;
use crate::imageio;
use crate::meta::Metadata;
use crate::pipeline::{self, Keep, Prepared};

/// Keys per cache round trip.
const LOOKUP_CHUNK: usize = 32;

/// Shared, mutable run state: counters, records, warnings said once.
pub(crate) struct Shared<'a> {
    pub summary: Mutex<Summary>,
    pub records: Mutex<Vec<Record>>,
    pub sink: Option<&'a ReportSink>,
    pub progress: &'a Progress,
    warned: Mutex<Vec<String>>,
}

impl<'a> Shared<'a> {
    pub fn new(summary: Summary, sink: Option<&'a ReportSink>, progress: &'a Progress) -> Self {
        Self {
            summary: Mutex::new(summary),
            records: Mutex::new(Vec::new()),
            sink,
            progress,
            warned: Mutex::new(Vec::new()),
        }
    }

    pub fn summary(&self) -> std::sync::MutexGuard<'_, Summary> {
        self.summary.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Print a warning the first time its `kind` comes up.
    pub fn warn_once(&self, kind: &str, msg: impl FnOnce() -> String) {
        let mut w = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if !w.iter().any(|k| k == kind) {
            w.push(kind.to_owned());
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
        {
            let mut s = self.summary();
            s.count(r.status);
            self.progress.update(&s, s.files);
        }
        self.progress.inc();
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(r);
    }
}

enum Source {
    Cached(Vec<f32>),
    /// To infer; the lease we hold, if the cache gives leases.
    Infer(Option<Lease>),
}

/// What the output keeps of its source besides L: depth, alpha, metadata.
#[derive(Default)]
struct Carry {
    keep: Keep,
    meta: Metadata,
}

struct Decoded {
    group: usize,
    key: CacheKey,
    source: Source,
    prepared: Result<Prepared, Error>,
    carry: Carry,
    started: Instant,
}

struct Ready {
    group: usize,
    status: Status,
    result: Result<(Prepared, Vec<f32>), Error>,
    carry: Carry,
    started: Instant,
}

/// The reason a photo in colour is skipped (unless `--force`).
pub const ALREADY_COLOUR: &str = "already colour";

pub(crate) struct Exec<'a> {
    pub colorizer: &'a Colorizer,
    pub cache: &'a dyn Cache,
    pub opts: &'a BatchOptions,
    pub plan: &'a Plan,
    pub keys: Vec<CacheKey>,
    pub shared: &'a Shared<'a>,
}

impl Exec<'_> {
    pub fn run(&self) {
        let (tx_dec, rx_dec) = sync_channel::<Vec<Decoded>>(1);
        let (tx_ready, rx_ready) = sync_channel::<Ready>(self.opts.batch.max(1) * 2);
        std::thread::scope(|s| {
            s.spawn(move || self.feed(tx_dec));
            s.spawn(move || self.write(rx_ready));
            self.infer(rx_dec, tx_ready);
        });
    }

    // ------------------------------------------------------------------ feeder

    fn feed(&self, tx: SyncSender<Vec<Decoded>>) {
        let mut pending: Vec<usize> = (0..self.plan.groups.len()).collect();
        let mut first = true;
        let mut deferred: Vec<usize> = Vec::new();
        let deadline = Instant::now() + self.opts.lease_ttl * 10 + Duration::from_secs(60);
        let mut wait = Duration::from_millis(100);
        loop {
            for chunk in pending.chunks(LOOKUP_CHUNK) {
                let jobs = self.classify(chunk, first, &mut deferred);
                if !self.send_jobs(jobs, &tx) {
                    return;
                }
            }
            first = false;
            if deferred.is_empty() {
                return;
            }
            // wait for other processes' results
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(2));
            let keys: Vec<CacheKey> = deferred.iter().map(|&g| self.keys[g].clone()).collect();
            let found = self.cache.get_many(&keys);
            let mut jobs = Vec::new();
            let mut still = Vec::new();
            pending = Vec::new();
            for (&g, look) in deferred.iter().zip(found) {
                match look {
                    Lookup::Hit(bytes) => match self.decode_value(&bytes) {
                        Some(ab) => jobs.push((g, Source::Cached(ab))),
                        None => pending.push(g),
                    },
                    Lookup::Miss(_) => match self.cache.lease_alive(&self.keys[g]) {
                        Ok(true) => still.push(g),
                        Ok(false) | Err(_) => pending.push(g),
                    },
                }
            }
            if Instant::now() > deadline {
                for g in still.drain(..) {
                    let err = Error::Usage(
                        "timed out waiting for another process to colorize this image".into(),
                    );
                    self.fail_group(g, &err, Instant::now());
                }
            }
            deferred = still;
            if !self.send_jobs(jobs, &tx) {
                return;
            }
        }
    }

    /// Decode `jobs` a batch at a time and hand them to inference; false once it hung up.
    fn send_jobs(&self, mut jobs: Vec<(usize, Source)>, tx: &SyncSender<Vec<Decoded>>) -> bool {
        let n = self.opts.batch.max(1);
        while !jobs.is_empty() {
            let rest = jobs.split_off(n.min(jobs.len()));
            if tx.send(self.decode(jobs)).is_err() {
                return false;
            }
            jobs = rest;
        }
        true
    }

    fn decode_value(&self, bytes: &[u8]) -> Option<Vec<f32>> {
        let channels = self.colorizer.model().config().num_output_channels;
        value::decode(bytes, self.colorizer.size(), channels)
    }

    /// Look a chunk of groups up, lease the misses, and say how each one will be served.
    fn classify(
        &self,
        chunk: &[usize],
        count: bool,
        deferred: &mut Vec<usize>,
    ) -> Vec<(usize, Source)> {
        let keys: Vec<CacheKey> = chunk.iter().map(|&g| self.keys[g].clone()).collect();
        let found = self.cache.get_many(&keys);
        let mut jobs = Vec::with_capacity(chunk.len());
        let mut misses = Vec::new();
        for (&g, look) in chunk.iter().zip(found) {
            let hit = match look {
                Lookup::Hit(bytes) => self.decode_value(&bytes),
                Lookup::Miss(Miss::Error(e)) => {
                    self.shared.warn_once("cache-get", || {
                        format!("cache lookup failed ({e}); recomputing")
                    });
                    if count {
                        self.shared.summary().cache_errors += 1;
                    }
                    None
                }
                Lookup::Miss(_) => None,
            };
            if count {
                let mut s = self.shared.summary();
                if hit.is_some() {
                    s.cache_hits += 1;
                } else {
                    s.cache_misses += 1;
                }
            }
            match hit {
                Some(ab) => jobs.push((g, Source::Cached(ab))),
                None => misses.push(g),
            }
        }
        if self.opts.cache_readonly {
            jobs.extend(misses.into_iter().map(|g| (g, Source::Infer(None))));
            return jobs;
        }
        let mut held = Vec::new();
        for g in misses {
            match self.cache.try_lease(&self.keys[g], self.opts.lease_ttl) {
                Ok(LeaseOutcome::Acquired(l)) => held.push((g, l)),
                Ok(LeaseOutcome::HeldElsewhere) => deferred.push(g),
                Err(e) => {
                    self.shared.warn_once("cache-lease", || {
                        format!("cannot take inference leases ({e}); inferring without one")
                    });
                    jobs.push((g, Source::Infer(None)));
                }
            }
        }
        if !held.is_empty() {
            // Another process may have stored the value between our lookup and our lease.
            let keys: Vec<CacheKey> = held.iter().map(|(g, _)| self.keys[*g].clone()).collect();
            for ((g, lease), look) in held.into_iter().zip(self.cache.get_many(&keys)) {
                let ab = match look {
                    Lookup::Hit(bytes) => self.decode_value(&bytes),
                    Lookup::Miss(_) => None,
                };
                match ab {
                    Some(ab) => {
                        let _ = self.cache.release(&lease);
                        jobs.push((g, Source::Cached(ab)));
                    }
                    None => jobs.push((g, Source::Infer(Some(lease)))),
                }
            }
        }
        jobs
    }

    /// Decode and prepare a batch in parallel. Photos already in colour are settled here as
    /// skipped (unless `--force`): never inferred, never stored.
    fn decode(&self, batch: Vec<(usize, Source)>) -> Vec<Decoded> {
        batch
            .into_par_iter()
            .filter_map(|(g, source)| {
                let started = Instant::now();
                let path = &self.plan.entries[self.plan.groups[g].members[0]]
                    .input
                    .source;
                let decoded = imageio::decode_with_metadata(path, self.opts.max_pixels);
                let (prepared, carry) = match decoded {
                    Err(e) => (Err(e), Carry::default()),
                    Ok(d) if self.skips_as_colour(&d.image) => {
                        if let Source::Infer(Some(lease)) = source {
                            self.release(&lease);
                        }
                        self.settle_group(g, Status::Skipped, ALREADY_COLOUR, started);
                        return None;
                    }
                    Ok(d) => {
                        let img = d.image;
                        let carry = Carry {
                            keep: Keep::of(&img),
                            meta: d.meta,
                        };
                        let prepared = pipeline::prepare_image(&img, self.colorizer.size());
                        drop(img);
                        (Ok(prepared), carry)
                    }
                };
                Some(Decoded {
                    group: g,
                    key: self.keys[g].clone(),
                    source,
                    prepared,
                    carry,
                    started,
                })
            })
            .collect()
    }

    /// A photo already in colour, and no `--force`.
    fn skips_as_colour(&self, img: &image::DynamicImage) -> bool {
        !self.opts.force && pipeline::tone::is_already_colour(img)
    }

    /// Release an inference lease; a failure is a warning (the lease expires on its own).
    fn release(&self, lease: &Lease) {
        if let Err(e) = self.cache.release(lease) {
            self.shared.warn_once("cache-release", || {
                format!("cannot release an inference lease ({e})")
            });
        }
    }

    // ------------------------------------------------------------------ inference

    fn infer(&self, rx: Receiver<Vec<Decoded>>, tx: SyncSender<Ready>) {
        let channels = self.colorizer.model().config().num_output_channels;
        let size = self.colorizer.size();
        for batch in rx {
            let to_infer: Vec<usize> = batch
                .iter()
                .enumerate()
                .filter(|(_, d)| matches!(d.source, Source::Infer(_)) && d.prepared.is_ok())
                .map(|(i, _)| i)
                .collect();
            let mut predictions: Vec<Option<Result<Vec<f32>, String>>> =
                (0..batch.len()).map(|_| None).collect();
            if !to_infer.is_empty() {
                let inputs: Vec<&[f32]> = to_infer
                    .iter()
                    .map(|&i| match &batch[i].prepared {
                        Ok(p) => p.model_input.as_slice(),
                        Err(_) => &[][..],
                    })
                    .collect();
                let out = self.colorizer.predict(&inputs);
                self.shared.summary().forward_passes += 1;
                match out {
                    Ok(abs) => {
                        for (&i, ab) in to_infer.iter().zip(abs) {
                            predictions[i] = Some(Ok(ab));
                        }
                    }
                    Err(e) => {
                        for &i in &to_infer {
                            predictions[i] = Some(Err(e.to_string()));
                        }
                    }
                }
            }
            for (d, pred) in batch.into_iter().zip(predictions) {
                let (status, ab) = match d.source {
                    Source::Cached(ab) => (Status::Cached, Ok(ab)),
                    Source::Infer(lease) => {
                        let ab = match pred {
                            Some(Ok(ab)) => {
                                // what a later cache hit will see, so both write the same bytes
                                let stored = value::encode(&ab, size, channels);
                                if !self.opts.cache_readonly {
                                    if let Err(e) =
                                        self.cache.put(&d.key, &stored, self.opts.cache_ttl)
                                    {
                                        self.shared.warn_once("cache-put", || {
                                            format!("cannot store results in the cache ({e})")
                                        });
                                    }
                                }
                                Ok(value::decode(&stored, size, channels)
                                    .unwrap_or_else(|| cache::value::quantise(&ab)))
                            }
                            Some(Err(e)) => Err(Error::Usage(format!("inference failed: {e}"))),
                            None => Err(Error::Usage("not decoded".into())),
                        };
                        if let Some(lease) = lease {
                            self.release(&lease);
                        }
                        (Status::Inferred, ab)
                    }
                };
                let result = match (d.prepared, ab) {
                    (Ok(p), Ok(ab)) => Ok((p, ab)),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                };
                let ready = Ready {
                    group: d.group,
                    status,
                    result,
                    carry: d.carry,
                    started: d.started,
                };
                if tx.send(ready).is_err() {
                    return;
                }
            }
        }
    }

    // ------------------------------------------------------------------ writer

    fn fail_group(&self, g: usize, err: &Error, started: Instant) {
        self.settle_group(g, Status::Failed, &err.detail(), started);
    }

    /// Record every member of group `g` as `status` (failed or skipped) for `reason`.
    fn settle_group(&self, g: usize, status: Status, reason: &str, started: Instant) {
        for &m in &self.plan.groups[g].members {
            let e = &self.plan.entries[m];
            self.shared.record(Record {
                path: e.input.source.clone(),
                sha256: e.sha256.clone(),
                status,
                output: None,
                error: Some(reason.to_owned()),
                millis: started.elapsed().as_millis() as u64,
            });
        }
    }

    /// Say once in the summary when an output format cannot hold what the source had.
    fn note_format_losses(&self, keep: &Keep, dest: &std::path::Path) {
        let Some(format) = imageio::format_for(dest) else {
            return;
        };
        if keep.depth == pipeline::Depth::Sixteen && imageio::is_8bit_only(format) {
            self.shared.note_once(&format!(
                "16-bit sources were written as 8-bit {} (--format png or tiff keeps 16 bits)",
                format.extensions_str()[0].to_ascii_uppercase()
            ));
        }
        if keep.alpha.is_some() && imageio::drops_alpha(format) {
            self.shared.note_once(&format!(
                "transparency was dropped from {} outputs (--format png, tiff or webp keeps it)",
                format.extensions_str()[0].to_ascii_uppercase()
            ));
        }
    }

    fn write(&self, rx: Receiver<Ready>) {
        for r in rx {
            let (prepared, ab) = match r.result {
                Ok(x) => x,
                Err(e) => {
                    self.fail_group(r.group, &e, r.started);
                    continue;
                }
            };
            let img = self.colorizer.compose_image(&prepared, &ab, &r.carry.keep);
            drop((prepared, ab));
            for (k, &m) in self.plan.groups[r.group].members.iter().enumerate() {
                let e = &self.plan.entries[m];
                let status = if k == 0 { r.status } else { Status::Duplicate };
                self.note_format_losses(&r.carry.keep, &e.dest);
                let saved =
                    imageio::save_with(&img, &e.dest, Some(&r.carry.meta), self.opts.jpeg_quality);
                let rec = match saved {
                    Ok(()) => Record {
                        path: e.input.source.clone(),
                        sha256: e.sha256.clone(),
                        status,
                        output: Some(e.dest.clone()),
                        error: None,
                        millis: r.started.elapsed().as_millis() as u64,
                    },
                    Err(err) => Record {
                        path: e.input.source.clone(),
                        sha256: e.sha256.clone(),
                        status: Status::Failed,
                        output: None,
                        error: Some(err.detail()),
                        millis: r.started.elapsed().as_millis() as u64,
                    },
                };
                self.shared.record(rec);
            }
        }
    }
}
