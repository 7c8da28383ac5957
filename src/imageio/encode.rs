//! Encoders, one per output format, each carrying the metadata its format can hold, and the
//! one [`Encoding`] value that says how (JPEG quality, PNG and TIFF compression).
use std::io::{Cursor, Write};
use std::path::Path;

use image::{DynamicImage, ImageEncoder, ImageFormat};

use super::atomic::{write_atomic_beneath, write_atomic_then};
use super::format_for;
use crate::error::{Error, Result};
use crate::meta::Metadata;

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
    /// Deflate by fdeflate: smaller than LZW and several times faster on 16-bit scans.
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

/// `--jpeg-chroma`: the resolution of JPEG outputs' chroma (Cb, Cr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JpegChroma {
    /// Half resolution where the image is at least twice the model's input size on both
    /// sides (its colour, resampled from the prediction, holds no detail finer than that),
    /// full resolution elsewhere ([`Encoding::for_prediction`]).
    #[default]
    Auto,
    /// 4:4:4, every pixel's own chroma.
    Full,
    /// 4:2:0, chroma at half the resolution in both directions: the files are about a third
    /// smaller and take less time to write.
    Half,
}

crate::keywords::keyword_enum!(JpegChroma, "JPEG chroma", {
    Auto => "auto",
    Full => "444" | "4:4:4" | "full",
    Half => "420" | "4:2:0" | "half",
});

/// How outputs are encoded, one value for every format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    /// JPEG quality, 1-100.
    pub jpeg_quality: u8,
    /// JPEG chroma resolution (`Auto` is written as `Full` unless resolved by
    /// [`Encoding::for_prediction`]).
    pub jpeg_chroma: JpegChroma,
    pub png: PngCompression,
    pub tiff: TiffCompression,
}

impl Default for Encoding {
    fn default() -> Self {
        Self {
            jpeg_quality: JPEG_QUALITY,
            jpeg_chroma: JpegChroma::default(),
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

    /// This encoding for an image of `width` x `height` whose colour was predicted at `size`
    /// x `size`: [`JpegChroma::Auto`] becomes `Half` when the image is at least `2 size` on
    /// both sides, `Full` otherwise. Measured on 24 MP scans at 512 (BENCHMARKS.md "Codecs"):
    /// against the lossless output, 4:2:0 at quality 95 was no further in ΔE76 than 4:4:4
    /// (mean 1.01 vs 1.41), for a file a third smaller; on photos whose chroma is as sharp as
    /// their pixels (the fixtures' true colours) it is not (99.9th percentile 7-28 vs 5-8),
    /// which is why smaller images keep 4:4:4.
    pub fn for_prediction(&self, (width, height): (u32, u32), size: usize) -> Self {
        let big = |side: u32| side as usize >= 2 * size;
        let jpeg_chroma = match self.jpeg_chroma {
            JpegChroma::Auto if big(width) && big(height) => JpegChroma::Half,
            JpegChroma::Auto => JpegChroma::Full,
            other => other,
        };
        Self {
            jpeg_chroma,
            ..*self
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
            let half = enc.jpeg_chroma == JpegChroma::Half;
            out = super::encode_jpeg::encode_jpeg_with(
                super::encode_jpeg::JpegEncoder::best(),
                img,
                meta,
                icc,
                exif(),
                enc.jpeg_quality,
                half,
            )?;
        }
        ImageFormat::WebP => {
            let mut enc = image::codecs::webp::WebPEncoder::new_lossless(&mut out);
            set_metadata(&mut enc, icc, exif())?;
            img.write_with_encoder(enc).map_err(|e| e.to_string())?;
        }
        ImageFormat::Png => encode_png(&mut out, img, meta, icc, exif(), enc.png)?,
        ImageFormat::Tiff => {
            let mut cur = Cursor::new(out);
            super::encode_tiff::encode_tiff(&mut cur, img, meta, icc, enc.tiff)
                .map_err(|e| e.to_string())?;
            out = cur.into_inner();
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
