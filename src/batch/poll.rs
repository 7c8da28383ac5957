//! The poller: images whose lease another process holds wait here, off the prep workers'
//! hands, and go back to them when their value lands (served from the cache) or when the
//! lease lapses without one (leased here). It says once that it is waiting, and for how long
//! a stopped holder can keep an image.
use std::time::Duration;

use crossbeam_channel::Receiver;

use super::state::{Item, Shared};
use crate::cache::{CacheKey, Lookup};

/// Watch images whose lease another process holds: hand each back when its value lands (then
/// it is served from the cache) or when the lease lapses without one (then it is leased here).
pub(crate) fn poller(shared: &Shared, defer: Receiver<Item>) {
    let mut waiting: Vec<Item> = Vec::new();
    let mut pause = Duration::from_millis(100);
    let mut said = false;
    loop {
        while let Ok(item) = defer.try_recv() {
            waiting.push(item);
        }
        if shared.is_aborted() {
            for item in waiting.drain(..) {
                shared.release(item.lease);
                shared.done_with_one();
            }
        }
        if waiting.is_empty() {
            if shared.finished() {
                return;
            }
            if let Ok(item) = defer.recv_timeout(Duration::from_millis(50)) {
                waiting.push(item);
                pause = Duration::from_millis(100);
            }
            continue;
        }
        if !said && !shared.opts.quiet {
            said = true;
            shared.progress.println(&format!(
                "ddcolor: waiting for images that another process is colorizing (its leases \
                 last {} s after it stops)",
                shared.opts.lease_ttl.as_secs_f64()
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(2));
        let keys: Vec<(CacheKey, usize)> = match waiting
            .iter()
            .map(|i| shared.key(i.sha.as_ref().expect("deferred items are hashed")))
            .collect()
        {
            Ok(k) => k,
            Err(e) => {
                shared.abort(e);
                continue;
            }
        };
        let plain: Vec<CacheKey> = keys.iter().map(|(k, _)| k.clone()).collect();
        let found = shared.cache.get_many(&plain);
        let mut still = Vec::new();
        for ((mut item, (key, channels)), look) in waiting.drain(..).zip(keys).zip(found) {
            let ab = match look {
                Lookup::Hit(bytes) => shared.decode_value(&bytes, channels),
                Lookup::Miss(crate::cache::Miss::Error(e)) => {
                    shared.cache_error(super::report::CacheOp::Get, || {
                        format!("cache lookup failed ({e}); recomputing")
                    });
                    None
                }
                Lookup::Miss(_) => None,
            };
            let hand_back = match ab {
                Some(ab) => {
                    item.cached = Some(ab);
                    true
                }
                None => !matches!(shared.cache.lease_alive(&key), Ok(true)),
            };
            if hand_back {
                pause = Duration::from_millis(100);
                // still counted as open: it goes back to the prep workers
                let _ = shared.retry.send(item);
            } else {
                still.push(item);
            }
        }
        waiting = still;
    }
}
