//! Pre- and post-processing around the model, as the upstream DDColor inference script does it:
//! image -> (full-resolution L, square gray model input), then model ab + full-resolution L ->
//! colour image. One image at a time, interleaved RGB `f32` in [0, 1] on both ends.
//!
//! Upstream inference, step by step (see `shared/golden/README.md`):
//! 1. RGB / 255 as float; 2. L of the full-resolution image (OpenCV float `BGR2Lab`);
//! 3. square resize to `size` (OpenCV `INTER_LINEAR`); 4. L of the resized image with a = b = 0
//!    back to RGB: the model input; 5. the model's ab (at `size` x `size`) resized to the original
//!    size (PyTorch `nearest` by default, or `bilinear`); 6. full L + ab -> RGB, `round(x * 255)`.

pub mod color;
pub mod resize;
pub mod tone;

use std::mem::MaybeUninit;

use image::{DynamicImage, ImageBuffer, RgbImage};
use rayon::prelude::*;

use self::resize::Axis;
use crate::keywords::keyword_enum;
use crate::simd::multiversion;

/// How the model's ab prediction is brought back to the image's size (PyTorch `F.interpolate`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ResizeMode {
    /// `mode='nearest'`: what the upstream script does.
    Nearest,
    /// `mode='bilinear'`, `align_corners=False`: ddcolor's default (no chroma blocks on large
    /// scans; see the README).
    #[default]
    Bilinear,
}

keyword_enum!(ResizeMode, "resize mode", { Nearest => "nearest", Bilinear => "bilinear" });

/// What becomes of a predicted colour that sRGB cannot show (the model's ab is unbounded:
/// upstream issue #54 reports b near -180, beyond the Lab range).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Gamut {
    /// [`Gamut::Fit`] for 16-bit images (archival masters keep their exact lightness),
    /// [`Gamut::Clip`] for 8-bit ones (identical to the upstream script's output). ddcolor's
    /// default.
    #[default]
    Auto,
    /// Keep the lightness L and the hue angle, scale the chroma down until the colour fits
    /// ([`color::lab_to_rgb_in_gamut`]): the output's L is the scan's L, and no colour turns
    /// into another.
    Fit,
    /// Bring ab into the Lab range along its hue (`max(|a|, |b|) <= 127`, [`clamp_ab`]), then
    /// clip each RGB channel to [0, 1] as OpenCV and the upstream script do: for ab inside the
    /// Lab range, exactly the upstream result.
    Clip,
}

impl Gamut {
    /// The rule for an image of this bit depth.
    pub fn resolve(self, depth: Depth) -> Gamut {
        match (self, depth) {
            (Gamut::Auto, Depth::Sixteen) => Gamut::Fit,
            (Gamut::Auto, Depth::Eight) => Gamut::Clip,
            (g, _) => g,
        }
    }
}

/// Largest |a| or |b| the Lab range holds.
pub const AB_LIMIT: f32 = 127.0;

/// Scale (a, b) towards grey, keeping the hue angle, until both fit `[-127, 127]`: a b of -180
/// becomes -127 with a shrunk by the same factor, never a wrapped or clamped-per-axis value.
#[inline(always)]
pub fn clamp_ab(lab: [f32; 3]) -> [f32; 3] {
    let [l, a, b] = lab;
    let m = a.abs().max(b.abs());
    if m > AB_LIMIT {
        let s = AB_LIMIT / m;
        [l, a * s, b * s]
    } else {
        [l, a, b]
    }
}

keyword_enum!(Gamut, "gamut mode", { Auto => "auto", Fit => "fit", Clip => "clip" });

/// The model's input granularity: the encoder downsamples by 32.
pub const SIZE_MULTIPLE: usize = 32;

/// Accepts positive multiples of 32 (the encoder's total stride); otherwise a message that
/// suggests the nearest valid sizes.
pub fn check_model_size(size: usize) -> Result<(), String> {
    if size == 0 {
        return Err(format!(
            "model size 0 is not a positive multiple of {SIZE_MULTIPLE}; try {SIZE_MULTIPLE}"
        ));
    }
    if !size.is_multiple_of(SIZE_MULTIPLE) {
        let below = size / SIZE_MULTIPLE * SIZE_MULTIPLE;
        let above = below + SIZE_MULTIPLE;
        let hint = if below == 0 {
            format!("{above}")
        } else {
            format!("{below} or {above}")
        };
        return Err(format!(
            "model size {size} is not a multiple of {SIZE_MULTIPLE}; try {hint}"
        ));
    }
    Ok(())
}

/// `--size` presets, named after what is photographed: `(name, size, why)`. DDColor's authors
/// advise an input of about 460-680 px for people and 960-1280 px for buildings and scenery.
pub const SIZE_PRESETS: &[(&str, usize, &str)] = &[
    (
        "portrait",
        512,
        "people and groups: the size DDColor was trained at",
    ),
    (
        "architecture",
        1024,
        "buildings, streets and landscapes: fine structure, four times the compute",
    ),
];

/// `--size`: a positive multiple of 32, or a preset name from [`SIZE_PRESETS`] (any case).
pub fn parse_model_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    if let Some(&(_, size, _)) = SIZE_PRESETS
        .iter()
        .find(|(name, _, _)| name.eq_ignore_ascii_case(t))
    {
        return Ok(size);
    }
    let size: usize = t.parse().map_err(|_| {
        let presets: Vec<String> = SIZE_PRESETS
            .iter()
            .map(|(name, size, why)| format!("{name} = {size}, {why}"))
            .collect();
        format!(
            "model size {s:?} is neither a multiple of {SIZE_MULTIPLE} nor a preset ({})",
            presets.join("; ")
        )
    })?;
    check_model_size(size)?;
    Ok(size)
}

/// What [`prepare`] hands on: the full-resolution L to keep, and the model input.
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    /// Original image width in pixels.
    pub width: usize,
    /// Original image height in pixels.
    pub height: usize,
    /// L (0..100) of the original image, row-major, `height * width` values.
    pub l: Vec<f32>,
    /// Side of the square model input.
    pub size: usize,
    /// The model input: 3 x `size` x `size`, planar CHW, RGB in [0, 1] (a gray image: the three
    /// planes agree to ~1e-6, as in upstream).
    pub model_input: Vec<f32>,
}

/// Steps 1-4: full-resolution L, and the gray square model input.
///
/// `rgb` is interleaved RGB in [0, 1], `3 * width * height` values.
///
/// # Panics
/// If `rgb` has the wrong length, or `width`, `height` or `size` is 0.
pub fn prepare(rgb: &[f32], width: usize, height: usize, size: usize) -> Prepared {
    assert!(width > 0 && height > 0, "empty image ({width}x{height})");
    assert!(size > 0, "model size must be positive");
    assert_eq!(
        rgb.len(),
        3 * width * height,
        "RGB buffer does not match {width}x{height}"
    );

    let l = color::rgb_to_l_slice(rgb, width);

    let small = resize::resize_interleaved(
        rgb,
        3,
        &Axis::opencv_linear(width, size),
        &Axis::opencv_linear(height, size),
    );
    let plane = size * size;
    let mut model_input = vec![0.0f32; 3 * plane];
    let (r_plane, rest) = model_input.split_at_mut(plane);
    let (g_plane, b_plane) = rest.split_at_mut(plane);
    r_plane
        .par_chunks_mut(size)
        .zip(g_plane.par_chunks_mut(size))
        .zip(b_plane.par_chunks_mut(size))
        .zip(small.par_chunks(3 * size))
        .for_each(|(((r, g), b), src)| {
            for (x, p) in src.chunks_exact(3).enumerate() {
                let l = color::rgb_to_l([p[0], p[1], p[2]]);
                let [rv, gv, bv] = color::lab_to_rgb([l, 0.0, 0.0]);
                r[x] = rv;
                g[x] = gv;
                b[x] = bv;
            }
        });

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
    let (w, h) = (img.width() as usize, img.height() as usize);
    match img {
        DynamicImage::ImageLuma8(b) => prepare_gray(b.as_raw(), 1, w, h, size, 256, unit8),
        DynamicImage::ImageLumaA8(b) => prepare_gray(b.as_raw(), 2, w, h, size, 256, unit8),
        DynamicImage::ImageLuma16(b) => prepare_gray(b.as_raw(), 1, w, h, size, 65536, unit16),
        DynamicImage::ImageLumaA16(b) => prepare_gray(b.as_raw(), 2, w, h, size, 65536, unit16),
        other => prepare(&rgb_f32_from_image(other), w, h, size),
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
    width: usize,
    height: usize,
    size: usize,
    levels: u32,
    to_unit: impl Fn(u32) -> f32 + Sync,
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
            color::rgb_to_l([v, v, v])
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
    // the model input: OpenCV INTER_LINEAR sampling of the unit values, read in place
    let ax = Axis::opencv_linear(width, size);
    let ay = Axis::opencv_linear(height, size);
    let plane = size * size;
    let mut model_input = vec![0.0f32; 3 * plane];
    let (r_plane, rest) = model_input.split_at_mut(plane);
    let (g_plane, b_plane) = rest.split_at_mut(plane);
    r_plane
        .par_chunks_mut(size)
        .zip(g_plane.par_chunks_mut(size))
        .zip(b_plane.par_chunks_mut(size))
        .enumerate()
        .for_each(|(y, ((r, g), b))| {
            let (y0, y1, wy0, wy1) = ay.tap(y);
            let at = |yy: usize, xx: usize| to_unit(src[(yy * width + xx) * stride].into());
            for x in 0..size {
                let (x0, x1, wx0, wx1) = ax.tap(x);
                let h0 = at(y0, x0) * wx0 + at(y0, x1) * wx1;
                let h1 = at(y1, x0) * wx0 + at(y1, x1) * wx1;
                let v = h0 * wy0 + h1 * wy1;
                let lv = color::rgb_to_l([v, v, v]);
                let [rv, gv, bv] = color::lab_to_rgb([lv, 0.0, 0.0]);
                r[x] = rv;
                g[x] = gv;
                b[x] = bv;
            }
        });
    Prepared {
        width,
        height,
        l,
        size,
        model_input,
    }
}

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

/// Writes every sample of `dst`, a row of `r.len()` pixels of 3 samples, from the planar rows
/// `r`, `g`, `b` through `cast`.
///
/// # Panics
/// If `dst` is not `3 * r.len()` long or `g`, `b` are shorter than `r`.
#[inline(always)]
fn interleave3<S: Copy, T>(
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
fn interleave4<S: Copy, T>(
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

/// Full-resolution L, the model's ab and how to bring ab to L's size.
struct Planes<'a> {
    l: &'a [f32],
    width: usize,
    height: usize,
    ab: &'a [f32],
    size: usize,
    mode: ResizeMode,
}

/// Sample depth of an output image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Depth {
    /// 8 bits per channel.
    #[default]
    Eight,
    /// 16 bits per channel.
    Sixteen,
}

/// The alpha plane of a source image, `width * height` values, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Alpha {
    Eight(Vec<u8>),
    Sixteen(Vec<u16>),
}

impl Alpha {
    /// Pixel `i` at 8 bits.
    fn at8(&self, i: usize) -> u8 {
        match self {
            Alpha::Eight(a) => a[i],
            Alpha::Sixteen(a) => ((u32::from(a[i]) + 128) / 257) as u8,
        }
    }

    /// Pixel `i` at 16 bits.
    fn at16(&self, i: usize) -> u16 {
        match self {
            Alpha::Eight(a) => u16::from(a[i]) * 257,
            Alpha::Sixteen(a) => a[i],
        }
    }

    fn len(&self) -> usize {
        match self {
            Alpha::Eight(a) => a.len(),
            Alpha::Sixteen(a) => a.len(),
        }
    }
}

/// What a colour output keeps of its source besides L: the sample depth and the alpha plane.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Keep {
    pub depth: Depth,
    pub alpha: Option<Alpha>,
}

impl Keep {
    /// Of a decoded image: 16 bits for 16-bit and float sources, 8 otherwise; its alpha plane
    /// (at the source's depth) if it has one.
    pub fn of(img: &DynamicImage) -> Self {
        use DynamicImage as D;
        let depth = match img {
            D::ImageLuma8(_) | D::ImageLumaA8(_) | D::ImageRgb8(_) | D::ImageRgba8(_) => {
                Depth::Eight
            }
            _ => Depth::Sixteen,
        };
        let alpha = match img {
            D::ImageLumaA8(b) => Some(Alpha::Eight(b.pixels().map(|p| p.0[1]).collect())),
            D::ImageRgba8(b) => Some(Alpha::Eight(b.pixels().map(|p| p.0[3]).collect())),
            D::ImageLumaA16(b) => Some(Alpha::Sixteen(b.pixels().map(|p| p.0[1]).collect())),
            D::ImageRgba16(b) => Some(Alpha::Sixteen(b.pixels().map(|p| p.0[3]).collect())),
            other if other.color().has_alpha() => Some(Alpha::Sixteen(
                other.to_rgba16().pixels().map(|p| p.0[3]).collect(),
            )),
            _ => None,
        };
        Self { depth, alpha }
    }
}

/// [`compose`] straight to an image of the depth `keep` asks for (RGB, or RGBA with the kept
/// alpha), quantised with `round(x * max)` like [`to_rgb8`]; no intermediate float image.
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

/// Writes a row of interleaved RGB samples from encoded planar R, G, B rows.
type RgbRow<T> = fn(&[f32], &[f32], &[f32], &mut [MaybeUninit<T>]);

/// [`compose_rows`] to samples `round(x * max)` from [0, 1] (`max` = 255 or 65535, `cast`
/// to the sample type), with the `alpha` plane (read by `at`) as a fourth channel when there
/// is one; `rgb` writes a row without alpha in one pass ([`rgb8_row`], [`rgb16_row`]).
fn compose_quantised<T: Send>(
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

multiversion! {
    /// A row of 8-bit RGB, [`quantise`]d from the planar rows and interleaved in one pass.
    fn rgb8_row(r: &[f32], g: &[f32], b: &[f32], dst: &mut [MaybeUninit<u8>]) {
        interleave3(dst, [r, g, b], |v| quantise(v, 255.0) as u8);
    }
}

multiversion! {
    /// A row of 16-bit RGB, [`quantise`]d from the planar rows and interleaved in one pass.
    fn rgb16_row(r: &[f32], g: &[f32], b: &[f32], dst: &mut [MaybeUninit<u16>]) {
        interleave3(dst, [r, g, b], |v| quantise(v, 65535.0));
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
/// [`clamp_ab`] (clip rule) or [`color::lab_to_rgb_in_gamut`] (fit rule).
///
/// The output is not zeroed first (a 6000x4000 RGB image is 72 MB of memset, serial).
///
/// # Safety
/// `emit` must initialise every element of the row slice it is given.
unsafe fn compose_rows<T: Send>(
    planes: &Planes,
    gamut: Gamut,
    channels: usize,
    emit: impl Fn(&mut RowBufs, usize, &mut [MaybeUninit<T>]) + Sync,
) -> Vec<T> {
    let sm = AbSampler::new(planes);
    let width = sm.width;
    let len = channels * width * sm.height;
    let mut out = Vec::with_capacity(len);
    if len == 0 {
        return out;
    }
    // without a bit depth to decide by, Auto is the upstream rule
    let fit = gamut == Gamut::Fit;
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(channels * width)
        .zip(sm.l.par_chunks(width))
        .enumerate()
        .for_each_init(
            || RowBufs::new(width),
            |row, (y, (dst, l_row))| {
                sm.row(y, &mut row.a, &mut row.b);
                let [r, g, b] = &mut row.rgb;
                color::lab_to_linear_row(l_row, &row.a, &row.b, !fit, [r, g, b]);
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

multiversion! {
    /// [`quantise`] of every value of `v` into `out`.
    fn quantise_row(v: &[f32], max: f32, out: &mut [u16]) {
        for (o, &v) in out.iter_mut().zip(v) {
            *o = quantise(v, max);
        }
    }
}

/// `round(v * max)`, ties to even, saturating to [0, max]; NaN becomes 0 (`max` < 2^16).
#[inline(always)]
fn quantise(v: f32, max: f32) -> u16 {
    // `max(0.0)` turns NaN into 0; adding 2^23 rounds to a whole number (ties to even) and
    // leaves it in the low mantissa bits, read off as an integer: no float-to-int conversion,
    // which Rust saturates and LLVM then does lane by lane
    let y = (v * max).max(0.0).min(max) + ROUND_MAGIC;
    (y.to_bits() - ROUND_MAGIC.to_bits()) as u16
}

/// 2^23: a float in [0, 2^22) plus this is rounded to a whole number (ties to even), which
/// sits in the low mantissa bits.
const ROUND_MAGIC: f32 = 8_388_608.0;

/// Round to the nearest integer, ties to even, for `0 <= x < 2^22`: adding and subtracting
/// 2^23 leaves the float's default rounding (to nearest, ties to even) to do it. Same result as
/// `round_ties_even`, which the baseline x86-64 build turns into a call to libm's `rintf` per
/// sample (a quarter of the time of composing a large scan).
#[inline(always)]
fn round_even_small(x: f32) -> f32 {
    (x + ROUND_MAGIC) - ROUND_MAGIC
}

/// `round(x * 255)` (ties to even, as numpy), saturating; NaN becomes 0.
#[inline(always)]
fn quantise8(v: f32) -> u8 {
    round_even_small((v * 255.0).clamp(0.0, 255.0)) as u8
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
    let bytes: Vec<u8> = rgb.par_iter().map(|&v| quantise8(v)).collect();
    let w = u32::try_from(width).expect("width fits u32");
    let h = u32::try_from(height).expect("height fits u32");
    RgbImage::from_raw(w, h, bytes).expect("buffer length checked above")
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
