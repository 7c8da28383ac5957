//! JPEG outputs: 8 bits, baseline, chroma at full resolution (4:4:4) or half (4:2:0, what
//! [`super::Encoding::for_prediction`] picks for large scans), the standard Huffman tables, with the JFIF density, EXIF, ICC profile and the
//! source's comments.
//!
//! Two encoders, one result (the same markers, the same quantisation tables, pixels within a
//! level or two of each other: the DCTs round differently), chosen once per process:
//! - libjpeg-turbo's SIMD (through the mozjpeg crate at its `JCP_FASTEST` profile, which is
//!   libjpeg-turbo's own code path) where the build found `nasm`: 3x less CPU than
//!   jpeg-encoder on a 24 MP colour frame at quality 95, the same size (BENCHMARKS.md
//!   "Codecs");
//! - jpeg-encoder with its AVX2 kernels otherwise (a build without `nasm`, where libjpeg-turbo
//!   would be plain C and slower than it).
use image::DynamicImage;

use crate::meta::{self, Metadata};

/// Which JPEG encoder writes the outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JpegEncoder {
    /// libjpeg-turbo with its SIMD kernels.
    Turbo,
    /// jpeg-encoder (pure Rust, AVX2 where the CPU has it).
    Rust,
}

extern "C" {
    // libjpeg-turbo's own answers to "is this step SIMD here?" (linked from mozjpeg-sys; the
    // build without nasm links its jsimd_none.c, where each answers 0)
    fn jsimd_can_fdct_islow() -> std::ffi::c_int;
    fn jsimd_can_huff_encode_one_block() -> std::ffi::c_int;
    fn jsimd_can_rgb_ycc() -> std::ffi::c_int;
}

impl JpegEncoder {
    /// The faster one on this build and CPU.
    pub fn best() -> Self {
        static BEST: std::sync::OnceLock<JpegEncoder> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            // SAFETY: argument-less queries of libjpeg-turbo's CPU dispatch
            let simd = unsafe {
                jsimd_can_fdct_islow() != 0
                    && jsimd_can_huff_encode_one_block() != 0
                    && jsimd_can_rgb_ycc() != 0
            };
            if simd {
                JpegEncoder::Turbo
            } else {
                JpegEncoder::Rust
            }
        })
    }
}

/// Encode `img` as a JPEG with `encoder`; chroma at half resolution (4:2:0) with
/// `half_chroma`, else full (4:4:4).
pub fn encode_jpeg_with(
    encoder: JpegEncoder,
    img: &DynamicImage,
    meta: Option<&Metadata>,
    icc: Option<&[u8]>,
    exif: Option<Vec<u8>>,
    quality: u8,
    half_chroma: bool,
) -> Result<Vec<u8>, String> {
    let side = |v: u32| {
        u16::try_from(v).map_err(|_| format!("{v} pixels is more than a JPEG can hold (65,535)"))
    };
    let (w, h) = (side(img.width())?, side(img.height())?);
    let density = meta.and_then(|m| m.density).and_then(|d| {
        let (x, y) = (d.x.round(), d.y.round());
        ((1.0..=65535.0).contains(&x) && (1.0..=65535.0).contains(&y))
            .then_some((x as u16, y as u16, d.unit))
    });
    let exif = exif.filter(|e| e.len() <= meta::JPEG_EXIF_MAX);
    // 8 bits, alpha dropped (JPEG has none; the summary says so)
    use std::borrow::Cow;
    let pixels: Cow<DynamicImage> = match img {
        DynamicImage::ImageLuma8(_) | DynamicImage::ImageRgb8(_) => Cow::Borrowed(img),
        other if !other.color().has_color() => {
            Cow::Owned(DynamicImage::ImageLuma8(other.to_luma8()))
        }
        other => Cow::Owned(DynamicImage::ImageRgb8(other.to_rgb8())),
    };
    let comments = meta.map_or(&[][..], |m| &m.comments[..]);
    match encoder {
        JpegEncoder::Turbo => turbo(
            &pixels,
            (w, h),
            density,
            icc,
            exif,
            comments,
            (quality, half_chroma),
        ),
        JpegEncoder::Rust => {
            let out = rust(&pixels, (w, h), density, icc, exif, (quality, half_chroma))?;
            Ok(meta::add_jpeg_comments(out, comments))
        }
    }
}

type Density = (u16, u16, meta::DensityUnit);

/// The most profile bytes one APP2 segment holds (65,533 less the 14-byte chunk header).
const ICC_CHUNK: usize = 65_519;

fn turbo(
    img: &DynamicImage,
    (w, h): (u16, u16),
    density: Option<Density>,
    icc: Option<&[u8]>,
    exif: Option<Vec<u8>>,
    comments: &[Vec<u8>],
    (quality, half_chroma): (u8, bool),
) -> Result<Vec<u8>, String> {
    use mozjpeg::{ColorSpace, Compress, Marker, PixelDensity, PixelDensityUnit};
    let (space, raw) = match img {
        DynamicImage::ImageLuma8(b) => (ColorSpace::JCS_GRAYSCALE, b.as_raw()),
        DynamicImage::ImageRgb8(b) => (ColorSpace::JCS_RGB, b.as_raw()),
        _ => unreachable!("converted to 8-bit gray or RGB above"),
    };
    if let Some(icc) = icc {
        // numbered in one byte
        if icc.len().div_ceil(ICC_CHUNK) > 255 {
            return Err(format!(
                "an ICC profile of {} bytes is more than a JPEG can hold",
                icc.len()
            ));
        }
    }
    // libjpeg reports its errors by unwinding out of its error handler (mozjpeg's
    // "unwinding" feature); nothing shared is touched inside
    let run = std::panic::catch_unwind(|| -> std::io::Result<Vec<u8>> {
        let mut c = Compress::new(space);
        // libjpeg-turbo's own defaults (no trellis, baseline, standard Huffman tables)
        c.set_fastest_defaults();
        c.set_size(usize::from(w), usize::from(h));
        c.set_quality(f32::from(quality.clamp(1, 100)));
        if space == ColorSpace::JCS_RGB {
            let px = if half_chroma { (2, 2) } else { (1, 1) };
            c.set_chroma_sampling_pixel_sizes(px, px);
        }
        if let Some((x, y, unit)) = density {
            c.set_pixel_density(PixelDensity {
                unit: match unit {
                    meta::DensityUnit::Inch => PixelDensityUnit::Inches,
                    meta::DensityUnit::Centimetre => PixelDensityUnit::Centimeters,
                },
                x,
                y,
            });
        }
        let estimate = raw.len() / 4 + (1 << 16);
        let mut s = c.start_compress(Vec::with_capacity(estimate))?;
        if let Some(exif) = &exif {
            let mut seg = Vec::with_capacity(exif.len() + 6);
            seg.extend_from_slice(b"Exif\0\0");
            seg.extend_from_slice(exif);
            s.write_marker(Marker::APP(1), &seg);
        }
        if let Some(icc) = icc.filter(|p| !p.is_empty()) {
            // not mozjpeg's `write_icc_profile`: it numbers the chunks from 0, where the ICC
            // specification (and every reader) counts from 1
            let count = icc.len().div_ceil(ICC_CHUNK);
            let mut seg = Vec::with_capacity(ICC_CHUNK.min(icc.len()) + 14);
            for (i, chunk) in icc.chunks(ICC_CHUNK).enumerate() {
                seg.clear();
                seg.extend_from_slice(b"ICC_PROFILE\0");
                seg.extend_from_slice(&[(i + 1) as u8, count as u8]);
                seg.extend_from_slice(chunk);
                s.write_marker(Marker::APP(2), &seg);
            }
        }
        for c in comments {
            // a segment holds at most 65,533 bytes; longer comments are split
            for part in c.chunks(65_533) {
                s.write_marker(Marker::COM, part);
            }
        }
        s.write_scanlines(raw)?;
        s.finish()
    });
    match run {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(format!("JPEG encoding failed: {e}")),
        Err(_) => Err("JPEG encoding failed (libjpeg refused the image)".into()),
    }
}

fn rust(
    img: &DynamicImage,
    (w, h): (u16, u16),
    density: Option<Density>,
    icc: Option<&[u8]>,
    exif: Option<Vec<u8>>,
    (quality, half_chroma): (u8, bool),
) -> Result<Vec<u8>, String> {
    use jpeg_encoder::{ColorType, Encoder, PixelDensity, PixelDensityUnit, SamplingFactor};
    let mut out = Vec::new();
    let mut enc = Encoder::new(&mut out, quality.clamp(1, 100));
    enc.set_sampling_factor(if half_chroma {
        SamplingFactor::F_2_2
    } else {
        SamplingFactor::F_1_1
    });
    if let Some((x, y, unit)) = density {
        enc.set_density(PixelDensity {
            density: (x, y),
            unit: match unit {
                meta::DensityUnit::Inch => PixelDensityUnit::Inches,
                meta::DensityUnit::Centimetre => PixelDensityUnit::Centimeters,
            },
        });
    }
    let err = |e: jpeg_encoder::EncodingError| e.to_string();
    if let Some(icc) = icc {
        enc.add_icc_profile(icc).map_err(err)?;
    }
    if let Some(exif) = exif {
        let mut seg = b"Exif\0\0".to_vec();
        seg.extend_from_slice(&exif);
        enc.add_app_segment(1, seg).map_err(err)?;
    }
    match img {
        DynamicImage::ImageLuma8(b) => enc.encode(b, w, h, ColorType::Luma),
        DynamicImage::ImageRgb8(b) => enc.encode(b, w, h, ColorType::Rgb),
        _ => unreachable!("converted to 8-bit gray or RGB above"),
    }
    .map_err(err)?;
    Ok(out)
}
