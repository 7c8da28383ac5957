//! Float samples in [0, 1] to 8- or 16-bit ones, `round(x * max)` (ties to even, as numpy),
//! saturating, NaN to 0: one rounding routine ([`quantise`]) for every output, with the row
//! kernels that quantise and interleave planar rows in one pass.

use std::mem::MaybeUninit;

use image::RgbImage;
use rayon::prelude::*;

use crate::simd::multiversion;

/// `round(v * max)`, ties to even, saturating to [0, max]; NaN becomes 0 (`max` < 2^16). The
/// same value as `(v * max).clamp(0.0, max).round_ties_even() as u16` for every `v`, without
/// `round_ties_even` (a call to libm's `rintf` per sample in the baseline x86-64 build) or a
/// float-to-int conversion.
#[inline(always)]
pub(super) fn quantise(v: f32, max: f32) -> u16 {
    // `max(0.0)` turns NaN into 0; adding 2^23 rounds to a whole number (ties to even) and
    // leaves it in the low mantissa bits, read off as an integer: no float-to-int conversion,
    // which Rust saturates and LLVM then does lane by lane
    let y = (v * max).max(0.0).min(max) + ROUND_MAGIC;
    (y.to_bits() - ROUND_MAGIC.to_bits()) as u16
}

/// 2^23: a float in [0, 2^22) plus this is rounded to a whole number (ties to even), which
/// sits in the low mantissa bits.
const ROUND_MAGIC: f32 = 8_388_608.0;

multiversion! {
    /// [`quantise`] of every value of `v` into `out`.
    pub(super) fn quantise_row(v: &[f32], max: f32, out: &mut [u16]) {
        for (o, &v) in out.iter_mut().zip(v) {
            *o = quantise(v, max);
        }
    }
}

/// Writes a row of interleaved RGB samples from encoded planar R, G, B rows.
pub(super) type RgbRow<T> = fn(&[f32], &[f32], &[f32], &mut [MaybeUninit<T>]);

multiversion! {
    /// A row of 8-bit RGB, [`quantise`]d from the planar rows and interleaved in one pass.
    pub(super) fn rgb8_row(r: &[f32], g: &[f32], b: &[f32], dst: &mut [MaybeUninit<u8>]) {
        interleave3(dst, [r, g, b], |v| quantise(v, 255.0) as u8);
    }
}

multiversion! {
    /// A row of 16-bit RGB, [`quantise`]d from the planar rows and interleaved in one pass.
    pub(super) fn rgb16_row(r: &[f32], g: &[f32], b: &[f32], dst: &mut [MaybeUninit<u16>]) {
        interleave3(dst, [r, g, b], |v| quantise(v, 65535.0));
    }
}

/// Writes every sample of `dst`, a row of `r.len()` pixels of 3 samples, from the planar rows
/// `r`, `g`, `b` through `cast`.
///
/// # Panics
/// If `dst` is not `3 * r.len()` long or `g`, `b` are shorter than `r`.
#[inline(always)]
pub(super) fn interleave3<S: Copy, T>(
    dst: &mut [MaybeUninit<T>],
    [r, g, b]: [&[S]; 3],
    cast: impl Fn(S) -> T,
) {
    let width = r.len();
    let (g, b) = (&g[..width], &b[..width]);
    assert_eq!(dst.len(), 3 * width, "row of 3-sample pixels");
    for (((px, &r), &g), &b) in dst.chunks_exact_mut(3).zip(r).zip(g).zip(b) {
        px[0].write(cast(r));
        px[1].write(cast(g));
        px[2].write(cast(b));
    }
}

/// [`interleave3`] with a fourth sample per pixel, `alpha(x)`.
///
/// # Panics
/// If `dst` is not `4 * r.len()` long or `g`, `b` are shorter than `r`.
#[inline(always)]
pub(super) fn interleave4<S: Copy, T>(
    dst: &mut [MaybeUninit<T>],
    [r, g, b]: [&[S]; 3],
    alpha: impl Fn(usize) -> T,
    cast: impl Fn(S) -> T,
) {
    let width = r.len();
    let (g, b) = (&g[..width], &b[..width]);
    assert_eq!(dst.len(), 4 * width, "row of 4-sample pixels");
    let pixels = dst.chunks_exact_mut(4).zip(r).zip(g).zip(b);
    for (x, (((px, &r), &g), &b)) in pixels.enumerate() {
        px[0].write(cast(r));
        px[1].write(cast(g));
        px[2].write(cast(b));
        px[3].write(alpha(x));
    }
}

/// Interleaved RGB in [0, 1] to 8 bits: `round(x * 255)` (ties to even, as numpy), saturating
/// at 0 and 255; NaN becomes 0.
///
/// # Panics
/// If `rgb.len() != 3 * width * height` or the size does not fit `u32`.
pub fn to_rgb8(rgb: &[f32], width: usize, height: usize) -> RgbImage {
    assert_eq!(
        rgb.len(),
        3 * width * height,
        "RGB buffer does not match {width}x{height}"
    );
    let bytes: Vec<u8> = rgb.par_iter().map(|&v| quantise(v, 255.0) as u8).collect();
    let w = u32::try_from(width).expect("width fits u32");
    let h = u32::try_from(height).expect("height fits u32");
    RgbImage::from_raw(w, h, bytes).expect("buffer length checked above")
}
