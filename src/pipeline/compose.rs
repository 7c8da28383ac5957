//! Steps 5-6 of the upstream script: the model's ab brought to the image's size and joined
//! with the full-resolution L, converted to sRGB under a gamut rule, row by row, written as
//! float RGB or straight to 8/16-bit samples (`quantise.rs`).

use std::mem::MaybeUninit;

use image::{DynamicImage, ImageBuffer};
use rayon::prelude::*;

use super::quantise::{interleave3, interleave4, quantise_row, rgb16_row, rgb8_row, RgbRow};
use super::resize::Axis;
use super::{color, Alpha, Depth, Gamut, Keep, Prepared, ResizeMode};
use crate::simd::multiversion;

/// Steps 5-6: the model's ab (`2 x size x size`, planar) resized to `width` x `height` with
/// `mode`, joined with the full-resolution `l` (`height * width`), converted to interleaved RGB
/// in [0, 1]. The resize is fused into the colour conversion: no full-size ab planes. Colours
/// outside sRGB follow [`Gamut::Clip`], the upstream rule (see [`compose_gamut`] for the others).
///
/// # Panics
/// If the slice lengths do not match the sizes.
pub fn compose(
    l: &[f32],
    width: usize,
    height: usize,
    ab: &[f32],
    size: usize,
    mode: ResizeMode,
) -> Vec<f32> {
    compose_gamut(l, width, height, ab, size, mode, Gamut::default())
}

/// [`compose`] with a choice of [`Gamut`].
pub fn compose_gamut(
    l: &[f32],
    width: usize,
    height: usize,
    ab: &[f32],
    size: usize,
    mode: ResizeMode,
    gamut: Gamut,
) -> Vec<f32> {
    let planes = Planes {
        l,
        width,
        height,
        ab,
        size,
        mode,
    };
    // SAFETY: the closure writes all 3 * width samples of the row (`interleave3` checks the
    // length).
    unsafe {
        compose_rows(&planes, gamut, 3, |row, _, dst| {
            let [r, g, b] = &row.rgb;
            interleave3(dst, [r, g, b], |v| v);
        })
    }
}

/// Full-resolution L, the model's ab and how to bring ab to L's size.
struct Planes<'a> {
    l: &'a [f32],
    width: usize,
    height: usize,
    ab: &'a [f32],
    size: usize,
    mode: ResizeMode,
}

/// [`compose`] straight to an image of the depth `keep` asks for (RGB, or RGBA with the kept
/// alpha), quantised with `round(x * max)` like [`to_rgb8`](super::to_rgb8); no intermediate
/// float image.
///
/// # Panics
/// If the slice lengths do not match the sizes, the alpha plane is not `width * height` long,
/// or a side does not fit `u32`.
pub fn compose_image(
    prepared: &Prepared,
    ab: &[f32],
    size: usize,
    mode: ResizeMode,
    gamut: Gamut,
    keep: &Keep,
) -> DynamicImage {
    let (width, height) = (prepared.width, prepared.height);
    let w = u32::try_from(width).expect("width fits u32");
    let h = u32::try_from(height).expect("height fits u32");
    if let Some(a) = &keep.alpha {
        assert_eq!(
            a.len(),
            width * height,
            "alpha plane does not match {width}x{height}"
        );
    }
    let planes = Planes {
        l: &prepared.l,
        width,
        height,
        ab,
        size,
        mode,
    };
    let alpha = keep.alpha.as_ref();
    let gamut = gamut.resolve(keep.depth);
    let q8 = || {
        compose_quantised(
            &planes,
            gamut,
            alpha,
            255.0,
            |v| v as u8,
            Alpha::at8,
            rgb8_row,
        )
    };
    let q16 = || {
        compose_quantised(
            &planes,
            gamut,
            alpha,
            65535.0,
            |v| v,
            Alpha::at16,
            rgb16_row,
        )
    };
    let sized = "buffer sized for the image";
    match (keep.depth, alpha.is_some()) {
        (Depth::Eight, false) => {
            DynamicImage::ImageRgb8(ImageBuffer::from_raw(w, h, q8()).expect(sized))
        }
        (Depth::Eight, true) => {
            DynamicImage::ImageRgba8(ImageBuffer::from_raw(w, h, q8()).expect(sized))
        }
        (Depth::Sixteen, false) => {
            DynamicImage::ImageRgb16(ImageBuffer::from_raw(w, h, q16()).expect(sized))
        }
        (Depth::Sixteen, true) => {
            DynamicImage::ImageRgba16(ImageBuffer::from_raw(w, h, q16()).expect(sized))
        }
    }
}

/// [`compose_rows`] to samples `round(x * max)` from [0, 1] (`max` = 255 or 65535, `cast`
/// to the sample type), with the `alpha` plane (read by `at`) as a fourth channel when there
/// is one; `rgb` writes a row without alpha in one pass ([`rgb8_row`], [`rgb16_row`]).
fn compose_quantised<T: Send + crate::alloc::Pooled>(
    planes: &Planes,
    gamut: Gamut,
    alpha: Option<&Alpha>,
    max: f32,
    // generic, not `fn` pointers: an indirect call per sample cannot be inlined
    cast: impl Fn(u16) -> T + Sync,
    at: impl Fn(&Alpha, usize) -> T + Sync,
    rgb: RgbRow<T>,
) -> Vec<T> {
    let channels = 3 + usize::from(alpha.is_some());
    // SAFETY: the closure writes all `channels * width` samples of the row (`interleave3`
    // and `interleave4` check the length).
    unsafe {
        compose_rows(planes, gamut, channels, |row, y, dst| {
            let Some(a) = alpha else {
                let [r, g, b] = &row.rgb;
                return rgb(r, g, b, dst);
            };
            for (q, v) in row.q.iter_mut().zip(&row.rgb) {
                // allocated on a worker's first row with alpha
                q.resize(v.len(), 0);
                quantise_row(v, max, q);
            }
            let [r, g, b] = &row.q;
            let width = r.len();
            interleave4(dst, [r, g, b], |x| at(a, y * width + x), &cast);
        })
    }
}

/// One output row in the making: ab resampled to the image's width, then R, G, B (linear,
/// then encoded sRGB in [0, 1]), then quantised (rows with alpha; without, quantising and
/// interleaving are one pass). Reused from row to row by each worker.
struct RowBufs {
    a: Vec<f32>,
    b: Vec<f32>,
    rgb: [Vec<f32>; 3],
    q: [Vec<u16>; 3],
}

impl RowBufs {
    fn new(width: usize) -> Self {
        let f = || vec![0f32; width];
        Self {
            a: f(),
            b: f(),
            rgb: [f(), f(), f()],
            q: Default::default(),
        }
    }
}

/// The shared body of the compose functions, one parallel task per row: ab for the row
/// ([`AbSampler`]), Lab to linear RGB under the `gamut` rule, sRGB encoding, all on planar
/// rows in vectorised loops; then `emit` writes output row `y` (`channels` samples per pixel)
/// from the [`RowBufs`]. The result is exactly the per-pixel [`color::lab_to_rgb`] of
/// [`color::clamp_ab`] (clip rule) or [`color::lab_to_rgb_in_gamut`] (fit rule).
///
/// The output is not zeroed first (a 6000x4000 RGB image is 72 MB of memset, serial).
///
/// # Safety
/// `emit` must initialise every element of the row slice it is given.
unsafe fn compose_rows<T: Send + crate::alloc::Pooled>(
    planes: &Planes,
    gamut: Gamut,
    channels: usize,
    emit: impl Fn(&mut RowBufs, usize, &mut [MaybeUninit<T>]) + Sync,
) -> Vec<T> {
    let sm = AbSampler::new(planes);
    let width = sm.width;
    let len = channels * width * sm.height;
    // a buffer the last image left (`alloc::recycle`), its pages already mapped
    let mut out = T::pool().take(len);
    if len == 0 {
        return out;
    }
    // without a bit depth to decide by, Auto is the upstream rule
    let fit = gamut == Gamut::Fit;
    // the clip rule brings ab into the Lab range first; the upstream rule takes it as it is
    let clamp = gamut != Gamut::Upstream && !fit;
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(channels * width)
        .zip(sm.l.par_chunks(width))
        .enumerate()
        .for_each_init(
            || RowBufs::new(width),
            |row, (y, (dst, l_row))| {
                sm.row(y, &mut row.a, &mut row.b);
                let [r, g, b] = &mut row.rgb;
                color::lab_to_linear_row(l_row, &row.a, &row.b, clamp, [r, g, b]);
                if fit {
                    color::fit_gamut_row(l_row, &row.a, &row.b, [r, g, b]);
                }
                for v in &mut row.rgb {
                    color::linear_to_srgb_row(v);
                }
                emit(row, y, dst);
            },
        );
    // SAFETY: the chunks cover the first `len` elements, and `emit` initialised each chunk
    // (the caller's promise); had a row panicked, this line would not be reached.
    unsafe { out.set_len(len) };
    out
}

/// The model's ab brought to the image's size: each model row is resampled horizontally
/// once, to the full width (2 x size x width values, 25 MB for a 6000-pixel-wide scan at 512);
/// an output row is then a blend of two of those rows, a contiguous, vectorised loop with no
/// gathers per pixel.
struct AbSampler<'a> {
    width: usize,
    height: usize,
    size: usize,
    l: &'a [f32],
    /// a rows then b rows, `width` values each.
    wide: Vec<f32>,
    ay: Axis,
}

impl<'a> AbSampler<'a> {
    fn new(planes: &Planes<'a>) -> Self {
        let &Planes {
            l,
            width,
            height,
            ab,
            size,
            mode,
        } = planes;
        assert_eq!(
            l.len(),
            width * height,
            "L plane does not match {width}x{height}"
        );
        assert_eq!(
            ab.len(),
            2 * size * size,
            "ab does not match 2x{size}x{size}"
        );
        let ax = Axis::for_mode(mode, size, width);
        let mut wide = vec![0f32; 2 * size * width];
        if width > 0 {
            wide.par_chunks_mut(width)
                .zip(ab.par_chunks(size))
                .for_each(|(dst, src)| ax.resample_line(src, dst));
        }
        Self {
            width,
            height,
            size,
            l,
            wide,
            ay: Axis::for_mode(mode, size, height),
        }
    }

    /// a and b of output row `y`, `width` values each.
    fn row(&self, y: usize, a: &mut [f32], b: &mut [f32]) {
        let (y0, y1, wy0, wy1) = self.ay.tap(y);
        let (w, size) = (self.width, self.size);
        let row = |i: usize| &self.wide[i * w..][..w];
        blend_rows(row(y0), row(y1), wy0, wy1, a);
        blend_rows(row(size + y0), row(size + y1), wy0, wy1, b);
    }
}

multiversion! {
    /// `out[i] = p[i] * wp + q[i] * wq`.
    fn blend_rows(p: &[f32], q: &[f32], wp: f32, wq: f32, out: &mut [f32]) {
        for ((o, &p), &q) in out.iter_mut().zip(p).zip(q) {
            *o = p * wp + q * wq;
        }
    }
}
