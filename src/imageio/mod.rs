//! Reading and writing image files: decoding with limits checked against the header before any
//! pixel buffer is allocated, EXIF orientation applied, metadata ([`Metadata`]) read and written
//! back, and atomic writes (temporary file in the destination folder, then rename) so a crash
//! never leaves half an image under the final name.
//!
//! Encoders ([`Encoding`] says how): JPEG through libjpeg-turbo's SIMD, else `jpeg-encoder`
//! (8 bits, 4:4:4; ICC, EXIF, JFIF density, comments), WebP through `image`, PNG through `png` (8 or 16 bits; iCCP, eXIf,
//! pHYs; fdeflate by default) and TIFF through `tiff` (8 or 16 bits, Deflate, LZW or none with
//! the horizontal predictor; ICC, resolution, IFD0 tags, Exif and GPS IFDs).
//!
//! One room a job: decoding here, [`jpeg`] (structure checks and the OpenCV-compatible decode),
//! [`encode`] (the encoders), [`encode_jpeg`] (the two JPEG encoders), `encode_tiff`, [`atomic`] (temporary files and renames); their public items are
//! re-exported, so callers write `imageio::write_atomic` as before.
use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use crate::error::{Error, Result};
use crate::meta::Metadata;

pub mod atomic;
pub mod encode;
pub mod encode_jpeg;
mod encode_tiff;
pub mod jpeg;

pub use atomic::*;
pub use encode::*;
pub use jpeg::jpeg_complete;
use jpeg::{jpeg_like_opencv, jpeg_strict};

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

/// The format to write for an output path, from its extension.
pub fn format_for(path: &Path) -> Option<ImageFormat> {
    ImageFormat::from_path(path).ok()
}
