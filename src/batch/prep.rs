//! One input through the prep stage, a function per step, each taking the image by value
//! ([`super::stage`]): [`hash`] (from the index, else by reading the file once), [`claim`]
//! (in-run dedup), [`lease`] (cache lookup, lease just in time), [`load`] (the bytes, read now
//! if the index gave the hash, and checked against it), [`decode`] (and the model input). The
//! bytes hashed are the bytes decoded, so a cache key never names other bytes than those
//! inferred.
use std::path::Path;

use super::dedup::Claim;
use super::index::Stat;
use super::options::ALREADY_COLOUR;
use super::read::{max_file_bytes, read_file, sha256};
use super::report::{CacheOp, Plan, Status};
use super::stage::{
    Bytes, Carry, Claimed, Decoded, Entry, Found, Hashed, Image, Job, Leased, Loaded, Open,
    Predicted, Role, Served, Source, Waiting, Work,
};
use super::state::Shared;
use crate::cache::{LeaseOutcome, Lookup, Miss};
use crate::imageio;
use crate::pipeline::{self, Keep};

/// What the prep stage hands on.
pub(crate) enum Prepped {
    /// For the model.
    Model(Job),
    /// Served from the cache: straight to the writer.
    Cached(Predicted),
}

/// Take `work` as far as the stage goes: for the model or the writer, or `None` when it was
/// settled here, attached to its primary, or handed to the poller.
pub(crate) fn advance(shared: &Shared, work: Work) -> Option<Prepped> {
    let mut leased = match work {
        Work::Found(found) => lease(shared, claim(shared, hash(shared, found)?)?)?,
        Work::Lapsed(w) => lease(shared, w.claimed())?,
        Work::Landed(w, ab) => w.landed(ab),
    };
    loop {
        match load(shared, leased)? {
            Load::Same(loaded) => return decode(shared, loaded),
            // changed since its hash was taken: claimed again by the new one
            Load::Changed(hashed) => leased = lease(shared, claim(shared, hashed)?)?,
        }
    }
}

/// The hash of an input: from the index when the file is unchanged since it was hashed, else
/// by reading it (the bytes are kept for decoding). A file that cannot be read is settled.
fn hash(shared: &Shared, found: Found) -> Option<Hashed> {
    let Found { entry, open } = found;
    let source = &entry.input.source;
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
                return Some(Hashed {
                    entry,
                    open,
                    sha,
                    bytes: None,
                });
            }
        }
    }
    match read(shared, source) {
        Ok((bytes, sha, stat)) => {
            remember(shared, resolved.as_deref(), stat, sha);
            Some(Hashed {
                entry,
                open,
                sha,
                bytes: Some(bytes),
            })
        }
        Err(e) => {
            shared.settle(&entry, None, Status::Failed, &e);
            None
        }
    }
}

/// Read a file whole into a slot among the images in flight (waiting for one), counted.
fn read(shared: &Shared, source: &Path) -> Result<(Bytes, [u8; 32], Option<Stat>), String> {
    let slot = shared.flight.slots.take();
    let r = read_file(source, max_file_bytes(shared.ctx.opts.max_pixels))?;
    shared.tally.counts(|c| {
        c.hashed += 1;
        c.bytes_read += r.bytes.len() as u64;
    });
    let bytes = Bytes {
        data: r.bytes,
        slot,
    };
    Ok((bytes, r.sha256, r.stat))
}

/// Record a hash in the index under the file's resolved path (only for a file that did not
/// change while it was read).
fn remember(shared: &Shared, resolved: Option<&Path>, stat: Option<Stat>, sha: [u8; 32]) {
    if let (Some(stat), Some(resolved)) = (stat, resolved) {
        shared.ctx.index.record(resolved, &stat, sha);
    }
}

/// Claim the hash in the run's dedup map: the first of its bytes is the primary; a copy of one
/// in flight waits for it (attached: `None`), a copy of one written is copied from its output
/// (settled: `None`) or, when it cannot be, processed again as a duplicate.
fn claim(shared: &Shared, hashed: Hashed) -> Option<Claimed> {
    let Hashed {
        entry,
        open,
        sha,
        bytes,
    } = hashed;
    // a dry run attaches copies too: their lines follow their original's
    let role = match shared.flight.dedup.claim(&sha, || entry.clone(), true) {
        Claim::Primary => Role::Primary,
        Claim::Attached => return None,
        Claim::Written(primary) => {
            if copy_output(shared, &entry, &sha, &primary) {
                return None;
            }
            Role::Duplicate
        }
        Claim::Again => {
            if shared.ctx.opts.dry_run {
                plan(shared, Plan::Duplicate, &entry);
                return None;
            }
            Role::Duplicate
        }
    };
    Some(Claimed {
        image: Image { entry, sha, role },
        open,
        bytes,
    })
}

/// Where its colours come from: the cache, else the model under a lease taken just now. An
/// image whose lease another process holds goes to the poller (`None`, as is a dry run's
/// image, planned here).
fn lease(shared: &Shared, claimed: Claimed) -> Option<Leased> {
    let Claimed { image, open, bytes } = claimed;
    if shared.ctx.opts.dry_run && !shared.ctx.model.has_weights() {
        // the model is not on this machine: no identity, no cache lookup
        plan(shared, Plan::Infer, &image.entry);
        plan_copies(shared, &image.sha);
        return None;
    }
    let (key, channels) = match shared.ctx.key(&image.sha) {
        Ok(k) => k,
        Err(e) => {
            shared.stop.abort(e);
            return None;
        }
    };
    let cached = lookup(shared, &key, channels);
    if shared.ctx.opts.dry_run {
        let action = if cached.is_some() {
            Plan::Cache
        } else {
            Plan::Infer
        };
        plan(shared, action, &image.entry);
        plan_copies(shared, &image.sha);
        return None;
    }
    let source = match cached {
        Some(ab) => Source::Cached(ab),
        None if !shared.ctx.cache.takes_leases() => Source::Model(None),
        None => match shared.ctx.cache.try_lease(&key, shared.ctx.opts.lease_ttl) {
            Ok(LeaseOutcome::Acquired(lease)) => {
                shared.flight.leases.hold(&lease);
                // another process may have stored the value between lookup and lease
                match lookup(shared, &key, channels) {
                    Some(ab) => {
                        shared.release(Some(lease));
                        Source::Cached(ab)
                    }
                    None => Source::Model(Some(lease)),
                }
            }
            Ok(LeaseOutcome::HeldElsewhere) => {
                // its bytes (and their slot) are given up while it waits
                drop(bytes);
                shared.flight.defer(Waiting { image, open });
                return None;
            }
            Err(e) => {
                shared.cache_error(CacheOp::Lease, || {
                    format!("cannot take inference leases ({e}); inferring without one")
                });
                Source::Model(None)
            }
        },
    };
    Some(Leased {
        image,
        open,
        bytes,
        source,
    })
}

/// What reading a leased image's bytes found.
enum Load {
    /// The bytes its hash names.
    Same(Loaded),
    /// Other bytes: the file changed since its hash was taken.
    Changed(Hashed),
}

/// Its bytes: those read to hash it, else read now (and checked against its hash). A file
/// that cannot be read is settled (`None`).
fn load(shared: &Shared, leased: Leased) -> Option<Load> {
    let Leased {
        image,
        open,
        bytes,
        source,
    } = leased;
    if let Some(bytes) = bytes {
        return Some(Load::Same(Loaded {
            image,
            open,
            bytes,
            source,
        }));
    }
    match read(shared, &image.entry.input.source) {
        Ok((bytes, sha, stat)) => {
            if shared.ctx.index.is_enabled() {
                let resolved = image.entry.input.source.canonicalize().ok();
                remember(shared, resolved.as_deref(), stat, sha);
            }
            if sha != image.sha {
                let hashed = changed_under_us(shared, image, open, source, bytes, sha);
                return Some(Load::Changed(hashed));
            }
            Some(Load::Same(Loaded {
                image,
                open,
                bytes,
                source,
            }))
        }
        Err(e) => {
            shared.release(source.into_lease());
            shared.settle_all(&image, Status::Failed, &e);
            None
        }
    }
}

/// The file changed between the hash the index gave and the read: give up the old hash (its
/// lease, its dedup slot, whose waiters go back to be processed on their own) and go on with
/// the bytes just read.
fn changed_under_us(
    shared: &Shared,
    image: Image,
    open: Open,
    source: Source,
    bytes: Bytes,
    new_sha: [u8; 32],
) -> Hashed {
    shared.release(source.into_lease());
    if image.role == Role::Primary {
        for entry in shared.flight.dedup.abandon(&image.sha) {
            let open = open.clone();
            shared.flight.hand_back(Work::Found(Found { entry, open }));
        }
    }
    debug_assert_eq!(sha256(&bytes.data), new_sha);
    Hashed {
        entry: image.entry,
        open,
        sha: new_sha,
        bytes: Some(bytes),
    }
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
/// `--force`), never inferred and never stored. Passed on, it is no longer open in the prep
/// stage.
fn decode(shared: &Shared, loaded: Loaded) -> Option<Prepped> {
    let Loaded {
        image,
        open,
        bytes: Bytes { data, slot },
        source,
    } = loaded;
    // `--compat upstream` reads JPEG pixels as OpenCV does
    let decoder = match shared.ctx.model.lab() {
        pipeline::LabFlavour::OpenCv => imageio::Decoder::OpenCv,
        pipeline::LabFlavour::Exact => imageio::Decoder::Own,
    };
    let source_path = &image.entry.input.source;
    let decoded = imageio::decode_bytes_as(source_path, data, shared.ctx.opts.max_pixels, decoder);
    let d = match decoded {
        Ok(d) => d,
        Err(e) => {
            shared.release(source.into_lease());
            shared.settle_all(&image, Status::Failed, &e.detail());
            return None;
        }
    };
    if !shared.ctx.opts.force && pipeline::tone::is_already_colour(&d.image) {
        shared.release(source.into_lease());
        shared.settle_all(&image, Status::Skipped, ALREADY_COLOUR);
        return None;
    }
    let carry = Carry {
        keep: Keep::of(&d.image),
        meta: d.meta,
    };
    // the model input only for the model: a cached prediction needs the L plane alone
    let needs_input = matches!(source, Source::Model(_));
    let prepared = shared.ctx.model.prepare_image(&d.image, needs_input);
    drop(d.image);
    // passed on: no longer open in the prep stage
    drop(open);
    let decoded = Decoded {
        image,
        slot,
        prepared,
        carry,
    };
    Some(match source {
        Source::Cached(ab) => Prepped::Cached(Predicted {
            decoded,
            ab,
            by: Served::Cache,
        }),
        Source::Model(lease) => Prepped::Model(Job { decoded, lease }),
    })
}

/// A copy of an image whose output this run already wrote: copy that output when it is in
/// the same format. False if it could not be (then the image is processed again).
fn copy_output(shared: &Shared, entry: &Entry, sha: &[u8; 32], primary: &Path) -> bool {
    if imageio::format_for(primary) != imageio::format_for(&entry.dest) {
        return false;
    }
    let copied = std::fs::File::open(primary)
        .map_err(|e| e.to_string())
        .and_then(|mut f| {
            imageio::write_atomic(&entry.dest, |w| {
                std::io::copy(&mut f, w)
                    .map(|_| ())
                    .map_err(|e| crate::error::Error::Write {
                        path: entry.dest.clone(),
                        reason: e.to_string(),
                    })
            })
            .map_err(|e| e.to_string())
        });
    if copied.is_err() {
        return false;
    }
    shared.record(entry.record(Some(sha), Status::Duplicate, Some(entry.dest.clone()), None));
    true
}

/// A `--dry-run` line for `entry`, counted for the summary.
fn plan(shared: &Shared, action: Plan, entry: &Entry) {
    plan_line(shared, action, &entry.input.source, &entry.dest);
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
