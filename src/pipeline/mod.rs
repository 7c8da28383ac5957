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

use std::fmt;
use std::str::FromStr;

use image::{DynamicImage, RgbImage};
use rayon::prelude::*;

use self::resize::Axis;

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

impl FromStr for ResizeMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "nearest" => Ok(Self::Nearest),
            "bilinear" => Ok(Self::Bilinear),
            _ => Err(format!(
                "unknown resize mode {s:?}; expected \"nearest\" or \"bilinear\""
            )),
        }
    }
}

impl fmt::Display for ResizeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Nearest => "nearest",
            Self::Bilinear => "bilinear",
        })
    }
}

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

/// Steps 5-6: the model's ab (`2 x size x size`, planar) resized to `width` x `height` with
/// `mode`, joined with the full-resolution `l` (`height * width`), converted to interleaved RGB
/// clipped to [0, 1]. The resize is fused into the colour conversion: no full-size ab planes.
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
    let mut out = vec![0.0f32; 3 * width * height];
    if out.is_empty() {
        return out;
    }
    let ax = Axis::for_mode(mode, size, width);
    let ay = Axis::for_mode(mode, size, height);
    let (a_plane, b_plane) = ab.split_at(size * size);
    out.par_chunks_mut(3 * width)
        .zip(l.par_chunks(width))
        .enumerate()
        .for_each(|(y, (dst, l_row))| {
            for (x, (px, &lv)) in dst.chunks_exact_mut(3).zip(l_row).enumerate() {
                let a = resize::sample_plane(a_plane, size, &ax, &ay, x, y);
                let b = resize::sample_plane(b_plane, size, &ax, &ay, x, y);
                px.copy_from_slice(&color::lab_to_rgb([lv, a, b]));
            }
        });
    out
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
    let bytes: Vec<u8> = rgb
        .par_iter()
        .map(|&v| (v * 255.0).round_ties_even().clamp(0.0, 255.0) as u8)
        .collect();
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
