//! Reading and writing image files: decoding with limits checked against the header before any
//! pixel buffer is allocated, EXIF orientation applied, metadata ([`Metadata`]) read and written
//! back, and atomic writes (temporary file in the destination folder, then rename) so a crash
//! never leaves half an image under the final name.
//!
//! Encoders ([`Encoding`] says how): JPEG through `jpeg-encoder` (8 bits, 4:4:4; ICC, EXIF,
//! JFIF density, comments), WebP through `image`, PNG through `png` (8 or 16 bits; iCCP, eXIf,
//! pHYs; fdeflate by default) and TIFF through `tiff` (8 or 16 bits, Deflate, LZW or none with
//! the horizontal predictor; ICC, resolution, IFD0 tags, Exif and GPS IFDs).
use std::io::{BufWriter, Cursor, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use image::{DynamicImage, ImageDecoder, ImageEncoder, ImageFormat, ImageReader};

use crate::error::{Error, Result};
use crate::meta::{self, Metadata};

/// Default ceiling on decoded pixels: 250 megapixels covers a 600 dpi A3 scan.
pub const DEFAULT_MAX_PIXELS: u64 = 250_000_000;

/// The largest `--max-pixels` accepted: 2^40 (a trillion pixels, 8 TiB as 16-bit RGBA), far
/// past any scan, and small enough that every size derived from it fits in 64 bits.
pub const MAX_MAX_PIXELS: u64 = 1 << 40;

/// `--max-pixels N`: a whole number from 1 to [`MAX_MAX_PIXELS`].
pub fn parse_max_pixels(s: &str) -> std::result::Result<u64, String> {
    let n: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number of pixels"))?;
    if n == 0 {
        return Err("0 would refuse every image; the smallest is 1".into());
    }
    if n > MAX_MAX_PIXELS {
        return Err(format!(
            "{n} is more than the largest allowed, {MAX_MAX_PIXELS} (2^40 pixels)"
        ));
    }
    Ok(n)
}

/// Decode an image file, upright (EXIF orientation applied), refusing images whose header
/// claims more than `max_pixels` pixels (checked before any pixel buffer is allocated) and JPEGs
/// that end before their image does.
pub fn decode(path: &Path, max_pixels: u64) -> Result<DynamicImage> {
    decode_with_metadata(path, max_pixels).map(|d| d.image)
}

/// A decoded file: its pixels, upright, and what its output carries over.
#[derive(Clone, Debug)]
pub struct Decoded {
    pub image: DynamicImage,
    pub format: ImageFormat,
    /// With orientation already 1: [`Decoded::image`] is upright.
    pub meta: Metadata,
}

/// [`decode`], keeping the file's metadata (ICC profile, EXIF, resolution).
pub fn decode_with_metadata(path: &Path, max_pixels: u64) -> Result<Decoded> {
    let bytes = std::fs::read(path).map_err(|e| Error::Decode {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    decode_bytes(path, bytes, max_pixels)
}

/// [`decode_with_metadata`] of bytes already read (`path` names them in errors): the batch
/// engine reads a file once, hashes that buffer and decodes the same buffer, so a cache key
/// always names the bytes that were inferred.
pub fn decode_bytes(path: &Path, bytes: Vec<u8>, max_pixels: u64) -> Result<Decoded> {
    decode_bytes_as(path, bytes, max_pixels, Decoder::Own)
}

/// Whose decoder reads the pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Decoder {
    /// ddcolor's own (zune-jpeg in strict mode for JPEG, image's decoders for the rest).
    #[default]
    Own,
    /// JPEG as OpenCV's `imread` reads it (libjpeg-turbo, 8-bit RGB), for `--compat
    /// upstream`; other formats as [`Decoder::Own`] (OpenCV's PNG and TIFF readers give the
    /// same 8-bit samples).
    OpenCv,
}

/// [`decode_bytes`] with a choice of [`Decoder`].
pub fn decode_bytes_as(
    path: &Path,
    bytes: Vec<u8>,
    max_pixels: u64,
    decoder: Decoder,
) -> Result<Decoded> {
    let err = |reason: String| Error::Decode {
        path: path.to_owned(),
        reason,
    };
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
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| err(decode_error(format, &e)))?;
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
    let decoder_kind = decoder;
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| err(decode_error(format, &e)))?;
    // metadata is best effort: a damaged profile or EXIF block never costs the picture
    let icc = decoder.icc_profile().ok().flatten();
    let exif = decoder.exif_metadata().ok().flatten();
    let mut image = match (format, decoder_kind) {
        (ImageFormat::Jpeg, Decoder::OpenCv) => {
            drop(decoder);
            jpeg_like_opencv(&bytes).map_err(err)?
        }
        _ => read_pixels(decoder, format, &bytes, (w, h)).map_err(err)?,
    };
    let mut meta = Metadata::read(format, bytes, icc, exif);
    if let Some(o) = image::metadata::Orientation::from_exif(meta.orientation) {
        image.apply_orientation(o);
    }
    meta.set_upright();
    Ok(Decoded {
        image,
        format,
        meta,
    })
}

/// What a decoder's error says to an archivist: a file that cannot be decoded as its header
/// promises is damaged (truncated, or its structure inconsistent); an unsupported variant or a
/// limit is said as such.
fn decode_error(format: ImageFormat, e: &image::ImageError) -> String {
    use image::error::{ImageError as E, LimitErrorKind};
    let name = format_name(format);
    match e {
        E::Unsupported(u) => format!("unsupported {name} file: {u}"),
        E::Limits(l) if matches!(l.kind(), LimitErrorKind::InsufficientMemory) => {
            format!("not enough memory to decode this {name} file")
        }
        E::Limits(l) => format!("{name} file over a limit: {l}"),
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("damaged {name} file: it ends before its image data does ({io})")
        }
        other => format!("damaged {name} file: {other}"),
    }
}

fn format_name(format: ImageFormat) -> &'static str {
    format
        .extensions_str()
        .first()
        .map_or("image", |e| match *e {
            "jpg" => "JPEG",
            "png" => "PNG",
            "tiff" | "tif" => "TIFF",
            "webp" => "WebP",
            "bmp" => "BMP",
            "gif" => "GIF",
            _ => "image",
        })
}

/// A zeroed buffer of `n` samples, or an error if the memory cannot be had (the allocation
/// that fails is this file's failure; `vec!` would abort the process).
fn try_zeroed<T: Clone + Default>(n: usize) -> std::result::Result<Vec<T>, String> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        format!(
            "not enough memory to decode: the image needs {} MB",
            (n * std::mem::size_of::<T>()) >> 20
        )
    })?;
    v.resize(n, T::default());
    Ok(v)
}

/// Whether about `bytes` more can be allocated now (reserved and given back at once): an
/// image whose working set cannot be had fails alone instead of aborting the process halfway.
pub fn memory_available(bytes: u64) -> bool {
    let Ok(n) = usize::try_from(bytes) else {
        return false;
    };
    let mut v: Vec<u8> = Vec::new();
    v.try_reserve_exact(n).is_ok()
}

/// Decode the pixels into a buffer allocated fallibly; JPEG through zune-jpeg in strict mode,
/// so that entropy-coded data that ends before the image does (a cut file, a header edited to
/// claim more pixels) is an error rather than gray padding.
fn read_pixels(
    decoder: impl ImageDecoder,
    format: ImageFormat,
    bytes: &[u8],
    (w, h): (u32, u32),
) -> std::result::Result<DynamicImage, String> {
    use image::{ColorType as C, ImageBuffer};
    let color = decoder.color_type();
    let total = usize::try_from(decoder.total_bytes())
        .map_err(|_| "not enough memory to decode: the image is too large".to_string())?;
    // the decoded pixels, an upright copy, and the f32 planes of the pipeline (RGB and L)
    let working = (total as u64)
        .saturating_mul(2)
        .saturating_add((w as u64 * h as u64).saturating_mul(16));
    if !memory_available(working) {
        return Err(format!(
            "not enough memory for a {w}x{h} image (about {} MB needed)",
            working >> 20
        ));
    }
    let fill = |buf: &mut [u8]| -> std::result::Result<(), String> {
        if format == ImageFormat::Jpeg {
            return jpeg_strict(bytes, buf, color, (w, h));
        }
        decoder
            .read_image(buf)
            .map_err(|e| decode_error(format, &e))
    };
    fn raw<T: bytemuck::Pod + Default>(
        n: usize,
        fill: impl FnOnce(&mut [u8]) -> std::result::Result<(), String>,
    ) -> std::result::Result<Vec<T>, String> {
        let mut buf = try_zeroed::<T>(n / std::mem::size_of::<T>())?;
        fill(bytemuck::cast_slice_mut(&mut buf))?;
        Ok(buf)
    }
    let mismatch = || "damaged image: its data does not match its size".to_string();
    Ok(match color {
        C::L8 => DynamicImage::ImageLuma8(
            ImageBuffer::from_raw(w, h, raw::<u8>(total, fill)?).ok_or_else(mismatch)?,
        ),
        C::La8 => DynamicImage::ImageLumaA8(
            ImageBuffer::from_raw(w, h, raw::<u8>(total, fill)?).ok_or_else(mismatch)?,
        ),
        C::Rgb8 => DynamicImage::ImageRgb8(
            ImageBuffer::from_raw(w, h, raw::<u8>(total, fill)?).ok_or_else(mismatch)?,
        ),
        C::Rgba8 => DynamicImage::ImageRgba8(
            ImageBuffer::from_raw(w, h, raw::<u8>(total, fill)?).ok_or_else(mismatch)?,
        ),
        C::L16 => DynamicImage::ImageLuma16(
            ImageBuffer::from_raw(w, h, raw::<u16>(total, fill)?).ok_or_else(mismatch)?,
        ),
        C::La16 => DynamicImage::ImageLumaA16(
            ImageBuffer::from_raw(w, h, raw::<u16>(total, fill)?).ok_or_else(mismatch)?,
        ),
        C::Rgb16 => DynamicImage::ImageRgb16(
            ImageBuffer::from_raw(w, h, raw::<u16>(total, fill)?).ok_or_else(mismatch)?,
        ),
        C::Rgba16 => DynamicImage::ImageRgba16(
            ImageBuffer::from_raw(w, h, raw::<u16>(total, fill)?).ok_or_else(mismatch)?,
        ),
        C::Rgb32F => DynamicImage::ImageRgb32F(
            ImageBuffer::from_raw(w, h, raw::<f32>(total, fill)?).ok_or_else(mismatch)?,
        ),
        C::Rgba32F => DynamicImage::ImageRgba32F(
            ImageBuffer::from_raw(w, h, raw::<f32>(total, fill)?).ok_or_else(mismatch)?,
        ),
        other => return Err(format!("unsupported pixel layout {other:?}")),
    })
}

/// JPEG pixels as OpenCV's `imread` gives them: libjpeg-turbo (here through mozjpeg, the same
/// decoder), its default integer IDCT and fancy upsampling, converted to 8-bit RGB (gray
/// replicated), as `IMREAD_COLOR` does.
fn jpeg_like_opencv(bytes: &[u8]) -> std::result::Result<DynamicImage, String> {
    let decoded = std::panic::catch_unwind(|| -> std::io::Result<(usize, usize, Vec<[u8; 3]>)> {
        let d = mozjpeg::Decompress::new_mem(bytes)?;
        let mut img = d.rgb()?;
        let (w, h) = (img.width(), img.height());
        let px: Vec<[u8; 3]> = img.read_scanlines()?;
        img.finish()?;
        Ok((w, h, px))
    });
    let (w, h, px) = match decoded {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Err(format!("damaged JPEG file: {e}")),
        Err(_) => return Err("damaged JPEG file (libjpeg refused it)".into()),
    };
    let raw: Vec<u8> = px.into_iter().flatten().collect();
    image::RgbImage::from_raw(w as u32, h as u32, raw)
        .map(DynamicImage::ImageRgb8)
        .ok_or_else(|| "damaged JPEG file: its data does not match its size".to_string())
}

/// JPEG pixels in zune-jpeg's strict mode, in the colour layout image's decoder reported.
fn jpeg_strict(
    bytes: &[u8],
    out: &mut [u8],
    color: image::ColorType,
    (w, h): (u32, u32),
) -> std::result::Result<(), String> {
    use zune_core::colorspace::ColorSpace;
    let space = match color {
        image::ColorType::L8 => ColorSpace::Luma,
        image::ColorType::La8 => ColorSpace::LumaA,
        image::ColorType::Rgba8 => ColorSpace::RGBA,
        _ => ColorSpace::RGB,
    };
    let options = zune_core::options::DecoderOptions::default()
        .jpeg_set_out_colorspace(space)
        .set_strict_mode(true)
        .set_max_width(w as usize)
        .set_max_height(h as usize);
    let mut d = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(bytes),
        options,
    );
    d.decode_into(out)
        .map_err(|e| format!("damaged JPEG file: {e:?}"))
}

/// Walk a JPEG's segments and entropy-coded scans up to the end-of-image marker. JPEG decoders
/// are lenient and fill a cut-off file with gray; an archive wants to hear that it is cut off.
/// Data after the end marker (camera trailers, motion photos) is allowed. Also checks that the
/// image data can hold the image the frame header claims: Huffman coding spends at least one
/// bit on every 8x8 block (its DC code), so a header edited to claim more pixels than the data
/// was coded for is refused instead of decoding to a sea of gray.
pub fn jpeg_complete(b: &[u8]) -> std::result::Result<(), String> {
    let truncated = |what: &str| Err(format!("truncated JPEG: the file ends {what}"));
    if b.len() < 4 || b[0] != 0xFF || b[1] != 0xD8 {
        return Err("not a JPEG (no start-of-image marker)".into());
    }
    let n = b.len();
    let mut i = 2;
    // blocks the frame header implies (Huffman-coded frames only), and entropy-coded bytes
    let mut blocks: Option<u64> = None;
    let mut claimed = (0u32, 0u32);
    let mut coded: u64 = 0;
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
            0xD9 => break,
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
        // SOF0-2 (baseline, extended, progressive; Huffman): the frame's size and sampling
        if matches!(m, 0xC0..=0xC2) {
            let (f, blk) = frame_blocks(&b[i + 4..end])?;
            claimed = f;
            blocks = Some(blk);
        }
        i = end;
        if m == 0xDA {
            // entropy-coded data runs to the next marker that is not a stuffed 0xFF00 or a
            // restart marker
            let start = i;
            loop {
                if i + 1 >= n {
                    return truncated("in the middle of the image data");
                }
                if b[i] == 0xFF && b[i + 1] != 0x00 && !(0xD0..=0xD7).contains(&b[i + 1]) {
                    break;
                }
                i += 1;
            }
            coded += (i - start) as u64;
        }
    }
    if let Some(blocks) = blocks {
        if coded.saturating_mul(8) < blocks {
            return Err(format!(
                "damaged JPEG: its header claims {}x{} pixels ({blocks} blocks of 8x8), but its \
                 image data ({coded} bytes) is too short to hold them",
                claimed.0, claimed.1
            ));
        }
    }
    Ok(())
}

/// A frame header's width and height, and the 8x8 blocks its components hold (at least: a
/// component scanned alone holds no more than when interleaved).
fn frame_blocks(sof: &[u8]) -> std::result::Result<((u32, u32), u64), String> {
    let bad = || Err("damaged JPEG: a malformed frame header".to_string());
    if sof.len() < 6 {
        return bad();
    }
    let h = u16::from_be_bytes([sof[1], sof[2]]) as u64;
    let w = u16::from_be_bytes([sof[3], sof[4]]) as u64;
    let nc = sof[5] as usize;
    if sof.len() < 6 + 3 * nc || nc == 0 {
        return bad();
    }
    let comps: Vec<(u64, u64)> = (0..nc)
        .map(|c| {
            let s = sof[6 + 3 * c + 1];
            ((s >> 4).max(1) as u64, (s & 15).max(1) as u64)
        })
        .collect();
    let hmax = comps.iter().map(|c| c.0).max().unwrap_or(1);
    let vmax = comps.iter().map(|c| c.1).max().unwrap_or(1);
    let blocks = comps
        .iter()
        .map(|&(hs, vs)| {
            let cw = (w * hs).div_ceil(hmax);
            let ch = (h * vs).div_ceil(vmax);
            cw.div_ceil(8) * ch.div_ceil(8)
        })
        .sum();
    Ok(((w as u32, h as u32), blocks))
}

/// The format to write for an output path, from its extension.
pub fn format_for(path: &Path) -> Option<ImageFormat> {
    ImageFormat::from_path(path).ok()
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The suffix of every temporary file ddcolor writes (`.NAME.PID@HOST.N.ddcolor-tmp`): the
/// walker never takes them as inputs, and [`sweep_temps`] removes those whose writer is gone.
pub const TEMP_SUFFIX: &str = ".ddcolor-tmp";

/// This machine's name, as temporary file names carry it (`-` where it cannot be read).
fn host_name() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().replace(['/', '.', '@'], "_"))
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "-".into())
    })
}

/// A temporary name beside `dest`, unique to this process and call (swept by [`sweep_temps`]
/// if its writer dies before it is renamed or removed).
pub(crate) fn temp_path(dest: &Path) -> PathBuf {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(
        ".{name}.{}@{}.{n}{TEMP_SUFFIX}",
        std::process::id(),
        host_name()
    ))
}

/// A temporary file this long untouched is stale whoever wrote it (a writer on another
/// machine, whose process we cannot ask about).
pub const TEMP_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Whether process `pid` is alive on this machine.
#[cfg(unix)]
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
pub fn process_alive(_pid: u32) -> bool {
    true
}

/// Whether the temporary file `name` (a file name ending in [`TEMP_SUFFIX`]) was left by a
/// writer that is gone: written on this machine by a process that no longer runs, or
/// untouched for [`TEMP_STALE_AFTER`].
pub fn temp_is_stale(name: &str, age: std::time::Duration) -> bool {
    if !name.ends_with(TEMP_SUFFIX) {
        return false;
    }
    if age >= TEMP_STALE_AFTER {
        return true;
    }
    // `.NAME.PID@HOST.N.ddcolor-tmp` (or `.NAME.PID.N.ddcolor-tmp` from older versions)
    let stem = &name[..name.len() - TEMP_SUFFIX.len()];
    let mut parts = stem.rsplitn(3, '.');
    let (_n, writer) = (parts.next(), parts.next());
    let Some(writer) = writer else {
        return false;
    };
    let (pid, host) = match writer.split_once('@') {
        Some((pid, host)) => (pid, Some(host)),
        None => (writer, None),
    };
    match (pid.parse::<u32>(), host) {
        (Ok(pid), Some(h)) if h == host_name() => !process_alive(pid),
        (Ok(pid), None) => !process_alive(pid),
        _ => false,
    }
}

/// Remove the stale temporary files ([`temp_is_stale`]) directly inside `dir`; returns how
/// many went. Errors (a folder that does not exist yet, a file another sweeper took) are
/// ignored: this is housekeeping.
pub fn sweep_temps(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.ends_with(TEMP_SUFFIX) {
            continue;
        }
        let Ok(meta) = e.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        if temp_is_stale(name, age) && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// [`write_atomic_then`] for a `dest` inside the folder `root`: the folders between them are
/// opened (and made) one by one without following symbolic links, and the temporary file is
/// created and renamed relative to the folder opened, so nothing is written outside `root`
/// even if a folder in the tree is replaced by a link during the run.
#[cfg(unix)]
pub fn write_atomic_beneath(
    root: &Path,
    dest: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
    before_rename: impl FnOnce(),
) -> Result<()> {
    let werr = |reason: String| Error::Write {
        path: dest.to_owned(),
        reason,
    };
    let (Ok(rel), Some(name)) = (dest.strip_prefix(root), dest.file_name()) else {
        return Err(werr("not inside the output folder".into()));
    };
    let dir = crate::confined::Dir::open_beneath(root, rel.parent().unwrap_or(Path::new("")))
        .map_err(|e| werr(e.to_string()))?;
    let tmp = temp_path(dest);
    let tmp_name = tmp.file_name().unwrap_or_default().to_owned();
    let result = (|| {
        let file = dir.create_new(&tmp_name).map_err(|e| werr(e.to_string()))?;
        let mut out = BufWriter::new(file);
        write(&mut out)?;
        let file = out.into_inner().map_err(|e| werr(e.to_string()))?;
        file.sync_all().map_err(|e| werr(e.to_string()))?;
        before_rename();
        dir.rename(&tmp_name, name).map_err(|e| werr(e.to_string()))
    })();
    if result.is_err() {
        let _ = dir.remove(&tmp_name);
    }
    result
}

#[cfg(not(unix))]
pub fn write_atomic_beneath(
    _root: &Path,
    dest: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
    before_rename: impl FnOnce(),
) -> Result<()> {
    write_atomic_then(dest, write, before_rename)
}

/// Write `bytes` to `dest` atomically: a temporary file in the same folder, fsync, rename.
pub fn write_atomic(dest: &Path, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    write_atomic_then(dest, write, || {})
}

/// [`write_atomic`], calling `before_rename` once the temporary file is complete and synced,
/// just before it is renamed into place: what it records (a report line) is durable before
/// the output exists, so a process killed at any moment never leaves an output unrecorded.
pub fn write_atomic_then(
    dest: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
    before_rename: impl FnOnce(),
) -> Result<()> {
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
        before_rename();
        std::fs::rename(&tmp, dest).map_err(|e| werr(e.to_string()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// JPEG quality used when writing JPEG files, unless told otherwise (`--jpeg-quality`).
pub const JPEG_QUALITY: u8 = 95;

/// `--png-compression`: how hard PNG outputs are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PngCompression {
    /// fdeflate, tuned for PNG: about OpenCV's default size (zlib level 1) at a fraction of
    /// zlib's time (BENCHMARKS.md "Codecs").
    #[default]
    Fast,
    /// zlib's balanced level: smaller, several times slower.
    Default,
    /// The smallest, slowest.
    Best,
}

crate::keywords::keyword_enum!(PngCompression, "PNG compression", {
    Fast => "fast",
    Default => "default",
    Best => "best",
});

/// `--tiff-compression`: TIFF outputs' compression, always with the horizontal predictor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TiffCompression {
    /// Deflate at its fast level: smaller than LZW and twice as fast on 16-bit scans.
    #[default]
    Deflate,
    /// LZW, what the oldest TIFF readers understand.
    Lzw,
    /// Uncompressed: the fastest to write and read, the largest.
    None,
}

crate::keywords::keyword_enum!(TiffCompression, "TIFF compression", {
    Deflate => "deflate" | "zip",
    Lzw => "lzw",
    None => "none",
});

/// How outputs are encoded, one value for every format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    /// JPEG quality, 1-100.
    pub jpeg_quality: u8,
    pub png: PngCompression,
    pub tiff: TiffCompression,
}

impl Default for Encoding {
    fn default() -> Self {
        Self {
            jpeg_quality: JPEG_QUALITY,
            png: PngCompression::default(),
            tiff: TiffCompression::default(),
        }
    }
}

impl Encoding {
    /// The defaults with another JPEG quality (thumbnails).
    pub fn jpeg(quality: u8) -> Self {
        Self {
            jpeg_quality: quality,
            ..Self::default()
        }
    }
}

/// Whether a format stores only 8 bits per channel (a 16-bit image written to it loses depth).
pub fn is_8bit_only(format: ImageFormat) -> bool {
    matches!(
        format,
        ImageFormat::Jpeg | ImageFormat::WebP | ImageFormat::Bmp
    )
}

/// Whether a format has no alpha channel.
pub fn drops_alpha(format: ImageFormat) -> bool {
    matches!(format, ImageFormat::Jpeg)
}

/// Encode `img` in the format that `dest`'s extension names, atomically, without metadata.
pub fn save(img: &DynamicImage, dest: &Path) -> Result<()> {
    save_with(img, dest, None, &Encoding::default())
}

/// Encode `img` in the format that `dest`'s extension names, atomically, carrying `meta`
/// (ICC profile, EXIF with orientation 1, resolution) where the format can hold it. JPEG and
/// WebP get 8 bits per channel, PNG and TIFF the image's own depth; JPEG drops alpha.
pub fn save_with(
    img: &DynamicImage,
    dest: &Path,
    meta: Option<&Metadata>,
    enc: &Encoding,
) -> Result<()> {
    save_with_then(img, None, dest, meta, enc, || {})
}

/// [`save_with`], calling `before_rename` as [`write_atomic_then`] does; with `within`, the
/// output folder `dest` must stay inside ([`write_atomic_beneath`]).
pub fn save_with_then(
    img: &DynamicImage,
    within: Option<&Path>,
    dest: &Path,
    meta: Option<&Metadata>,
    enc: &Encoding,
    before_rename: impl FnOnce(),
) -> Result<()> {
    let werr = |reason: String| Error::Write {
        path: dest.to_owned(),
        reason,
    };
    let format = format_for(dest).ok_or_else(|| werr("unknown image extension".into()))?;
    // encode to memory first: TIFF needs to seek, and a failed encode leaves no file at all
    let bytes = encode(img, format, meta, enc).map_err(werr)?;
    let write = |out: &mut dyn Write| out.write_all(&bytes).map_err(|e| werr(e.to_string()));
    match within {
        Some(root) => write_atomic_beneath(root, dest, write, before_rename),
        None => write_atomic_then(dest, write, before_rename),
    }
}

/// Encode `img` as `format` into memory (see [`save_with`]).
pub fn encode(
    img: &DynamicImage,
    format: ImageFormat,
    meta: Option<&Metadata>,
    enc: &Encoding,
) -> std::result::Result<Vec<u8>, String> {
    let (w, h) = (img.width(), img.height());
    let rgb = img.color().has_color();
    let icc = meta.and_then(|m| m.icc_for(rgb));
    let exif = || meta.and_then(|m| m.exif_blob(w, h));
    let mut out = Vec::new();
    match format {
        ImageFormat::Jpeg => {
            out = encode_jpeg(img, meta, icc, exif(), enc.jpeg_quality)?;
        }
        ImageFormat::WebP => {
            let mut enc = image::codecs::webp::WebPEncoder::new_lossless(&mut out);
            set_metadata(&mut enc, icc, exif())?;
            img.write_with_encoder(enc).map_err(|e| e.to_string())?;
        }
        ImageFormat::Png => encode_png(&mut out, img, meta, icc, exif(), enc.png)?,
        ImageFormat::Tiff => {
            let mut cur = Cursor::new(out);
            encode_tiff(&mut cur, img, meta, icc, enc.tiff).map_err(|e| e.to_string())?;
            out = cur.into_inner();
            if meta.and_then(|m| m.density).is_none() {
                out = meta::drop_tiff_resolution(out);
            }
        }
        other => {
            let mut cur = Cursor::new(out);
            img.write_to(&mut cur, other).map_err(|e| e.to_string())?;
            out = cur.into_inner();
        }
    }
    Ok(out)
}

fn set_metadata(
    enc: &mut impl ImageEncoder,
    icc: Option<&[u8]>,
    exif: Option<Vec<u8>>,
) -> std::result::Result<(), String> {
    if let Some(icc) = icc {
        enc.set_icc_profile(icc.to_vec())
            .map_err(|e| e.to_string())?;
    }
    if let Some(exif) = exif {
        enc.set_exif_metadata(exif).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// JPEG, 8 bits, baseline, chroma at full resolution (4:4:4: the colour is what this tool
/// adds), with the JFIF density, EXIF, ICC profile and the source's comments. Encoded by
/// jpeg-encoder with its AVX2 kernels (chosen at run time): 2.2x less CPU than image's encoder
/// on a 24 MP scan, the same size at the same quality (BENCHMARKS.md "Codecs").
fn encode_jpeg(
    img: &DynamicImage,
    meta: Option<&Metadata>,
    icc: Option<&[u8]>,
    exif: Option<Vec<u8>>,
    quality: u8,
) -> std::result::Result<Vec<u8>, String> {
    use jpeg_encoder::{ColorType, Encoder, PixelDensity, PixelDensityUnit, SamplingFactor};
    let side = |v: u32| {
        u16::try_from(v).map_err(|_| format!("{v} pixels is more than a JPEG can hold (65,535)"))
    };
    let (w, h) = (side(img.width())?, side(img.height())?);
    let mut out = Vec::new();
    let mut enc = Encoder::new(&mut out, quality.clamp(1, 100));
    enc.set_sampling_factor(SamplingFactor::F_1_1);
    if let Some(d) = meta.and_then(|m| m.density) {
        let (x, y) = (d.x.round(), d.y.round());
        if (1.0..=65535.0).contains(&x) && (1.0..=65535.0).contains(&y) {
            enc.set_density(PixelDensity {
                density: (x as u16, y as u16),
                unit: match d.unit {
                    meta::DensityUnit::Inch => PixelDensityUnit::Inches,
                    meta::DensityUnit::Centimetre => PixelDensityUnit::Centimeters,
                },
            });
        }
    }
    let err = |e: jpeg_encoder::EncodingError| e.to_string();
    if let Some(icc) = icc {
        enc.add_icc_profile(icc).map_err(err)?;
    }
    if let Some(exif) = exif.filter(|e| e.len() <= meta::JPEG_EXIF_MAX) {
        let mut seg = b"Exif\0\0".to_vec();
        seg.extend_from_slice(&exif);
        enc.add_app_segment(1, seg).map_err(err)?;
    }
    // 8 bits, alpha dropped (JPEG has none; the summary says so)
    match img {
        DynamicImage::ImageLuma8(b) => enc.encode(b, w, h, ColorType::Luma),
        DynamicImage::ImageRgb8(b) => enc.encode(b, w, h, ColorType::Rgb),
        other if !other.color().has_color() => enc.encode(&other.to_luma8(), w, h, ColorType::Luma),
        other => enc.encode(&other.to_rgb8(), w, h, ColorType::Rgb),
    }
    .map_err(err)?;
    Ok(match meta {
        Some(m) => meta::add_jpeg_comments(out, &m.comments),
        None => out,
    })
}

/// PNG at the image's depth (16-bit samples big-endian), with iCCP, eXIf and pHYs.
fn encode_png(
    out: &mut Vec<u8>,
    img: &DynamicImage,
    meta: Option<&Metadata>,
    icc: Option<&[u8]>,
    exif: Option<Vec<u8>>,
    compression: PngCompression,
) -> std::result::Result<(), String> {
    use png::{BitDepth, ColorType};
    let be = |v: &[u16]| -> Vec<u8> { v.iter().flat_map(|x| x.to_be_bytes()).collect() };
    let (color, depth, data): (ColorType, BitDepth, std::borrow::Cow<[u8]>) = match img {
        DynamicImage::ImageLuma8(b) => (ColorType::Grayscale, BitDepth::Eight, b.as_raw().into()),
        DynamicImage::ImageLumaA8(b) => (
            ColorType::GrayscaleAlpha,
            BitDepth::Eight,
            b.as_raw().into(),
        ),
        DynamicImage::ImageRgb8(b) => (ColorType::Rgb, BitDepth::Eight, b.as_raw().into()),
        DynamicImage::ImageRgba8(b) => (ColorType::Rgba, BitDepth::Eight, b.as_raw().into()),
        DynamicImage::ImageLuma16(b) => (ColorType::Grayscale, BitDepth::Sixteen, be(b).into()),
        DynamicImage::ImageLumaA16(b) => {
            (ColorType::GrayscaleAlpha, BitDepth::Sixteen, be(b).into())
        }
        DynamicImage::ImageRgb16(b) => (ColorType::Rgb, BitDepth::Sixteen, be(b).into()),
        DynamicImage::ImageRgba16(b) => (ColorType::Rgba, BitDepth::Sixteen, be(b).into()),
        other if other.color().has_alpha() => (
            ColorType::Rgba,
            BitDepth::Sixteen,
            be(&other.to_rgba16()).into(),
        ),
        other => (
            ColorType::Rgb,
            BitDepth::Sixteen,
            be(&other.to_rgb16()).into(),
        ),
    };
    let mut info = png::Info::with_size(img.width(), img.height());
    info.color_type = color;
    info.bit_depth = depth;
    info.icc_profile = icc.map(Into::into);
    info.exif_metadata = exif.map(Into::into);
    info.pixel_dims = meta.and_then(|m| m.density).map(|d| {
        let (xppu, yppu) = d.per_metre();
        png::PixelDimensions {
            xppu,
            yppu,
            unit: png::Unit::Meter,
        }
    });
    let mut enc = png::Encoder::with_info(out, info).map_err(|e| e.to_string())?;
    enc.set_compression(match compression {
        PngCompression::Fast => png::Compression::Fast,
        PngCompression::Default => png::Compression::Balanced,
        PngCompression::Best => png::Compression::High,
    });
    let mut writer = enc.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(&data).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())
}

/// TIFF at the image's depth (gray, RGB or RGBA with unassociated alpha), compressed as asked
/// with the horizontal predictor, with the ICC profile, resolution and carried tags.
fn encode_tiff<W: Write + Seek>(
    out: W,
    img: &DynamicImage,
    meta: Option<&Metadata>,
    icc: Option<&[u8]>,
    compression: TiffCompression,
) -> tiff::TiffResult<()> {
    use tiff::encoder::{colortype as ct, Compression, DeflateLevel, TiffEncoder};
    let (w, h) = (img.width(), img.height());
    let mut enc = TiffEncoder::new(out)?.with_compression(match compression {
        TiffCompression::Deflate => Compression::Deflate(DeflateLevel::Fast),
        TiffCompression::Lzw => Compression::Lzw,
        TiffCompression::None => Compression::Uncompressed,
    });
    if compression != TiffCompression::None {
        enc = enc.with_predictor(tiff::tags::Predictor::Horizontal);
    }
    let pointers = match meta {
        Some(m) => meta::write_tiff_sub_ifds(&mut enc, m, w, h)?,
        None => Vec::new(),
    };
    let tags = TiffTags {
        meta,
        icc,
        pointers: &pointers,
    };
    match img {
        DynamicImage::ImageLuma8(b) => tiff_image::<ct::Gray8, _>(&mut enc, w, h, b, &tags, false),
        DynamicImage::ImageLuma16(b) => {
            tiff_image::<ct::Gray16, _>(&mut enc, w, h, b, &tags, false)
        }
        DynamicImage::ImageRgb8(b) => tiff_image::<ct::RGB8, _>(&mut enc, w, h, b, &tags, false),
        DynamicImage::ImageRgba8(b) => tiff_image::<ct::RGBA8, _>(&mut enc, w, h, b, &tags, true),
        DynamicImage::ImageRgb16(b) => tiff_image::<ct::RGB16, _>(&mut enc, w, h, b, &tags, false),
        DynamicImage::ImageRgba16(b) => tiff_image::<ct::RGBA16, _>(&mut enc, w, h, b, &tags, true),
        DynamicImage::ImageLumaA8(_) => {
            tiff_image::<ct::RGBA8, _>(&mut enc, w, h, &img.to_rgba8(), &tags, true)
        }
        other if other.color().has_alpha() => {
            tiff_image::<ct::RGBA16, _>(&mut enc, w, h, &other.to_rgba16(), &tags, true)
        }
        other => tiff_image::<ct::RGB16, _>(&mut enc, w, h, &other.to_rgb16(), &tags, false),
    }
}

/// What a TIFF's IFD0 gets besides the pixel layout.
struct TiffTags<'a> {
    meta: Option<&'a Metadata>,
    icc: Option<&'a [u8]>,
    pointers: &'a [(u16, u32)],
}

fn tiff_image<C: tiff::encoder::colortype::ColorType, W: Write + Seek>(
    enc: &mut tiff::encoder::TiffEncoder<W>,
    w: u32,
    h: u32,
    data: &[C::Inner],
    tags: &TiffTags,
    alpha: bool,
) -> tiff::TiffResult<()>
where
    [C::Inner]: tiff::encoder::TiffValue,
{
    let mut image = enc.new_image::<C>(w, h)?;
    let dir = image.encoder();
    if alpha {
        // unassociated alpha
        dir.write_tag(tiff::tags::Tag::ExtraSamples, &[2u16][..])?;
    }
    if let Some(m) = tags.meta {
        meta::write_tiff_ifd0(dir, m, tags.pointers)?;
        if let Some(d) = &m.density {
            meta::write_tiff_density(dir, d)?;
        }
    }
    if let Some(icc) = tags.icc {
        meta::put_entry(dir, 34675, tiff::tags::Type::UNDEFINED, icc)?;
    }
    image.write_data(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_files_of_dead_or_old_writers_are_stale() {
        let me = std::process::id();
        let host = host_name();
        let young = std::time::Duration::from_secs(1);
        // ours, alive: kept; an old one: stale whoever wrote it
        assert!(!temp_is_stale(
            &format!(".a.png.{me}@{host}.0{TEMP_SUFFIX}"),
            young
        ));
        assert!(temp_is_stale(
            &format!(".a.png.{me}@{host}.0{TEMP_SUFFIX}"),
            TEMP_STALE_AFTER
        ));
        // a dead writer on this machine (an exited child), in both name formats
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let dead = c.id();
        c.wait().unwrap();
        assert!(temp_is_stale(
            &format!(".a.png.{dead}@{host}.3{TEMP_SUFFIX}"),
            young
        ));
        assert!(temp_is_stale(
            &format!(".a.png.{dead}.3{TEMP_SUFFIX}"),
            young
        ));
        // another machine's writer: only by age; not ours at all: never
        assert!(!temp_is_stale(
            &format!(".a.png.{dead}@elsewhere.3{TEMP_SUFFIX}"),
            young
        ));
        assert!(!temp_is_stale(".a.png.tmp", TEMP_STALE_AFTER));
        // the name temp_path makes is recognised
        let t = temp_path(Path::new("/x/photo.v2.jpg"));
        let name = t.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with(".photo.v2.jpg.") && name.ends_with(TEMP_SUFFIX),
            "{name}"
        );
        assert!(!temp_is_stale(name, young));
    }
}
