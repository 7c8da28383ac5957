//! TIFF outputs, 8 or 16 bits, gray, RGB or RGBA (unassociated alpha), in strips of about a
//! megabyte, with the horizontal predictor when compressed; ICC profile, resolution, IFD0 tags,
//! Exif and GPS IFDs carried ([`meta`]).
//!
//! The strips are predicted and compressed here, several at a time in parallel, and written
//! through the tiff crate's directory encoder (its own image encoder compresses one strip
//! after another through flate2, whose miniz_oxide backend took 1.1-1.5 CPU-s for a 16-bit
//! 24 MP scan). Deflate is fdeflate's: 4-5x less CPU than miniz_oxide's fast level for files
//! about 7% larger (BENCHMARKS.md "Codecs"); LZW is weezl's (the crate the tiff decoder uses),
//! with TIFF's early code-size switch.
use std::borrow::Cow;
use std::io::{Seek, Write};

use image::DynamicImage;
use rayon::prelude::*;
use tiff::encoder::TiffEncoder;
use tiff::tags::Tag;
use tiff::TiffResult;

use super::encode::TiffCompression;
use crate::meta::{self, Metadata};

/// Uncompressed bytes per strip, about.
const STRIP_BYTES: usize = 1 << 20;

/// Samples of one output, as the file stores them.
enum Samples<'a> {
    U8(Cow<'a, [u8]>),
    U16(Cow<'a, [u16]>),
}

pub(super) fn encode_tiff<W: Write + Seek>(
    out: W,
    img: &DynamicImage,
    meta: Option<&Metadata>,
    icc: Option<&[u8]>,
    compression: TiffCompression,
) -> TiffResult<()> {
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return Err(tiff::TiffError::FormatError(
            tiff::TiffFormatError::InvalidDimensions(w, h),
        ));
    }
    use DynamicImage as D;
    use Samples::{U16, U8};
    // (samples per pixel, alpha, samples)
    let (spp, alpha, samples): (usize, bool, Samples) = match img {
        D::ImageLuma8(b) => (1, false, U8(Cow::Borrowed(b.as_raw()))),
        D::ImageLuma16(b) => (1, false, U16(Cow::Borrowed(b.as_raw()))),
        D::ImageRgb8(b) => (3, false, U8(Cow::Borrowed(b.as_raw()))),
        D::ImageRgba8(b) => (4, true, U8(Cow::Borrowed(b.as_raw()))),
        D::ImageRgb16(b) => (3, false, U16(Cow::Borrowed(b.as_raw()))),
        D::ImageRgba16(b) => (4, true, U16(Cow::Borrowed(b.as_raw()))),
        D::ImageLumaA8(_) => (4, true, U8(Cow::Owned(img.to_rgba8().into_raw()))),
        other if other.color().has_alpha() => {
            (4, true, U16(Cow::Owned(other.to_rgba16().into_raw())))
        }
        other => (3, false, U16(Cow::Owned(other.to_rgb16().into_raw()))),
    };
    let bits: u16 = match samples {
        U8(_) => 8,
        U16(_) => 16,
    };
    let row_bytes = w as usize * spp * usize::from(bits / 8);
    let rows_per_strip = STRIP_BYTES.div_ceil(row_bytes).min(h as usize);

    let mut enc = TiffEncoder::new(out)?;
    let pointers = match meta {
        Some(m) => meta::write_tiff_sub_ifds(&mut enc, m, w, h)?,
        None => Vec::new(),
    };
    let mut dir = enc.image_directory()?;
    dir.write_tag(Tag::ImageWidth, w)?;
    dir.write_tag(Tag::ImageLength, h)?;
    dir.write_tag(Tag::BitsPerSample, &vec![bits; spp][..])?;
    dir.write_tag(
        Tag::Compression,
        match compression {
            TiffCompression::None => 1u16,
            TiffCompression::Lzw => 5,
            TiffCompression::Deflate => 8,
        },
    )?;
    // BlackIsZero or RGB
    dir.write_tag(
        Tag::PhotometricInterpretation,
        if spp < 3 { 1u16 } else { 2 },
    )?;
    dir.write_tag(Tag::SamplesPerPixel, spp as u16)?;
    dir.write_tag(Tag::RowsPerStrip, rows_per_strip as u32)?;
    dir.write_tag(Tag::PlanarConfiguration, 1u16)?;
    // unsigned integers
    dir.write_tag(Tag::SampleFormat, &vec![1u16; spp][..])?;
    if compression != TiffCompression::None {
        dir.write_tag(Tag::Predictor, 2u16)?;
    }
    if alpha {
        // unassociated alpha
        dir.write_tag(Tag::ExtraSamples, &[2u16][..])?;
    }
    if let Some(m) = meta {
        meta::write_tiff_ifd0(&mut dir, m, &pointers)?;
        if let Some(d) = &m.density {
            meta::write_tiff_density(&mut dir, d)?;
        }
    }
    if let Some(icc) = icc {
        meta::put_entry(&mut dir, 34675, tiff::tags::Type::UNDEFINED, icc)?;
    }

    let strip_samples = rows_per_strip * w as usize * spp;
    let strips = (h as usize).div_ceil(rows_per_strip);
    let mut offsets = Vec::with_capacity(strips);
    let mut counts = Vec::with_capacity(strips);
    // a few strips per thread at a time: the compressed file is not held twice
    let batch = 2 * rayon::current_num_threads().max(1);
    for first in (0..strips).step_by(batch) {
        let last = (first + batch).min(strips);
        let encoded: Vec<std::io::Result<Vec<u8>>> = (first..last)
            .into_par_iter()
            .map(|s| {
                let range = s * strip_samples..((s + 1) * strip_samples);
                match &samples {
                    U8(v) => strip(&v[range.start..range.end.min(v.len())], w, spp, compression),
                    U16(v) => strip(&v[range.start..range.end.min(v.len())], w, spp, compression),
                }
            })
            .collect();
        for bytes in encoded {
            let bytes = bytes?;
            offsets.push(u32::try_from(dir.write_data(&bytes[..])?)?);
            counts.push(u32::try_from(bytes.len())?);
        }
    }
    dir.write_tag(Tag::StripOffsets, &offsets[..])?;
    dir.write_tag(Tag::StripByteCounts, &counts[..])?;
    dir.finish()
}

/// One strip's bytes as the file stores them: samples in native byte order (the tiff crate
/// writes the file in it), differenced along each row when compressed, then compressed.
fn strip<T: Sample>(
    samples: &[T],
    width: u32,
    spp: usize,
    compression: TiffCompression,
) -> std::io::Result<Vec<u8>> {
    if compression == TiffCompression::None {
        return Ok(bytemuck::cast_slice(samples).to_vec());
    }
    let row = width as usize * spp;
    let mut diff = Vec::with_capacity(samples.len());
    for r in samples.chunks(row) {
        diff.extend_from_slice(&r[..spp.min(r.len())]);
        diff.extend(
            r.iter()
                .zip(&r[spp.min(r.len())..])
                .map(|(&a, &b)| b.minus(a)),
        );
    }
    let bytes: &[u8] = bytemuck::cast_slice(&diff);
    match compression {
        TiffCompression::Deflate => Ok(fdeflate::compress_to_vec(bytes)),
        TiffCompression::Lzw => {
            weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8)
                .encode(bytes)
                .map_err(std::io::Error::other)
        }
        TiffCompression::None => unreachable!("returned above"),
    }
}

/// A sample type the horizontal predictor differences.
trait Sample: bytemuck::Pod + Send + Sync {
    fn minus(self, other: Self) -> Self;
}

impl Sample for u8 {
    fn minus(self, other: Self) -> Self {
        self.wrapping_sub(other)
    }
}

impl Sample for u16 {
    fn minus(self, other: Self) -> Self {
        self.wrapping_sub(other)
    }
}
