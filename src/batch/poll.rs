//! The poller: images whose lease another process holds wait here, off the prep workers'
//! hands, and go back to them when their value lands (served from the cache) or when the
//! lease lapses without one (leased here). It says once how many images it is waiting for
//! (once all that will wait are here), and for how long at most a holder that has stopped can
//! keep them.
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};

use super::stage::{Never, Waiting, Work};
use super::state::Shared;
use crate::cache::{CacheKey, Lookup};

/// How long images may wait before the message says how many, if not all are known by then.
const SAY_AFTER: Duration = Duration::from_secs(10);

/// Watch images whose lease another process holds: hand each back when its value lands (then
/// it is served from the cache) or when the lease lapses without one (then it is leased here).
pub(crate) fn poller(shared: &Shared, defer: Receiver<Waiting>, alive: Receiver<Never>) {
    let mut waiting: Vec<Waiting> = Vec::new();
    let mut pause = Duration::from_millis(100);
    let mut said = false;
    let mut first_wait: Option<Instant> = None;
    loop {
        while let Ok(w) = defer.try_recv() {
            waiting.push(w);
        }
        if shared.stop.is_aborted() {
            // they hold no lease: their guards go, and with them the run
            waiting.clear();
        }
        if waiting.is_empty() {
            // the run is over when the liveness channel closes (nothing open anywhere)
            select! {
                recv(defer) -> m => {
                    if let Ok(w) = m {
                        waiting.push(w);
                        pause = Duration::from_millis(100);
                    }
                }
                recv(alive) -> _ => return,
            }
            continue;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(2));
        let keys: Vec<(CacheKey, usize)> = match waiting
            .iter()
            .map(|w| shared.ctx.key(&w.image.sha))
            .collect()
        {
            Ok(k) => k,
            Err(e) => {
                shared.stop.abort(e);
                continue;
            }
        };
        let plain: Vec<CacheKey> = keys.iter().map(|(k, _)| k.clone()).collect();
        let found = shared.ctx.cache.get_many(&plain);
        let mut still = Vec::new();
        // the longest any of them can still be held by a process that has stopped
        let mut longest = Duration::ZERO;
        for ((w, (key, channels)), look) in waiting.drain(..).zip(keys).zip(found) {
            let ab = match look {
                Lookup::Hit(bytes) => shared.ctx.decode_value(&bytes, channels),
                Lookup::Miss(crate::cache::Miss::Error(e)) => {
                    shared.cache_error(super::report::CacheOp::Get, || {
                        format!("cache lookup failed ({e}); recomputing")
                    });
                    None
                }
                Lookup::Miss(_) => None,
            };
            let back = match ab {
                Some(ab) => Work::Landed(w, ab),
                None => match shared.ctx.cache.lease_left(&key) {
                    Ok(Some(left)) => {
                        longest = longest.max(left);
                        still.push(w);
                        continue;
                    }
                    _ => Work::Lapsed(w),
                },
            };
            pause = Duration::from_millis(100);
            // still counted as open: it goes back to the prep workers
            shared.flight.hand_back(back);
        }
        waiting = still;
        // said once every image that will wait is here (the walk is over and nothing else is
        // open in the prep stage), so that the count is the whole count, not the first one;
        // or, if that takes long (a long walk, a long queue), after SAY_AFTER with the count so far
        let since = *first_wait.get_or_insert_with(Instant::now);
        let all_here = shared.flight.walk_done.load(Ordering::SeqCst)
            && shared.flight.open.load(Ordering::SeqCst) <= waiting.len();
        if !said
            && (all_here || since.elapsed() >= SAY_AFTER)
            && !waiting.is_empty()
            && !shared.ctx.opts.quiet
        {
            said = true;
            let n = waiting.len();
            shared.tally.progress.println(&format!(
                "ddcolor: waiting for {n} image{} that another process is colorizing: they are \
                 colorized here if its lease{} lapse{} (at most {} s from now if it has stopped; \
                 leases last {} s)",
                if n == 1 { "" } else { "s" },
                if n == 1 { "" } else { "s" },
                if n == 1 { "s" } else { "" },
                longest.as_secs_f64().ceil() as u64,
                shared.ctx.opts.lease_ttl.as_secs_f64(),
            ));
        }
    }
}
