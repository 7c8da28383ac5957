//! The inference loop, on the calling thread: batches of decoded images through the model
//! (loaded on the first batch that needs it), each value stored in the cache in the form a
//! later hit reads back, its lease released, and the image passed to the writer.
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::state::{Job, Ready, Shared};
use crate::cache::value;

/// Run the model on batches of jobs, store each value, release its lease, pass it on.
pub(crate) fn infer_loop(shared: &Shared, jobs: Receiver<Job>, write: &Sender<Ready>) {
    let batch = shared.opts.batch.max(1);
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
        if shared.is_aborted() {
            for j in group {
                shared.release(j.item.lease);
            }
            continue;
        }
        let colorizer = match shared.model.get() {
            Ok(c) => c,
            Err(e) => {
                for j in group {
                    shared.release(j.item.lease);
                }
                shared.abort(e);
                continue;
            }
        };
        let inputs: Vec<&[f32]> = group
            .iter()
            .map(|j| j.prepared.model_input.as_slice())
            .collect();
        let predicted = colorizer.predict(&inputs);
        if let Some(ms) = test_sleep() {
            std::thread::sleep(ms);
        }
        shared.summary().forward_passes += 1;
        let size = colorizer.size();
        let channels = colorizer.model().config().num_output_channels;
        let mut predicted = match predicted {
            Ok(abs) => abs.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => group.iter().map(|_| Err(e.to_string())).collect(),
        };
        for (mut job, pred) in group.into_iter().zip(predicted.drain(..)) {
            let result = match pred {
                Ok(ab) => {
                    // what a later cache hit will see, so both write the same bytes
                    let stored = value::encode(&ab, size, channels);
                    if !shared.opts.cache_readonly {
                        match shared.key(job.item.sha.as_ref().expect("hashed")) {
                            Ok((key, _)) => {
                                if let Err(e) =
                                    shared.cache.put(&key, &stored, shared.opts.cache_ttl)
                                {
                                    shared.cache_error(super::report::CacheOp::Put, || {
                                        format!("cannot store results in the cache ({e})")
                                    });
                                }
                            }
                            Err(e) => shared.abort(e),
                        }
                    }
                    job.ab = Some(
                        value::decode(&stored, size, channels)
                            .unwrap_or_else(|| value::quantise(&ab)),
                    );
                    Ok(())
                }
                Err(e) => Err(format!("inference failed: {e}")),
            };
            shared.release(job.item.lease.take());
            if write.send((job, result)).is_err() {
                return;
            }
        }
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
