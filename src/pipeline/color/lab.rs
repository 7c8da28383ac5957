//! Lab <-> linear sRGB: OpenCV's matrices and white point, the CIE f(t) and its inverse, the
//! cube root from a table.

use super::srgb::{linear_to_srgb, srgb_to_linear};
use super::table::BitTable;

/// Largest |a| or |b| the Lab range holds.
pub const AB_LIMIT: f32 = 127.0;

/// Scale (a, b) towards grey, keeping the hue angle, until both fit `[-127, 127]`: a b of -180
/// becomes -127 with a shrunk by the same factor, never a wrapped or clamped-per-axis value.
/// The first half of the clip rule ([`Gamut::Clip`](crate::pipeline::Gamut::Clip)).
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

use crate::simd::multiversion;

/// OpenCV's sRGB (linear) -> XYZ matrix (D65), rows X, Y, Z.
const RGB_TO_XYZ: [[f64; 3]; 3] = [
    [0.412453, 0.357580, 0.180423],
    [0.212671, 0.715160, 0.072169],
    [0.019334, 0.119193, 0.950227],
];
/// OpenCV's XYZ -> sRGB (linear) matrix, rows R, G, B.
const XYZ_TO_RGB: [[f64; 3]; 3] = [
    [3.240479, -1.53715, -0.498535],
    [-0.969256, 1.875991, 0.041556],
    [0.055648, -0.204043, 1.057311],
];
/// D65 white point as used by OpenCV.
const WHITE: [f64; 3] = [0.950456, 1.0, 1.088754];

/// RGB -> XYZ with X and Z already divided by the white point (as OpenCV precomputes it).
const FWD: [[f32; 3]; 3] = [
    [
        (RGB_TO_XYZ[0][0] / WHITE[0]) as f32,
        (RGB_TO_XYZ[0][1] / WHITE[0]) as f32,
        (RGB_TO_XYZ[0][2] / WHITE[0]) as f32,
    ],
    [
        RGB_TO_XYZ[1][0] as f32,
        RGB_TO_XYZ[1][1] as f32,
        RGB_TO_XYZ[1][2] as f32,
    ],
    [
        (RGB_TO_XYZ[2][0] / WHITE[2]) as f32,
        (RGB_TO_XYZ[2][1] / WHITE[2]) as f32,
        (RGB_TO_XYZ[2][2] / WHITE[2]) as f32,
    ],
];
/// Normalised XYZ -> RGB: column j multiplied by the white point's component j.
const INV: [[f32; 3]; 3] = [
    [
        (XYZ_TO_RGB[0][0] * WHITE[0]) as f32,
        (XYZ_TO_RGB[0][1] * WHITE[1]) as f32,
        (XYZ_TO_RGB[0][2] * WHITE[2]) as f32,
    ],
    [
        (XYZ_TO_RGB[1][0] * WHITE[0]) as f32,
        (XYZ_TO_RGB[1][1] * WHITE[1]) as f32,
        (XYZ_TO_RGB[1][2] * WHITE[2]) as f32,
    ],
    [
        (XYZ_TO_RGB[2][0] * WHITE[0]) as f32,
        (XYZ_TO_RGB[2][1] * WHITE[1]) as f32,
        (XYZ_TO_RGB[2][2] * WHITE[2]) as f32,
    ],
];

/// CIE threshold on normalised XYZ (OpenCV's 0.008856, not (6/29)^3).
const T_THRESH: f32 = 0.008856;
const KAPPA: f32 = 903.3;
const SLOPE: f32 = 7.787;
const OFFSET: f32 = 16.0 / 116.0;
/// L below which the linear branch applies on the way back: 0.008856 * 903.3.
const L_THRESH: f32 = T_THRESH * KAPPA;
/// f value below which the linear branch applies on the way back: 7.787 * 0.008856 + 16/116.
const F_THRESH: f32 = SLOPE * T_THRESH + OFFSET;

/// Cube root on [2^-7, 1] (Lab's threshold 0.008856 > 2^-7): within 1e-7.
static CBRT: std::sync::LazyLock<BitTable<{ 7 * 1024 + 2 }>> =
    std::sync::LazyLock::new(|| BitTable::new(-7, 10, f64::cbrt));

/// `cbrt` for `t` in (0.008856, 1] from the table, beyond 1 (super-white) by the formula.
#[inline(always)]
fn cbrt_unit(t: f32) -> f32 {
    if t <= 1.0 {
        CBRT.eval(t)
    } else {
        t.cbrt()
    }
}

#[inline]
fn lab_f(t: f32) -> f32 {
    if t > T_THRESH {
        cbrt_unit(t)
    } else {
        SLOPE * t + OFFSET
    }
}

#[inline]
fn lab_f_inv(f: f32) -> f32 {
    if f <= F_THRESH {
        (f - OFFSET) * (1.0 / SLOPE)
    } else {
        f * f * f
    }
}

/// L from relative luminance Y (white = 1).
#[inline]
fn l_from_y(y: f32) -> f32 {
    if y > T_THRESH {
        116.0 * cbrt_unit(y) - 16.0
    } else {
        KAPPA * y
    }
}

/// One sRGB pixel (components in [0, 1]) to L*a*b* (L in 0..100).
#[inline]
pub fn rgb_to_lab(rgb: [f32; 3]) -> [f32; 3] {
    let r = srgb_to_linear(rgb[0]);
    let g = srgb_to_linear(rgb[1]);
    let b = srgb_to_linear(rgb[2]);
    let x = FWD[0][0] * r + FWD[0][1] * g + FWD[0][2] * b;
    let y = FWD[1][0] * r + FWD[1][1] * g + FWD[1][2] * b;
    let z = FWD[2][0] * r + FWD[2][1] * g + FWD[2][2] * b;
    let (fx, fy, fz) = (lab_f(x), lab_f(y), lab_f(z));
    let l = if y > T_THRESH {
        116.0 * fy - 16.0
    } else {
        KAPPA * y
    };
    [l, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

/// Only the L of one sRGB pixel; equal to `rgb_to_lab(rgb)[0]`, without the X and Z work.
#[inline]
pub fn rgb_to_l(rgb: [f32; 3]) -> f32 {
    let r = srgb_to_linear(rgb[0]);
    let g = srgb_to_linear(rgb[1]);
    let b = srgb_to_linear(rgb[2]);
    l_from_y(FWD[1][0] * r + FWD[1][1] * g + FWD[1][2] * b)
}

/// One L*a*b* pixel back to sRGB, each component clipped to [0, 1] (OpenCV's `Lab2BGR`: a
/// colour outside sRGB changes hue and lightness;
/// [`lab_to_rgb_in_gamut`](super::lab_to_rgb_in_gamut) does not).
#[inline]
pub fn lab_to_rgb(lab: [f32; 3]) -> [f32; 3] {
    lab_to_linear(lab).map(linear_to_srgb)
}

/// One L*a*b* pixel to *linear* sRGB, not clipped: a component outside [0, 1] means the colour
/// lies outside the sRGB gamut.
#[inline]
pub fn lab_to_linear(lab: [f32; 3]) -> [f32; 3] {
    // OpenCV's formula, with its divisions by constants as multiplications by their
    // reciprocals (within an ulp; six vector divisions were most of the cost of the gamut
    // search, which evaluates this ~25 times per pixel outside sRGB)
    let [l, a, b] = lab;
    LightnessTerms::of(l).linear(a, b)
}

/// What [`lab_to_linear`] derives from L alone: `f(Y)` and the Y column of the matrix, for
/// evaluating many (a, b) at one L (the gamut search).
#[derive(Clone, Copy)]
pub(super) struct LightnessTerms {
    pub(super) fy: f32,
    /// `INV[c][1] * Y` for R, G, B.
    pub(super) y: [f32; 3],
}

impl LightnessTerms {
    #[inline(always)]
    pub(super) fn of(l: f32) -> Self {
        let (y, fy) = if l <= L_THRESH {
            let y = l * (1.0 / KAPPA);
            (y, SLOPE * y + OFFSET)
        } else {
            let fy = (l + 16.0) * (1.0 / 116.0);
            (fy * fy * fy, fy)
        };
        Self {
            fy,
            y: [INV[0][1] * y, INV[1][1] * y, INV[2][1] * y],
        }
    }

    /// Linear RGB of (L, a, b), exactly [`lab_to_linear`].
    #[inline(always)]
    pub(super) fn linear(&self, a: f32, b: f32) -> [f32; 3] {
        self.linear_scaled(a * (1.0 / 500.0), b * (1.0 / 200.0))
    }

    /// [`Self::linear`] from `a / 500` and `b / 200`.
    #[inline(always)]
    pub(super) fn linear_scaled(&self, a500: f32, b200: f32) -> [f32; 3] {
        let x = lab_f_inv(a500 + self.fy);
        let z = lab_f_inv(self.fy - b200);
        let r = INV[0][0] * x + self.y[0] + INV[0][2] * z;
        let g = INV[1][0] * x + self.y[1] + INV[1][2] * z;
        let bl = INV[2][0] * x + self.y[2] + INV[2][2] * z;
        [r, g, bl]
    }
}

multiversion! {
    /// [`lab_to_linear`] of the pixels `(l[i], a[i], b[i])` into `r`, `g`, `bl`, with
    /// [`clamp_ab`] first when `clamp`: planar rows, vectorised.
    fn lab_row_to_linear(
        l: &[f32],
        a: &[f32],
        b: &[f32],
        clamp: bool,
        r: &mut [f32],
        g: &mut [f32],
        bl: &mut [f32],
    ) {
        let n = l.len();
        let (a, b, r, g, bl) = (&a[..n], &b[..n], &mut r[..n], &mut g[..n], &mut bl[..n]);
        if clamp {
            for i in 0..n {
                [r[i], g[i], bl[i]] = lab_to_linear(clamp_ab([l[i], a[i], b[i]]));
            }
        } else {
            for i in 0..n {
                [r[i], g[i], bl[i]] = lab_to_linear([l[i], a[i], b[i]]);
            }
        }
    }
}

/// A row of planar L, a, b to planar *linear* sRGB: with `clamp`, ab first brought into the
/// Lab range ([`clamp_ab`], the clip rule); without, as predicted. Equal to
/// [`lab_to_linear`] per pixel.
///
/// # Panics
/// If a slice is shorter than `l`.
pub fn lab_to_linear_row(
    l: &[f32],
    a: &[f32],
    b: &[f32],
    clamp: bool,
    [r, g, bl]: [&mut [f32]; 3],
) {
    lab_row_to_linear(l, a, b, clamp, r, g, bl);
}
