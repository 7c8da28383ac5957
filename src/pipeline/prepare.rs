//! Steps 1-4 of the upstream script: an image to its full-resolution L and the square gray
//! model input ([`Prepared`]).

use image::DynamicImage;
use rayon::prelude::*;

use super::resize::{self, Axis};
use super::{color, Prepared};
use crate::simd::multiversion;

/// Steps 1-4: full-resolution L, and the gray square model input.
///
/// `rgb` is interleaved RGB in [0, 1], `3 * width * height` values.
///
/// # Panics
/// If `rgb` has the wrong length, or `width`, `height` or `size` is 0.
pub fn prepare(rgb: &[f32], width: usize, height: usize, size: usize) -> Prepared {
    prepare_with(rgb, width, height, size, LabFlavour::Exact)
}

/// [`prepare`] with L computed the `flavour` way.
pub fn prepare_with(
    rgb: &[f32],
    width: usize,
    height: usize,
    size: usize,
    flavour: LabFlavour,
) -> Prepared {
    prepare_rgb(rgb, (width, height), size, flavour, true)
}

/// [`prepare_with`]; without the model input (left empty) unless `input`.
fn prepare_rgb(
    rgb: &[f32],
    (width, height): (usize, usize),
    size: usize,
    flavour: LabFlavour,
    input: bool,
) -> Prepared {
    assert!(width > 0 && height > 0, "empty image ({width}x{height})");
    assert!(size > 0, "model size must be positive");
    assert_eq!(
        rgb.len(),
        3 * width * height,
        "RGB buffer does not match {width}x{height}"
    );

    let l = l_plane(rgb, width, flavour);
    let model_input = if input {
        let resize = match flavour {
            LabFlavour::Exact => resize::resize_interleaved,
            LabFlavour::OpenCv => resize::resize_interleaved_ipp,
        };
        let small = resize(
            rgb,
            3,
            &Axis::opencv_linear(width, size),
            &Axis::opencv_linear(height, size),
        );
        gray_model_input(size, flavour, |y| {
            let row = &small[3 * size * y..][..3 * size];
            move |x| {
                let p = &row[3 * x..][..3];
                [p[0], p[1], p[2]]
            }
        })
    } else {
        Vec::new()
    };

    Prepared {
        width,
        height,
        l,
        size,
        model_input,
    }
}

/// [`prepare`] straight from a decoded image. Gray images (8 or 16 bits, with or without
/// alpha) take their full-resolution L from a lookup table per sample value and their model
/// input from samples read in place: no float RGB copy of the scan (288 MB for 6000x4000).
/// Other layouts go through [`rgb_f32_from_image`] and [`prepare`]. The values equal those of
/// `prepare(&rgb_f32_from_image(img), ..)`.
pub fn prepare_image(img: &DynamicImage, size: usize) -> Prepared {
    prepare_image_with(img, size, LabFlavour::Exact)
}

/// [`prepare_image`] with L computed the `flavour` way.
pub fn prepare_image_with(img: &DynamicImage, size: usize, flavour: LabFlavour) -> Prepared {
    prepare_image_as(img, size, flavour, true)
}

/// [`prepare_image_with`] without the model input (`model_input` left empty): the
/// full-resolution L is all that composing needs, for an image whose prediction is cached.
pub fn prepare_l_only(img: &DynamicImage, size: usize, flavour: LabFlavour) -> Prepared {
    prepare_image_as(img, size, flavour, false)
}

fn prepare_image_as(img: &DynamicImage, size: usize, f: LabFlavour, input: bool) -> Prepared {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let gray = |raw, stride, levels, unit: fn(u32) -> f32| {
        prepare_gray(raw, stride, (w, h), size, (levels, unit), f, input)
    };
    match img {
        DynamicImage::ImageLuma8(b) => gray(b.as_raw(), 1, 256, unit8),
        DynamicImage::ImageLumaA8(b) => gray(b.as_raw(), 2, 256, unit8),
        DynamicImage::ImageLuma16(b) => {
            prepare_gray(b.as_raw(), 1, (w, h), size, (65536, unit16), f, input)
        }
        DynamicImage::ImageLumaA16(b) => {
            prepare_gray(b.as_raw(), 2, (w, h), size, (65536, unit16), f, input)
        }
        other => prepare_rgb(&rgb_f32_from_image(other), (w, h), size, f, input),
    }
}

/// How the model input is made from sRGB: the exact formulas (ddcolor's default), or as the
/// authors' script makes it with OpenCV (`--compat upstream`: the model then sees what it sees
/// there): the resize as the opencv-python wheels' IPP computes it, L from `BGR2Lab`'s
/// interpolated table, and the gray from `Lab2RGB`'s spline-interpolated sRGB curve.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LabFlavour {
    #[default]
    Exact,
    OpenCv,
}

impl LabFlavour {
    /// L of one sRGB pixel.
    #[inline]
    pub fn l(self, rgb: [f32; 3]) -> f32 {
        match self {
            Self::Exact => color::rgb_to_l(rgb),
            Self::OpenCv => color::rgb_to_l_opencv(rgb),
        }
    }

    /// The sRGB gray of lightness `l` (a = b = 0).
    #[inline]
    pub fn gray(self, l: f32) -> [f32; 3] {
        match self {
            Self::Exact => color::lab_to_rgb([l, 0.0, 0.0]),
            Self::OpenCv => color::lab_to_rgb_opencv([l, 0.0, 0.0]),
        }
    }
}

fn unit8(v: u32) -> f32 {
    v as f32 / 255.0
}

fn unit16(v: u32) -> f32 {
    v as f32 / 65535.0
}

/// Gray samples (`stride` per pixel, the first is the gray value) with `levels` values, mapped
/// to [0, 1] by `to_unit`.
fn prepare_gray<T>(
    src: &[T],
    stride: usize,
    (width, height): (usize, usize),
    size: usize,
    (levels, to_unit): (u32, fn(u32) -> f32),
    flavour: LabFlavour,
    input: bool,
) -> Prepared
where
    T: Copy + Into<u32> + Sync,
{
    assert!(width > 0 && height > 0, "empty image ({width}x{height})");
    assert!(size > 0, "model size must be positive");
    assert_eq!(
        src.len(),
        stride * width * height,
        "buffer does not match {width}x{height}"
    );
    // L of every possible sample value, computed as the per-pixel path would
    let lut: Vec<f32> = (0..levels)
        .into_par_iter()
        .map(|i| {
            let v = to_unit(i);
            flavour.l([v, v, v])
        })
        .collect();
    // written in place, not zeroed first (calloc of 96 MB, then the lookups, cost twice)
    let mut l = Vec::with_capacity(width * height);
    if stride == 1 {
        l.par_extend(src.par_iter().map(|&v| lut[v.into() as usize]));
    } else {
        l.par_extend(
            src.par_chunks_exact(stride)
                .map(|px| lut[px[0].into() as usize]),
        );
    }
    let model_input = if input {
        // the model input: OpenCV INTER_LINEAR sampling of the unit values, read in place
        let ax = Axis::opencv_linear(width, size);
        let ay = Axis::opencv_linear(height, size);
        let at = |yy: usize, xx: usize| to_unit(src[(yy * width + xx) * stride].into());
        gray_model_input(size, flavour, |y| {
            let (y0, y1, wy0, wy1) = ay.tap(y);
            let (ax, at) = (&ax, &at);
            move |x| {
                let (x0, x1, wx0, wx1) = ax.tap(x);
                let v = match flavour {
                    LabFlavour::Exact => {
                        let h0 = at(y0, x0) * wx0 + at(y0, x1) * wx1;
                        let h1 = at(y1, x0) * wx0 + at(y1, x1) * wx1;
                        h0 * wy0 + h1 * wy1
                    }
                    LabFlavour::OpenCv => {
                        let h0 = resize::lerp_fma(at(y0, x0), at(y0, x1), wx1);
                        let h1 = resize::lerp_fma(at(y1, x0), at(y1, x1), wx1);
                        resize::lerp_fma(h0, h1, wy1)
                    }
                };
                [v, v, v]
            }
        })
    } else {
        Vec::new()
    };
    Prepared {
        width,
        height,
        l,
        size,
        model_input,
    }
}

/// Step 4, the model input: 3 x `size` x `size`, planar CHW, each pixel the gray (a = b = 0)
/// of the L of the resized RGB pixel that `row(y)(x)` gives, one parallel task per row.
fn gray_model_input<P>(
    size: usize,
    flavour: LabFlavour,
    row: impl Fn(usize) -> P + Sync,
) -> Vec<f32>
where
    P: Fn(usize) -> [f32; 3],
{
    let plane = size * size;
    let mut model_input = vec![0.0f32; 3 * plane];
    let (r_plane, rest) = model_input.split_at_mut(plane);
    let (g_plane, b_plane) = rest.split_at_mut(plane);
    r_plane
        .par_chunks_mut(size)
        .zip(g_plane.par_chunks_mut(size))
        .zip(b_plane.par_chunks_mut(size))
        .enumerate()
        .for_each_init(
            || Vec::with_capacity(size),
            |px, (y, ((r, g), b))| {
                let pixel = row(y);
                px.clear();
                px.extend((0..size).map(&pixel));
                gray_row(px, r, g, b, flavour);
            },
        );
    model_input
}

multiversion! {
    /// The model's gray input of a row of sRGB pixels: L, then the gray of that lightness,
    /// planar. Compiled for the CPU so the per-pixel formulas' fused multiply-adds are
    /// instructions (in baseline code each is a call into libm: most of a warm rerun's time).
    fn gray_row(px: &[[f32; 3]], r: &mut [f32], g: &mut [f32], b: &mut [f32], flavour: LabFlavour) {
        for (((p, r), g), b) in px.iter().zip(r).zip(g).zip(b) {
            [*r, *g, *b] = flavour.gray(flavour.l(*p));
        }
    }
}

multiversion! {
    /// L of each interleaved sRGB pixel of `src`, compiled for the CPU (see [`gray_row`]).
    fn l_row(src: &[f32], dst: &mut [f32], flavour: LabFlavour) {
        for (d, p) in dst.iter_mut().zip(src.chunks_exact(3)) {
            *d = flavour.l([p[0], p[1], p[2]]);
        }
    }
}

/// Rows per rayon task: enough work per task that scheduling stays negligible.
fn rows_per_task(width: usize) -> usize {
    (16_384 / width.max(1)).max(1)
}

/// Step 2: the L plane (row-major, `len / 3` values) of an interleaved RGB image `width`
/// pixels wide.
fn l_plane(rgb: &[f32], width: usize, flavour: LabFlavour) -> Vec<f32> {
    assert_eq!(
        rgb.len() % 3,
        0,
        "interleaved RGB length must be a multiple of 3"
    );
    let mut out = vec![0.0f32; rgb.len() / 3];
    let rows = rows_per_task(width);
    out.par_chunks_mut(rows * width.max(1))
        .zip(rgb.par_chunks(3 * rows * width.max(1)))
        .for_each(|(dst, src)| l_row(src, dst, flavour));
    out
}

/// Any decoded image to interleaved RGB in [0, 1]: 8-bit as `v / 255`, gray replicated to three
/// channels, alpha dropped (not composited, like OpenCV's `imread` in colour mode); other depths
/// go through the `image` crate's float conversion.
pub fn rgb_f32_from_image(img: &DynamicImage) -> Vec<f32> {
    let lut: [f32; 256] = std::array::from_fn(|i| i as f32 / 255.0);
    match img {
        DynamicImage::ImageRgb8(buf) => buf.as_raw().par_iter().map(|&v| lut[v as usize]).collect(),
        DynamicImage::ImageLuma8(buf) => gray_to_rgb(buf.as_raw(), 1, &lut),
        DynamicImage::ImageLumaA8(buf) => gray_to_rgb(buf.as_raw(), 2, &lut),
        DynamicImage::ImageRgba8(buf) => {
            let mut out = vec![0.0f32; 3 * buf.as_raw().len() / 4];
            out.par_chunks_mut(3 * 4096)
                .zip(buf.as_raw().par_chunks(4 * 4096))
                .for_each(|(dst, src)| {
                    for (d, s) in dst.chunks_exact_mut(3).zip(src.chunks_exact(4)) {
                        d[0] = lut[s[0] as usize];
                        d[1] = lut[s[1] as usize];
                        d[2] = lut[s[2] as usize];
                    }
                });
            out
        }
        other => other.to_rgb32f().into_raw(),
    }
}

/// Gray (`stride` bytes per pixel, the first is the gray value) to interleaved RGB floats.
fn gray_to_rgb(src: &[u8], stride: usize, lut: &[f32; 256]) -> Vec<f32> {
    let mut out = vec![0.0f32; 3 * (src.len() / stride)];
    out.par_chunks_mut(3 * 4096)
        .zip(src.par_chunks(stride * 4096))
        .for_each(|(dst, src)| {
            for (d, s) in dst.chunks_exact_mut(3).zip(src.chunks_exact(stride)) {
                d.fill(lut[s[0] as usize]);
            }
        });
    out
}
