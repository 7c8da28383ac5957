//! The store stage: each fresh prediction compressed ([`value::encode`], ~0.2 s at 512) and
//! put in the cache, then its lease released, on threads of its own, so that neither the model
//! nor the writers wait for the compressor. The lease is released only once the value is
//! stored (or failed to be), so a process waiting for the image either finds the value or
//! takes the lease over; never both missing.
use crossbeam_channel::Receiver;

use super::report::CacheOp;
use super::state::Shared;
use crate::cache::{value, CacheKey, Lease};

/// One prediction to store.
pub(crate) struct Store {
    pub key: CacheKey,
    pub ab: Vec<f32>,
    pub size: usize,
    pub channels: usize,
    pub lease: Option<Lease>,
}

/// Threads for the stage: the compressor is single-threaded and the model outruns one of it
/// on a GPU.
pub(crate) fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8)
}

/// Encode, store and release each prediction that arrives, until the sender is gone.
pub(crate) fn storer(shared: &Shared, jobs: Receiver<Store>) {
    while let Ok(s) = jobs.recv() {
        let stored = value::encode(&s.ab, s.size, s.channels);
        drop(s.ab);
        if let Err(e) = shared
            .ctx
            .cache
            .put(&s.key, &stored, shared.ctx.opts.cache_ttl)
        {
            shared.cache_error(CacheOp::Put, || {
                format!("cannot store results in the cache ({e})")
            });
        }
        shared.release(s.lease);
    }
}
