//! The inference loop, on the calling thread: batches of decoded images through the model
//! (loaded on the first batch that needs it), each prediction quantised as a later hit reads
//! it back and passed to the writer, and handed to the store stage (compressed, stored, its
//! lease released then).
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::stage::{Decoded, Job, Predicted, Ready, Served};
use super::state::Shared;
use super::store::Store;
use crate::cache::{value, Lease};

/// Run the model on batches of jobs, store each value, release its lease, pass it on.
pub(crate) fn infer_loop(
    shared: &Shared,
    jobs: Receiver<Job>,
    write: &Sender<Ready>,
    store: &Sender<Store>,
) {
    let batch = shared.ctx.opts.batch.max(1);
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        // fill the batch with what is ready within a moment, never waiting for a full one
        let deadline = Instant::now() + Duration::from_millis(100);
        while group.len() < batch {
            match jobs.recv_deadline(deadline) {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        if shared.stop.is_aborted() {
            for j in group {
                shared.release(j.lease);
            }
            continue;
        }
        let colorizer = match shared.ctx.model.get() {
            Ok(c) => c,
            Err(e) => {
                for j in group {
                    shared.release(j.lease);
                }
                shared.stop.abort(e);
                continue;
            }
        };
        let inputs: Vec<&[f32]> = group
            .iter()
            .map(|j| j.decoded.prepared.model_input.as_slice())
            .collect();
        let predicted = colorizer.predict(&inputs);
        if let Some(ms) = test_sleep() {
            std::thread::sleep(ms);
        }
        shared.tally.summary().forward_passes += 1;
        let size = colorizer.size();
        let channels = colorizer.model().config().num_output_channels;
        let mut predicted = match predicted {
            Ok(abs) => abs.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => group.iter().map(|_| Err(e.to_string())).collect(),
        };
        for (Job { decoded, lease }, pred) in group.into_iter().zip(predicted.drain(..)) {
            let ready = match pred {
                Ok(ab) => Ok(predict(shared, decoded, lease, ab, size, channels, store)),
                Err(e) => {
                    shared.release(lease);
                    Err((decoded, format!("inference failed: {e}")))
                }
            };
            if write.send(ready).is_err() {
                return;
            }
        }
    }
}

/// A prediction made: quantised as a later cache hit reads it back (so both write the same
/// bytes), and handed to the store stage with its lease (released there once it is stored).
fn predict(
    shared: &Shared,
    decoded: Decoded,
    lease: Option<Lease>,
    ab: Vec<f32>,
    size: usize,
    channels: usize,
    store: &Sender<Store>,
) -> Predicted {
    let quantised = value::quantise(&ab);
    let key = if !shared.ctx.cache.keeps_values() {
        None
    } else {
        match shared.ctx.key(&decoded.image.sha) {
            Ok((key, _)) => Some(key),
            Err(e) => {
                shared.stop.abort(e);
                None
            }
        }
    };
    match key {
        Some(key) => {
            let s = Store {
                key,
                ab,
                size,
                channels,
                lease,
            };
            if let Err(e) = store.send(s) {
                shared.release(e.into_inner().lease);
            }
        }
        None => shared.release(lease),
    }
    Predicted {
        decoded,
        ab: quantised,
        by: Served::Model,
    }
}

/// Test hook: `DDCOLOR_TEST_INFER_SLEEP_MS` makes every forward pass that long slower, so that
/// tests can hold leases past their TTL and change files under a run (never set otherwise).
fn test_sleep() -> Option<Duration> {
    static SLEEP: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    *SLEEP.get_or_init(|| {
        std::env::var("DDCOLOR_TEST_INFER_SLEEP_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
    })
}
