//! The writer: full-resolution colour composed once per image, written atomically to the
//! image's destination and to those of the copies that waited for it, each recorded once its
//! file is complete and synced, just before it is renamed into place. The first write into a folder sweeps the temporary files that dead
//! writers left there.
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crossbeam_channel::Receiver;

use super::prep::fail;
use super::report::{Record, Status};
use super::state::{Carry, Ready, Shared};
use crate::imageio;
use crate::pipeline::{self, Keep};

pub(crate) fn writer(shared: &Shared, ready: Receiver<Ready>) {
    let mut swept: HashSet<PathBuf> = HashSet::new();
    for (job, result) in ready {
        if let Err(e) = result {
            fail(shared, job.item, &e);
            continue;
        }
        let Some(ab) = job.ab.as_deref() else {
            fail(shared, job.item, "no prediction");
            continue;
        };
        // composing needs the pipeline settings only: a cached image never loads the model
        let img = shared
            .ctx
            .model
            .compose_image(&job.prepared, ab, &job.carry.keep);
        let mut item = job.item;
        let carry = job.carry;
        let sha = item.sha_hex();
        // the line goes to the report before the output is renamed into place (a kill in
        // between leaves a line whose file a rerun writes; never a file without its line)
        let status = job.status;
        let (source, dest) = (item.input.source.clone(), item.dest.clone());
        let root = item.input.root();
        let started = item.started;
        let primary = write_one(shared, &mut swept, &img, &carry, &item.dest, || {
            shared.record(Record {
                path: source.clone(),
                root: root.clone(),
                sha256: sha.clone(),
                status,
                output: Some(dest.clone()),
                error: None,
                millis: started.elapsed().as_millis() as u64,
            })
        });
        let written = primary.is_ok();
        if let Err(e) = primary {
            shared.record(Record {
                path: source,
                root,
                sha256: sha.clone(),
                status: Status::Failed,
                output: None,
                error: Some(e),
                millis: started.elapsed().as_millis() as u64,
            });
        }
        if item.primary {
            let out = written.then_some(item.dest.as_path());
            let waiters = item
                .sha
                .take()
                .map(|s| shared.flight.dedup.finish(&s, out))
                .unwrap_or_default();
            for w in waiters {
                let r = write_one(shared, &mut swept, &img, &carry, &w.dest, || {
                    shared.record(Record {
                        path: w.input.source.clone(),
                        root: w.input.root(),
                        sha256: sha.clone(),
                        status: Status::Duplicate,
                        output: Some(w.dest.clone()),
                        error: None,
                        millis: w.started.elapsed().as_millis() as u64,
                    })
                });
                if let Err(e) = r {
                    shared.record(Record {
                        root: w.input.root(),
                        path: w.input.source,
                        sha256: sha.clone(),
                        status: Status::Failed,
                        output: None,
                        error: Some(e),
                        millis: w.started.elapsed().as_millis() as u64,
                    });
                }
            }
        }
    }
}

/// Write `img` to `dest` (sweeping `dest`'s folder first, once per run).
fn write_one(
    shared: &Shared,
    swept: &mut HashSet<PathBuf>,
    img: &image::DynamicImage,
    carry: &Carry,
    dest: &Path,
    before_rename: impl FnOnce(),
) -> Result<(), String> {
    if let Some(dir) = dest.parent() {
        if !swept.contains(dir) {
            imageio::sweep_temps(dir);
            swept.insert(dir.to_owned());
        }
    }
    note_format_losses(shared, &carry.keep, dest);
    imageio::save_with_then(
        img,
        Some(&shared.ctx.opts.output),
        dest,
        Some(&carry.meta),
        &shared.ctx.opts.encoding,
        before_rename,
    )
    .map_err(|e| e.detail())
}

/// Say once in the summary when an output format cannot hold what the source had.
fn note_format_losses(shared: &Shared, keep: &Keep, dest: &Path) {
    let Some(format) = imageio::format_for(dest) else {
        return;
    };
    if keep.depth == pipeline::Depth::Sixteen && imageio::is_8bit_only(format) {
        shared.tally.note_once(&format!(
            "16-bit sources were written as 8-bit {} (--format png or tiff keeps 16 bits)",
            format.extensions_str()[0].to_ascii_uppercase()
        ));
    }
    if keep.alpha.is_some() && imageio::drops_alpha(format) {
        shared.tally.note_once(&format!(
            "transparency was dropped from {} outputs (--format png, tiff or webp keeps it)",
            format.extensions_str()[0].to_ascii_uppercase()
        ));
    }
}
