//! Is a photo already in colour? A black-and-white scan is often stored as RGB, and toned
//! prints (sepia, selenium, gold, cyanotype, split toning) carry a tint; all of these are
//! colorized. A photo whose colours are not a function of lightness is genuinely multi-hued and
//! is left alone.
//!
//! The measure: in a monochrome print, toned or not, the colour of a pixel follows from its
//! lightness alone (the toner gives shadows one tint and highlights another, the same all over
//! the picture). In a colour photo, things of the same lightness have different colours: a red
//! coat and green grass, skin and sky. So, on a grid of at most [`MAX_SAMPLES`] pixels:
//! 1. convert to CIE L\*a\*b\*, group the pixels by lightness (bins of [`L_BIN`] in L);
//! 2. take each group's mean (a, b): the tint at that lightness;
//! 3. count the pixels whose (a, b) is more than [`OFF_TONE_DISTANCE`] from their group's tint.
//!
//! A photo is **already colour** when at least [`OFF_TONE_SHARE_MIN`] (8%) of its pixels are
//! that far off. Measured: colour photos 17-52%; gray stored as RGB 0%; synthetic sepia,
//! selenium, cyanotype and split toning 0%, and at most 5% after JPEG compression at quality
//! 60. Gray images (one channel) are never colour. Faint colour (a faded print whose colours
//! are all within [`OFF_TONE_DISTANCE`] of each other at each lightness) counts as toned.
use image::{DynamicImage, GenericImageView};

use super::color::rgb_to_lab;

/// Pixels looked at, at most (a regular grid over the whole image).
pub const MAX_SAMPLES: u64 = 65_536;
/// Width of the lightness groups, in L units (0..100).
pub const L_BIN: f32 = 2.0;
/// Distance in the a*b* plane (CIE units) from the tint of its lightness beyond which a pixel
/// has a colour of its own. About the whole chroma of a sepia tint.
pub const OFF_TONE_DISTANCE: f32 = 10.0;
/// Share of such pixels from which a photo counts as multi-hued.
pub const OFF_TONE_SHARE_MIN: f32 = 0.08;

/// What the measure saw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ToneStats {
    /// Pixels sampled (0 for a gray image).
    pub samples: usize,
    /// Share of sampled pixels farther than [`OFF_TONE_DISTANCE`] from the tint of their
    /// lightness.
    pub off_tone_share: f32,
    /// Root-mean-square distance from the tint of their lightness, for diagnostics.
    pub off_tone_rms: f32,
}

impl ToneStats {
    /// The rule in the module documentation.
    pub fn is_colour(&self) -> bool {
        self.off_tone_share >= OFF_TONE_SHARE_MIN
    }
}

/// Measure a decoded image (see the module documentation).
pub fn tone_stats(img: &DynamicImage) -> ToneStats {
    let none = ToneStats {
        samples: 0,
        off_tone_share: 0.0,
        off_tone_rms: 0.0,
    };
    let (w, h) = img.dimensions();
    if !img.color().has_color() || w == 0 || h == 0 {
        return none;
    }
    // grid step so that (w / step) * (h / step) <= MAX_SAMPLES
    let pixels = u64::from(w) * u64::from(h);
    let step = ((pixels as f64 / MAX_SAMPLES as f64).sqrt().ceil() as u32).max(1);
    let bins = (100.0 / L_BIN).ceil() as usize;
    let bin = |l: f32| ((l / L_BIN) as usize).min(bins - 1);
    let mut lab = Vec::with_capacity((w.div_ceil(step) * h.div_ceil(step)) as usize);
    for y in (step / 2..h).step_by(step as usize) {
        for x in (step / 2..w).step_by(step as usize) {
            let p = img.get_pixel(x, y).0;
            lab.push(rgb_to_lab([p[0], p[1], p[2]].map(|v| f32::from(v) / 255.0)));
        }
    }
    if lab.is_empty() {
        return none;
    }
    // the tint of each lightness: mean (a, b) per bin
    let mut tint = vec![(0f64, 0f64, 0u32); bins];
    for &[l, a, b] in &lab {
        let t = &mut tint[bin(l)];
        t.0 += f64::from(a);
        t.1 += f64::from(b);
        t.2 += 1;
    }
    let tint: Vec<(f32, f32)> = tint
        .iter()
        .map(|&(a, b, n)| {
            let n = f64::from(n.max(1));
            ((a / n) as f32, (b / n) as f32)
        })
        .collect();
    let (mut off, mut sq) = (0usize, 0f64);
    for &[l, a, b] in &lab {
        let (ta, tb) = tint[bin(l)];
        let d = (a - ta).hypot(b - tb);
        off += usize::from(d > OFF_TONE_DISTANCE);
        sq += f64::from(d * d);
    }
    let n = lab.len();
    ToneStats {
        samples: n,
        off_tone_share: off as f32 / n as f32,
        off_tone_rms: (sq / n as f64).sqrt() as f32,
    }
}

/// True for a genuinely multi-hued photo (skip it unless `--force`); false for gray, gray
/// stored as RGB and toned monochrome.
pub fn is_already_colour(img: &DynamicImage) -> bool {
    tone_stats(img).is_colour()
}
