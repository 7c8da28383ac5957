//! The writer: full-resolution colour composed once per image, written atomically to the
//! image's destination and to those of the copies that waited for it, each recorded once its
//! file is complete and synced, just before it is renamed into place. The first write into a folder sweeps the temporary files that dead
//! writers left there.
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crossbeam_channel::Receiver;

use super::report::Status;
use super::stage::{Carry, Image, Predicted, Ready, Role, Slot};
use super::state::Shared;
use crate::imageio;
use crate::pipeline::{self, Keep};

/// Write each image that arrives, then the copies that waited for it; record each.
pub(crate) fn writer(shared: &Shared, ready: Receiver<Ready>) {
    let mut swept: HashSet<PathBuf> = HashSet::new();
    for ready in ready {
        match ready {
            Ok(predicted) => {
                let written = write(shared, &mut swept, predicted);
                let img = if written.image.role == Role::Primary {
                    write_copies(shared, &mut swept, written)
                } else {
                    written.img
                };
                // the next image composes into this one's memory (no fresh pages to fault in)
                crate::alloc::recycle(img);
            }
            Err((decoded, e)) => shared.settle_all(&decoded.image, Status::Failed, &e),
        }
    }
}

/// An image written (or not: `ok`), with its colour composed once, for the copies waiting for
/// it; still in flight.
struct Written {
    image: Image,
    ok: bool,
    img: image::DynamicImage,
    carry: Carry,
    _slot: Slot,
}

/// Compose full-resolution colour, write it and record the image.
fn write(shared: &Shared, swept: &mut HashSet<PathBuf>, predicted: Predicted) -> Written {
    let status = predicted.status();
    let Predicted { decoded, ab, .. } = predicted;
    // composing needs the pipeline settings only: a cached image never loads the model
    let img = shared
        .ctx
        .model
        .compose_image(&decoded.prepared, &ab, &decoded.carry.keep);
    drop((ab, decoded.prepared));
    let (image, carry) = (decoded.image, decoded.carry);
    let (entry, sha) = (&image.entry, &image.sha);
    // the line goes to the report before the output is renamed into place (a kill in
    // between leaves a line whose file a rerun writes; never a file without its line)
    let result = write_one(shared, swept, &img, &carry, &entry.dest, || {
        shared.record(entry.record(Some(sha), status, Some(entry.dest.clone()), None))
    });
    if let Err(e) = &result {
        shared.record(entry.record(Some(sha), Status::Failed, None, Some(e.clone())));
    }
    Written {
        ok: result.is_ok(),
        image,
        img,
        carry,
        _slot: decoded.slot,
    }
}

/// The copies that waited for a primary: written from its colour, each recorded; the colour
/// is handed back.
fn write_copies(
    shared: &Shared,
    swept: &mut HashSet<PathBuf>,
    written: Written,
) -> image::DynamicImage {
    let Written {
        image,
        ok,
        img,
        carry,
        _slot,
    } = written;
    let out = ok.then_some(image.entry.dest.as_path());
    let sha = &image.sha;
    for w in shared.flight.dedup.finish(sha, out) {
        let r = write_one(shared, swept, &img, &carry, &w.dest, || {
            shared.record(w.record(Some(sha), Status::Duplicate, Some(w.dest.clone()), None))
        });
        if let Err(e) = r {
            shared.record(w.record(Some(sha), Status::Failed, None, Some(e)));
        }
    }
    img
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
        &shared
            .ctx
            .opts
            .encoding
            .for_prediction((img.width(), img.height()), shared.ctx.model.size()),
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
