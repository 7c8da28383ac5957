//! One input through the prep stage: hash (from the index, else by reading the file once),
//! in-run dedup, cache lookup, lease just in time, then the bytes (read now if the index gave
//! the hash, and checked against it), decode and the model input. The bytes hashed are the
//! bytes decoded, so a cache key never names other bytes than those inferred.
use std::path::Path;

use super::dedup::{Claim, Waiter};
use super::index::Stat;
use super::options::ALREADY_COLOUR;
use super::read::{max_file_bytes, read_file, sha256};
use super::report::Plan;
use super::report::{CacheOp, Record, Status};
use super::state::{Carry, Item, Job, Shared};
use crate::cache::{LeaseOutcome, Lookup, Miss};
use crate::imageio;
use crate::pipeline::{self, Keep};

/// Take `item` as far as the stage goes: a job for inference or the writer, or `None` when it
/// was settled here, attached to its primary, or handed to the poller.
pub(crate) fn advance(shared: &Shared, mut item: Item) -> Option<Job> {
    loop {
        if item.sha.is_none() {
            if let Err(e) = hash(shared, &mut item) {
                shared.settle(&item, Status::Failed, &e);
                return None;
            }
        }
        let sha = item.sha.expect("hashed");
        if !item.primary && !item.dup {
            let waiter = Waiter {
                input: item.input.clone(),
                dest: item.dest.clone(),
                started: item.started,
            };
            // a dry run attaches copies too: their lines follow their original's
            match shared.flight.dedup.claim(&sha, waiter, true) {
                Claim::Primary => item.primary = true,
                Claim::Attached => return None,
                Claim::Written(primary) => {
                    if copy_output(shared, &item, &primary) {
                        return None;
                    }
                    item.dup = true;
                }
                Claim::Again => {
                    if shared.ctx.opts.dry_run {
                        plan(shared, Plan::Duplicate, &item);
                        return None;
                    }
                    item.dup = true;
                }
            }
        }
        if shared.ctx.opts.dry_run && !shared.ctx.model.has_weights() {
            // the model is not on this machine: no identity, no cache lookup
            plan(shared, Plan::Infer, &item);
            plan_copies(shared, &sha);
            return None;
        }
        let (key, channels) = match shared.ctx.key(&sha) {
            Ok(k) => k,
            Err(e) => {
                shared.stop.abort(e);
                return None;
            }
        };
        if item.cached.is_none() {
            item.cached = lookup(shared, &key, channels);
            if shared.ctx.opts.dry_run {
                let action = if item.cached.is_some() {
                    Plan::Cache
                } else {
                    Plan::Infer
                };
                plan(shared, action, &item);
                plan_copies(shared, &sha);
                return None;
            }
            if item.cached.is_none() && shared.ctx.cache.takes_leases() && item.lease.is_none() {
                match shared.ctx.cache.try_lease(&key, shared.ctx.opts.lease_ttl) {
                    Ok(LeaseOutcome::Acquired(lease)) => {
                        shared.flight.leases.hold(&lease);
                        // another process may have stored the value between lookup and lease
                        item.cached = lookup(shared, &key, channels);
                        if item.cached.is_some() {
                            shared.release(Some(lease));
                        } else {
                            item.lease = Some(lease);
                        }
                    }
                    Ok(LeaseOutcome::HeldElsewhere) => {
                        item.bytes = None;
                        item.slot = None;
                        shared.flight.defer(item);
                        return None;
                    }
                    Err(e) => {
                        shared.cache_error(CacheOp::Lease, || {
                            format!("cannot take inference leases ({e}); inferring without one")
                        });
                    }
                }
            }
        }
        if item.bytes.is_none() && item.slot.is_none() {
            item.slot = Some(shared.flight.slots.take());
        }
        let bytes = match item.bytes.take() {
            Some(b) => b,
            None => match read_file(
                &item.input.source,
                max_file_bytes(shared.ctx.opts.max_pixels),
            ) {
                Ok(r) => {
                    shared.tally.counts(|c| {
                        c.hashed += 1;
                        c.bytes_read += r.bytes.len() as u64;
                    });
                    if shared.ctx.index.is_enabled() {
                        let resolved = item.input.source.canonicalize().ok();
                        remember(shared, resolved.as_deref(), r.stat, r.sha256);
                    }
                    if r.sha256 != sha {
                        // changed since its hash was taken: start over with the new bytes
                        changed_under_us(shared, &mut item, r.bytes, r.sha256);
                        continue;
                    }
                    r.bytes
                }
                Err(e) => {
                    fail(shared, item, &e);
                    return None;
                }
            },
        };
        return decode(shared, item, bytes);
    }
}

/// The hash of `item`: from the index when the file is unchanged since it was hashed, else by
/// reading it (the bytes are kept for decoding).
fn hash(shared: &Shared, item: &mut Item) -> Result<(), String> {
    let source = &item.input.source;
    // the path is resolved once, and only when an index is there to ask and to tell
    let resolved = shared
        .ctx
        .index
        .is_enabled()
        .then(|| source.canonicalize().ok())
        .flatten();
    if let (false, Some(resolved)) = (shared.ctx.opts.rehash, &resolved) {
        if let Ok(meta) = std::fs::metadata(source) {
            if let Some(sha) = shared.ctx.index.lookup(resolved, &Stat::of(&meta)) {
                item.sha = Some(sha);
                return Ok(());
            }
        }
    }
    if item.slot.is_none() {
        item.slot = Some(shared.flight.slots.take());
    }
    let r = read_file(source, max_file_bytes(shared.ctx.opts.max_pixels))?;
    shared.tally.counts(|c| {
        c.hashed += 1;
        c.bytes_read += r.bytes.len() as u64;
    });
    remember(shared, resolved.as_deref(), r.stat, r.sha256);
    item.sha = Some(r.sha256);
    item.bytes = Some(r.bytes);
    Ok(())
}

/// Record a hash in the index under the file's resolved path (only for a file that did not
/// change while it was read).
fn remember(shared: &Shared, resolved: Option<&Path>, stat: Option<Stat>, sha: [u8; 32]) {
    if let (Some(stat), Some(resolved)) = (stat, resolved) {
        shared.ctx.index.record(resolved, &stat, sha);
    }
}

/// The file changed between the hash the index gave and the read: give up the old hash (its
/// lease, its dedup slot, whose waiters go back to be processed on their own) and go on with
/// the bytes just read.
fn changed_under_us(shared: &Shared, item: &mut Item, bytes: Vec<u8>, new_sha: [u8; 32]) {
    let old = item.sha.expect("hashed");
    shared.release(item.lease.take());
    if item.primary {
        for w in shared.flight.dedup.abandon(&old) {
            let open = item
                .open
                .clone()
                .expect("an item in the prep stage is open");
            let mut again = Item::new(w.input, w.dest, open);
            again.started = w.started;
            shared.flight.hand_back(again);
        }
    }
    debug_assert_eq!(sha256(&bytes), new_sha);
    item.sha = Some(new_sha);
    item.bytes = Some(bytes);
    item.primary = false;
    item.dup = false;
    item.cached = None;
}

/// Look `key` up; a value that fails its checks is a miss, a backend error is counted (and
/// with `--require-cache` stops the run).
fn lookup(shared: &Shared, key: &crate::cache::CacheKey, channels: usize) -> Option<Vec<f32>> {
    let look = shared
        .ctx
        .cache
        .get_many(std::slice::from_ref(key))
        .pop()
        .unwrap_or(Lookup::Miss(Miss::Absent));
    let ab = match look {
        Lookup::Hit(bytes) => shared.ctx.decode_value(&bytes, channels),
        Lookup::Miss(Miss::Error(e)) => {
            shared.cache_error(CacheOp::Get, || {
                format!("cache lookup failed ({e}); recomputing")
            });
            None
        }
        Lookup::Miss(_) => None,
    };
    // hits and misses are counted when an image is settled, by how it was served
    // ([`Shared::record`]): a miss here may still end as a value another process stored
    ab
}

/// Decode the bytes and prepare the model input; photos already in colour are skipped (unless
/// `--force`), never inferred and never stored.
fn decode(shared: &Shared, item: Item, bytes: Vec<u8>) -> Option<Job> {
    // `--compat upstream` reads JPEG pixels as OpenCV does
    let decoder = match shared.ctx.model.lab() {
        pipeline::LabFlavour::OpenCv => imageio::Decoder::OpenCv,
        pipeline::LabFlavour::Exact => imageio::Decoder::Own,
    };
    let decoded = imageio::decode_bytes_as(
        &item.input.source,
        bytes,
        shared.ctx.opts.max_pixels,
        decoder,
    );
    let d = match decoded {
        Ok(d) => d,
        Err(e) => {
            fail(shared, item, &e.detail());
            return None;
        }
    };
    if !shared.ctx.opts.force && pipeline::tone::is_already_colour(&d.image) {
        settle_all(shared, item, Status::Skipped, ALREADY_COLOUR);
        return None;
    }
    let carry = Carry {
        keep: Keep::of(&d.image),
        meta: d.meta,
    };
    let prepared = shared.ctx.model.prepare_image(&d.image);
    drop(d.image);
    let status = match (&item.cached, item.dup) {
        (Some(_), true) => Status::Duplicate,
        (Some(_), false) => Status::Cached,
        (None, _) => Status::Inferred,
    };
    Some(Job {
        ab: item.cached.clone(),
        item,
        prepared,
        carry,
        status,
    })
}

/// `item` failed: it and the copies waiting for it.
pub(crate) fn fail(shared: &Shared, item: Item, reason: &str) {
    settle_all(shared, item, Status::Failed, reason);
}

/// Settle `item` and its waiting copies without an output, and release what it holds.
pub(crate) fn settle_all(shared: &Shared, mut item: Item, status: Status, reason: &str) {
    shared.release(item.lease.take());
    shared.settle(&item, status, reason);
    if let (true, Some(sha)) = (item.primary, item.sha) {
        for w in shared.flight.dedup.finish(&sha, None) {
            shared.record(Record {
                root: w.input.root(),
                path: w.input.source,
                sha256: item.sha_hex(),
                status,
                output: None,
                error: Some(reason.to_owned()),
                millis: w.started.elapsed().as_millis() as u64,
            });
        }
    }
}

/// A copy of an image whose output this run already wrote: copy that output when it is in
/// the same format. False if it could not be (then the image is processed again).
fn copy_output(shared: &Shared, item: &Item, primary: &Path) -> bool {
    if imageio::format_for(primary) != imageio::format_for(&item.dest) {
        return false;
    }
    let copied = std::fs::File::open(primary)
        .map_err(|e| e.to_string())
        .and_then(|mut f| {
            imageio::write_atomic(&item.dest, |w| {
                std::io::copy(&mut f, w)
                    .map(|_| ())
                    .map_err(|e| crate::error::Error::Write {
                        path: item.dest.clone(),
                        reason: e.to_string(),
                    })
            })
            .map_err(|e| e.to_string())
        });
    if copied.is_err() {
        return false;
    }
    shared.record(Record {
        path: item.input.source.clone(),
        root: item.input.root(),
        sha256: item.sha_hex(),
        status: Status::Duplicate,
        output: Some(item.dest.clone()),
        error: None,
        millis: item.started.elapsed().as_millis() as u64,
    });
    true
}

/// A `--dry-run` line for `item`, counted for the summary.
fn plan(shared: &Shared, action: Plan, item: &Item) {
    plan_line(shared, action, &item.input.source, &item.dest);
}

/// The `duplicate` lines of the copies attached to `sha`'s original, right after its own.
fn plan_copies(shared: &Shared, sha: &[u8; 32]) {
    for w in shared.flight.dedup.finish(sha, None) {
        plan_line(shared, Plan::Duplicate, &w.input.source, &w.dest);
    }
}

fn plan_line(shared: &Shared, action: Plan, source: &Path, dest: &Path) {
    if !shared.ctx.opts.dry_run {
        return;
    }
    shared.tally.summary().planned.add(action);
    shared.ctx.dry_line(&format!(
        "{}\t{}\t{}",
        action.as_str(),
        crate::text::shown(source),
        crate::text::shown(dest)
    ));
}
