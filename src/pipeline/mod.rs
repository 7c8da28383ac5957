//! Pre- and post-processing around the model, as the upstream DDColor inference script does it:
//! image -> (full-resolution L, square gray model input), then model ab + full-resolution L ->
//! colour image. One image at a time, interleaved RGB `f32` in [0, 1] on both ends.
//!
//! Upstream inference, step by step (see `shared/golden/README.md`):
//! 1. RGB / 255 as float; 2. L of the full-resolution image (OpenCV float `BGR2Lab`);
//! 3. square resize to `size` (OpenCV `INTER_LINEAR`); 4. L of the resized image with a = b = 0
//!    back to RGB: the model input; 5. the model's ab (at `size` x `size`) resized to the original
//!    size (PyTorch `nearest` by default, or `bilinear`); 6. full L + ab -> RGB, `round(x * 255)`.
//!
//! By job: `prepare.rs` (steps 1-4: image -> [`Prepared`]), `compose.rs` (steps 5-6: L + ab ->
//! output pixels), `quantise.rs` (float -> 8/16-bit samples), [`color`] (Lab, the sRGB curve,
//! the gamut rules), [`resize`] (the OpenCV/PyTorch resamplers), [`tone`] (the "already colour"
//! measure). This file: the options and the types that pass between them.

pub mod color;
mod compose;
mod prepare;
mod quantise;
pub mod resize;
pub mod tone;

use image::DynamicImage;

pub use self::color::{clamp_ab, AB_LIMIT};
pub use self::compose::{compose, compose_gamut, compose_image};
pub use self::prepare::{
    prepare, prepare_image, prepare_image_with, prepare_l_only, prepare_with, rgb_f32_from_image,
    LabFlavour,
};
pub use self::quantise::to_rgb8;

/// The strongest `--saturation`: twice the model's chroma.
pub const MAX_SATURATION: f32 = 2.0;

/// The model's ab with its chroma scaled by `s` (0: no colour, the scan's own gray; 1: the
/// model as is; up to [`MAX_SATURATION`]). Scaling commutes with the (linear) resize of ab to
/// the image's size, so it is applied here, at model resolution; the gamut rule then keeps
/// the stronger colours in range when they are composed.
pub fn saturate(ab: &[f32], s: f32) -> std::borrow::Cow<'_, [f32]> {
    if s == 1.0 {
        return std::borrow::Cow::Borrowed(ab);
    }
    std::borrow::Cow::Owned(ab.iter().map(|v| v * s).collect())
}

/// Parse `--saturation`: a number from 0 to [`MAX_SATURATION`].
pub fn parse_saturation(s: &str) -> Result<f32, String> {
    let v: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("bad saturation {s:?}: a number from 0 to {MAX_SATURATION}"))?;
    if !(0.0..=MAX_SATURATION).contains(&v) {
        return Err(format!(
            "saturation {v} is out of range: 0 (gray) to {MAX_SATURATION} (twice the model's)"
        ));
    }
    Ok(v)
}
use crate::keywords::keyword_enum;

/// How the model's ab prediction is brought back to the image's size (PyTorch `F.interpolate`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ResizeMode {
    /// `mode='nearest'`: what the upstream script does.
    Nearest,
    /// `mode='bilinear'`, `align_corners=False`: ddcolor's default (no chroma blocks on large
    /// scans; see GUIDE.md).
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
    /// Clip each RGB channel with ab as predicted, even beyond the Lab range: what OpenCV's
    /// `Lab2BGR` does in the upstream script (`--compat upstream`). Extreme predictions change
    /// hue and lightness.
    Upstream,
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

keyword_enum!(Gamut, "gamut mode", {
    Auto => "auto",
    Fit => "fit",
    Clip => "clip",
    Upstream => "upstream",
});

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
