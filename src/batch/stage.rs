//! An image's stages, one type each, so that an image holds what it has at its stage and
//! nothing it may not have yet: [`Found`] -> [`Hashed`] -> [`Claimed`] (its [`Role`]) ->
//! [`Leased`] (its [`Source`]) -> [`Loaded`] -> [`Decoded`] -> [`Predicted`] -> written.
//! Each step is a function from one stage to the next, taking the image by value ([`super::prep`]
//! up to `Decoded`, [`super::infer`], [`super::write`]), so the compiler keeps the order. Beside
//! them: the guards that count an image open in the prep stage ([`Open`]) and in flight
//! ([`Slot`]), and what moves between the threads ([`Work`], [`Waiting`], [`Job`], [`Ready`]).
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crossbeam_channel::Sender;

use super::report::{Record, Status};
use super::walk::Input;
use crate::cache::Lease;
use crate::meta::Metadata;
use crate::pipeline::{Keep, Prepared};

/// An input and the destination decided for it, since it entered the run: what every stage
/// of an image carries, and what a copy waiting for its primary is.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub input: Input,
    pub dest: PathBuf,
    pub started: Instant,
}

impl Entry {
    pub fn new(input: Input, dest: PathBuf) -> Self {
        Self {
            input,
            dest,
            started: Instant::now(),
        }
    }

    /// Its line in the report: `output` when written, `error` the reason when not.
    pub fn record(
        &self,
        sha: Option<&[u8; 32]>,
        status: Status,
        output: Option<PathBuf>,
        error: Option<String>,
    ) -> Record {
        Record {
            path: self.input.source.clone(),
            root: self.input.root(),
            sha256: sha.map(|h| crate::hash::hex(h)),
            status,
            output,
            error,
            millis: self.started.elapsed().as_millis() as u64,
        }
    }
}

/// A file's bytes in memory (read once: hashed and decoded from this buffer), holding a
/// [`Slot`] among the images in flight.
pub(crate) struct Bytes {
    pub data: Vec<u8>,
    pub slot: Slot,
}

/// Found by the walk (or a copy whose primary was abandoned), open in the prep stage.
pub(crate) struct Found {
    pub entry: Entry,
    pub open: Open,
}

/// Its bytes' SHA-256 known: from the index (the bytes not read yet), or read (and kept for
/// decoding).
pub(crate) struct Hashed {
    pub entry: Entry,
    pub open: Open,
    pub sha: [u8; 32],
    pub bytes: Option<Bytes>,
}

/// An image's place among the byte-identical inputs of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The first of its bytes in flight: it holds the dedup slot of its hash, and the copies
    /// found meanwhile wait for its output.
    Primary,
    /// Its bytes were seen before in this run and are not in flight (settled without an
    /// output, written too long ago, or in another format): processed again; served from the
    /// cache it is recorded as a `duplicate`.
    Duplicate,
}

/// What an image is from its claim on: its entry, its hash, its role. Settling it settles the
/// copies waiting for it too (its role says whether any can).
pub(crate) struct Image {
    pub entry: Entry,
    pub sha: [u8; 32],
    pub role: Role,
}

/// Claimed in the run's dedup map: its role is decided.
pub(crate) struct Claimed {
    pub image: Image,
    pub open: Open,
    pub bytes: Option<Bytes>,
}

/// Where an image's colours come from.
pub(crate) enum Source {
    /// The cache had the prediction (stored by this run, an earlier one or another process).
    Cached(Vec<f32>),
    /// The model, here: under this process's lease, unless the cache takes no leases or
    /// could not grant one.
    Model(Option<Lease>),
}

impl Source {
    /// The lease it holds, if any.
    pub fn into_lease(self) -> Option<Lease> {
        match self {
            Source::Cached(_) => None,
            Source::Model(lease) => lease,
        }
    }
}

/// Looked up (and leased when it is for the model): where its colours come from is decided.
pub(crate) struct Leased {
    pub image: Image,
    pub open: Open,
    pub bytes: Option<Bytes>,
    pub source: Source,
}

/// Its bytes in memory, and they are the bytes its hash names.
pub(crate) struct Loaded {
    pub image: Image,
    pub open: Open,
    pub bytes: Bytes,
    pub source: Source,
}

/// Claimed, waiting in the poller while another process holds its lease; its bytes (and their
/// slot) given up meanwhile.
pub(crate) struct Waiting {
    pub image: Image,
    pub open: Open,
}

impl Waiting {
    /// Back to the prep workers when the lease it waited for lapsed without a value: claimed
    /// still, its bytes to be read again.
    pub fn claimed(self) -> Claimed {
        Claimed {
            image: self.image,
            open: self.open,
            bytes: None,
        }
    }

    /// Back to the prep workers when its value landed: served from the cache, its bytes to be
    /// read again.
    pub fn landed(self, ab: Vec<f32>) -> Leased {
        Leased {
            image: self.image,
            open: self.open,
            bytes: None,
            source: Source::Cached(ab),
        }
    }
}

/// What the prep workers take: the walk's inputs, and the images handed back to them.
pub(crate) enum Work {
    /// Found by the walk, or a copy whose primary changed under the run.
    Found(Found),
    /// Its value landed while it waited: served from the cache.
    Landed(Waiting, Vec<f32>),
    /// The lease it waited for lapsed without a value: looked up and leased again.
    Lapsed(Waiting),
}

/// What the output keeps of its source besides L: depth, alpha, metadata.
#[derive(Default)]
pub(crate) struct Carry {
    pub keep: Keep,
    pub meta: Metadata,
}

/// Decoded and prepared for the model (or, cached, for the writer); no longer open in the prep
/// stage, still in flight.
pub(crate) struct Decoded {
    pub image: Image,
    pub slot: Slot,
    pub prepared: Prepared,
    pub carry: Carry,
}

/// A decoded image for the model, with the lease taken for it.
pub(crate) struct Job {
    pub decoded: Decoded,
    pub lease: Option<Lease>,
}

/// Who predicted an image's colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Served {
    Cache,
    Model,
}

/// Its prediction in hand, as a later cache hit reads it back: ready to be composed and
/// written.
pub(crate) struct Predicted {
    pub decoded: Decoded,
    pub ab: Vec<f32>,
    pub by: Served,
}

impl Predicted {
    /// How its output is recorded.
    pub fn status(&self) -> Status {
        match (self.by, self.decoded.image.role) {
            (Served::Model, _) => Status::Inferred,
            (Served::Cache, Role::Primary) => Status::Cached,
            (Served::Cache, Role::Duplicate) => Status::Duplicate,
        }
    }
}

/// What reaches the writer: a prediction, or the image and why inference failed.
pub(crate) type Ready = Result<Predicted, (Decoded, String)>;

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

/// A taken slot, given back when dropped: held from the read of an image's bytes until it is
/// written or settled.
pub(crate) struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        *crate::sync::lock(&self.0.free) += 1;
        self.0.freed.notify_one();
    }
}
