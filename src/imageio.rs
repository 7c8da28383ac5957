//! Reading and writing image files: decoding with limits checked against the header before any
//! pixel buffer is allocated, and atomic writes (temporary file in the destination folder, then
//! rename) so a crash never leaves half an image under the final name.
use std::io::{BufWriter, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use image::{DynamicImage, ImageFormat, ImageReader};

use crate::error::{Error, Result};

/// Default ceiling on decoded pixels: 250 megapixels covers a 600 dpi A3 scan.
pub const DEFAULT_MAX_PIXELS: u64 = 250_000_000;

/// Decode an image file, refusing images whose header claims more than `max_pixels` pixels
/// (checked before any pixel buffer is allocated) and JPEGs that end before their image does.
pub fn decode(path: &Path, max_pixels: u64) -> Result<DynamicImage> {
    let err = |reason: String| Error::Decode {
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if bytes.is_empty() {
        return Err(err("the file is empty".into()));
    }
    let open = || {
        ImageReader::new(Cursor::new(&bytes[..]))
            .with_guessed_format()
            .map_err(|e| err(e.to_string()))
    };
    let reader = open()?;
    let format = reader
        .format()
        .ok_or_else(|| err("not an image format ddcolor can read".into()))?;
    let (w, h) = reader.into_dimensions().map_err(|e| err(e.to_string()))?;
    let pixels = w as u64 * h as u64;
    if pixels == 0 {
        return Err(err(format!("the header claims an empty {w}x{h} image")));
    }
    if pixels > max_pixels {
        return Err(err(format!(
            "the header claims {w}x{h} = {pixels} pixels, more than the limit of {max_pixels} \
             (raise --max-pixels if the file is genuine)"
        )));
    }
    if format == ImageFormat::Jpeg {
        jpeg_complete(&bytes).map_err(err)?;
    }
    let mut reader = open()?;
    let mut limits = image::Limits::default();
    // room for the claimed size at 4 channels x 16 bits, and not a byte more
    limits.max_alloc = Some(pixels.saturating_mul(8).saturating_add(64 << 20));
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    reader.limits(limits);
    reader.decode().map_err(|e| err(e.to_string()))
}

/// Walk a JPEG's segments and entropy-coded scans up to the end-of-image marker. JPEG decoders
/// are lenient and fill a cut-off file with gray; an archive wants to hear that it is cut off.
/// Data after the end marker (camera trailers, motion photos) is allowed.
pub fn jpeg_complete(b: &[u8]) -> std::result::Result<(), String> {
    let truncated = |what: &str| Err(format!("truncated JPEG: the file ends {what}"));
    if b.len() < 4 || b[0] != 0xFF || b[1] != 0xD8 {
        return Err("not a JPEG (no start-of-image marker)".into());
    }
    let n = b.len();
    let mut i = 2;
    loop {
        // a marker: 0xFF (fill bytes allowed), then its code
        while i < n && b[i] == 0xFF && i + 1 < n && b[i + 1] == 0xFF {
            i += 1;
        }
        if i + 1 >= n {
            return truncated("before the end-of-image marker");
        }
        if b[i] != 0xFF {
            return Err(format!("corrupt JPEG: no marker at byte {i}"));
        }
        let m = b[i + 1];
        match m {
            0xD9 => return Ok(()),
            0x01 | 0xD0..=0xD7 => {
                i += 2;
                continue;
            }
            _ => {}
        }
        if i + 3 >= n {
            return truncated("inside a segment header");
        }
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        let end = i + 2 + len;
        if len < 2 || end > n {
            return truncated("inside a segment");
        }
        i = end;
        if m == 0xDA {
            // entropy-coded data runs to the next marker that is not a stuffed 0xFF00 or a
            // restart marker
            loop {
                if i + 1 >= n {
                    return truncated("in the middle of the image data");
                }
                if b[i] == 0xFF && b[i + 1] != 0x00 && !(0xD0..=0xD7).contains(&b[i + 1]) {
                    break;
                }
                i += 1;
            }
        }
    }
}

/// The format to write for an output path, from its extension.
pub fn format_for(path: &Path) -> Option<ImageFormat> {
    ImageFormat::from_path(path).ok()
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary name beside `dest`, unique to this process and call.
fn temp_path(dest: &Path) -> PathBuf {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.{}.{n}.ddcolor-tmp", std::process::id()))
}

/// Write `bytes` to `dest` atomically: a temporary file in the same folder, fsync, rename.
pub fn write_atomic(dest: &Path, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let werr = |reason: String| Error::Write {
        path: dest.to_owned(),
        reason,
    };
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| werr(format!("cannot create folder: {e}")))?;
    }
    let tmp = temp_path(dest);
    let result = (|| {
        let file = std::fs::File::create(&tmp).map_err(|e| werr(e.to_string()))?;
        let mut out = BufWriter::new(file);
        write(&mut out)?;
        let file = out.into_inner().map_err(|e| werr(e.to_string()))?;
        file.sync_all().map_err(|e| werr(e.to_string()))?;
        std::fs::rename(&tmp, dest).map_err(|e| werr(e.to_string()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// JPEG quality used when writing JPEG files.
pub const JPEG_QUALITY: u8 = 95;

/// Encode `img` in the format that `dest`'s extension names, atomically.
pub fn save(img: &DynamicImage, dest: &Path) -> Result<()> {
    let format = format_for(dest).ok_or_else(|| Error::Write {
        path: dest.to_owned(),
        reason: "unknown image extension".into(),
    })?;
    write_atomic(dest, |out| {
        let werr = |e: image::ImageError| Error::Write {
            path: dest.to_owned(),
            reason: e.to_string(),
        };
        match format {
            ImageFormat::Jpeg => {
                let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(out, JPEG_QUALITY);
                img.to_rgb8().write_with_encoder(enc).map_err(werr)
            }
            _ => {
                // formats without seek: encode to memory first
                let mut buf = std::io::Cursor::new(Vec::new());
                img.write_to(&mut buf, format).map_err(werr)?;
                out.write_all(buf.get_ref()).map_err(|e| Error::Write {
                    path: dest.to_owned(),
                    reason: e.to_string(),
                })
            }
        }
    })
}
