//! CIE L*a*b* <-> sRGB conversion with the exact formulas behind OpenCV's float `BGR2Lab` /
//! `Lab2BGR` (sRGB companding, OpenCV's sRGB<->XYZ matrices, D65 white 0.950456 / 1 / 1.088754,
//! CIE f(t) with 0.008856 and 7.787): single pixels and row-parallel slice helpers.
//!
//! All values are `f32`, RGB in [0, 1], L in 0..100. Input RGB is clipped to [0, 1] before
//! linearisation and linear RGB is clipped to [0, 1] before encoding, as OpenCV does.

use rayon::prelude::*;

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

#[inline]
fn clip01(x: f32) -> f32 {
    // NaN stays NaN (to_rgb8 maps it to 0).
    x.clamp(0.0, 1.0)
}

/// sRGB companding, encoded -> linear (input clipped to [0, 1]).
#[inline]
pub fn srgb_to_linear(v: f32) -> f32 {
    let v = clip01(v);
    // (NaN takes this branch and stays NaN)
    if v <= 0.04045 || v.is_nan() {
        v / 12.92
    } else {
        SRGB_DECODE.eval(v)
    }
}

/// [`srgb_to_linear`] by the formula (for tests of the table).
pub fn srgb_to_linear_exact(v: f32) -> f32 {
    let v = clip01(v);
    if v <= 0.04045 {
        v / 12.92
    } else {
        ((v + 0.055) / 1.055).powf(2.4)
    }
}

/// sRGB companding, linear -> encoded (input clipped to [0, 1]), by the formula.
#[inline]
pub fn linear_to_srgb_exact(v: f32) -> f32 {
    let v = clip01(v);
    if v <= 0.003_130_8 {
        12.92 * v
    } else {
        1.055 * v.powf(1.0 / 2.4) - 0.055
    }
}

/// A smooth function on `[2^lo, 1]` read from a table indexed by the argument's own float
/// bits: `2^per_octave_log2` points per octave (within an octave a float is linear in its
/// bits), interpolated linearly. A few loads and a multiply instead of `powf`/`cbrt`, which
/// were most of the cost of converting a large scan. `N` (the table's length, fixed by
/// `lo` and the density) is a constant so that the index needs no bounds check and a loop of
/// lookups vectorises (gathers).
pub(crate) struct BitTable<const N: usize> {
    lo_bits: u32,
    shift: u32,
    values: Box<[f32; N]>,
}

impl<const N: usize> BitTable<N> {
    fn new(lo_exp: i32, per_octave_log2: u32, f: impl Fn(f64) -> f64) -> Self {
        let lo_bits = ((127 + lo_exp) as u32) << 23;
        let shift = 23 - per_octave_log2;
        let n = (((1.0f32.to_bits() - lo_bits) >> shift) + 2) as usize;
        assert_eq!(
            n, N,
            "table length for 2^{lo_exp}..1 at 2^{per_octave_log2}/octave"
        );
        let values: Vec<f32> = (0..n)
            .map(|i| f(f32::from_bits(lo_bits + ((i as u32) << shift)) as f64) as f32)
            .collect();
        Self {
            lo_bits,
            shift,
            values: values
                .into_boxed_slice()
                .try_into()
                .expect("length checked"),
        }
    }

    /// `f(v)` for `v` in `[2^lo, 1]` (the caller keeps it there; outside, a finite value of
    /// no meaning).
    #[inline(always)]
    fn eval(&self, v: f32) -> f32 {
        let rel = v.to_bits().wrapping_sub(self.lo_bits);
        let i = ((rel >> self.shift) as usize).min(N - 2);
        let frac = (rel & ((1 << self.shift) - 1)) as f32 * (1.0 / (1u32 << self.shift) as f32);
        let (t0, t1) = (self.values[i], self.values[i + 1]);
        t0 + (t1 - t0) * frac
    }
}

/// Linear from encoded sRGB on [2^-5, 1] (the knee is at 0.04045 > 2^-5): within 5e-7.
static SRGB_DECODE: std::sync::LazyLock<BitTable<{ 5 * 1024 + 2 }>> =
    std::sync::LazyLock::new(|| BitTable::new(-5, 10, |x| ((x + 0.055) / 1.055).powf(2.4)));

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

/// sRGB companding, linear -> encoded (input clipped to [0, 1]), to within 1.5e-7 of the
/// formula (checked over every float of the power-law side), with no table gathers:
/// `v = 2^e m` with `m` in [1, 2) gives `v^(1/2.4) = 2^(5e/12) m^(5/12)`, a polynomial in `m`
/// ([`ENCODE_POLY`]) times one of ten per-octave factors ([`ENCODE_OCTAVE`], one register on
/// AVX-512). Two table reads per value (a gather each, in vector code) were half the cost of
/// composing a large scan on CPUs with slow gathers.
#[inline]
pub fn linear_to_srgb(v: f32) -> f32 {
    let v = clip01(v);
    let bits = v.to_bits();
    // the octave, e + 9 for e = -9..=0 (the power-law side starts at 0.0031308 > 2^-9); other
    // indices only occur where the linear side is taken
    let octave = ENCODE_OCTAVE[((bits >> 23).wrapping_sub(127 - 9) & 15) as usize];
    let t = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000) - 1.5;
    let mut p = ENCODE_POLY[7];
    for &c in ENCODE_POLY[..7].iter().rev() {
        p = p.mul_add(t, c);
    }
    // (the fit overshoots 1 by an ulp at 1)
    let high = (octave * p).mul_add(1.055, -0.055).min(1.0);
    // (NaN takes the linear side too and stays NaN, as with the formula)
    if v <= SRGB_KNEE || v.is_nan() {
        12.92 * v
    } else {
        high
    }
}

/// Linear value below which sRGB encoding is linear.
const SRGB_KNEE: f32 = 0.003_130_8;

/// `m^(5/12)` for `m` in [1, 2), as coefficients of `t = m - 1.5` from the constant term up
/// (Chebyshev fit of degree 7; 1.5e-7 relative, float rounding included).
const ENCODE_POLY: [f32; 8] = [
    1.184_053_7,
    3.289_037e-1,
    -6.395_671_5e-2,
    2.250_561_3e-2,
    -9.625_546e-3,
    4.580_285_4e-3,
    -2.744_525_2e-3,
    1.501_874e-3,
];

/// `2^(5e/12)` for the octaves `e = -9..=0` at index `e + 9`; 16 entries so that the AVX-512
/// path holds them in one register (the others are never used).
const ENCODE_OCTAVE: [f32; 16] = [
    7.432_544e-2,
    9.921_256_5e-2,
    1.324_329e-1,
    1.767_766_9e-1,
    2.359_685_7e-1,
    3.149_802_7e-1,
    4.204_482e-1,
    5.612_31e-1,
    7.491_535_5e-1,
    1.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
];

multiversion! {
    /// [`linear_to_srgb`] of every value of `v`, in place (AVX2: the octave factor by gather).
    fn encode_row(v: &mut [f32]) {
        for x in v.iter_mut() {
            *x = linear_to_srgb(*x);
        }
    }
}

/// [`linear_to_srgb`] of every value of `v`, in place: vectorised, the same values bit for bit.
pub fn linear_to_srgb_row(v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { encode_row_avx512(v) };
    }
    encode_row(v);
}

/// [`linear_to_srgb`] sixteen values at a time, the octave factor picked from a register by a
/// permute: the same operations in the same order (fused multiply-adds where it has
/// `mul_add`), so the same values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn encode_row_avx512(v: &mut [f32]) {
    use std::arch::x86_64::*;
    let octaves = _mm512_loadu_ps(ENCODE_OCTAVE.as_ptr());
    let poly = ENCODE_POLY.map(|c| _mm512_set1_ps(c));
    let (zero, one) = (_mm512_setzero_ps(), _mm512_set1_ps(1.0));
    let knee = _mm512_set1_ps(SRGB_KNEE);
    let mantissa = _mm512_set1_epi32(0x007f_ffff);
    let unit = _mm512_set1_epi32(0x3f80_0000);
    let bias = _mm512_set1_epi32(127 - 9);
    for chunk in v.chunks_mut(16) {
        let mask: __mmask16 = if chunk.len() == 16 {
            !0
        } else {
            (1 << chunk.len()) - 1
        };
        // SAFETY: the mask covers `chunk.len()` values from its start.
        let x = unsafe { _mm512_maskz_loadu_ps(mask, chunk.as_ptr()) };
        // clamp(x, 0, 1) keeping NaN: max/min return their second operand on NaN
        let x = _mm512_min_ps(one, _mm512_max_ps(zero, x));
        let bits = _mm512_castps_si512(x);
        let index = _mm512_sub_epi32(_mm512_srli_epi32::<23>(bits), bias);
        // (the permute reads the low 4 bits of the index: `& 15` above)
        let octave = _mm512_permutexvar_ps(index, octaves);
        let m = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(bits, mantissa), unit));
        let t = _mm512_sub_ps(m, _mm512_set1_ps(1.5));
        let mut p = poly[7];
        for &c in poly[..7].iter().rev() {
            p = _mm512_fmadd_ps(p, t, c);
        }
        let high = _mm512_fmadd_ps(
            _mm512_mul_ps(octave, p),
            _mm512_set1_ps(1.055),
            _mm512_set1_ps(-0.055),
        );
        let high = _mm512_min_ps(high, one);
        let low = _mm512_mul_ps(_mm512_set1_ps(12.92), x);
        // not above the knee, or unordered (NaN): the linear side
        let linear = _mm512_cmp_ps_mask::<_CMP_NGT_UQ>(x, knee);
        let y = _mm512_mask_blend_ps(linear, high, low);
        // SAFETY: as the load.
        unsafe { _mm512_mask_storeu_ps(chunk.as_mut_ptr(), mask, y) };
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
/// colour outside sRGB changes hue and lightness; [`lab_to_rgb_in_gamut`] does not).
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
struct LightnessTerms {
    fy: f32,
    /// `INV[c][1] * Y` for R, G, B.
    y: [f32; 3],
}

impl LightnessTerms {
    #[inline(always)]
    fn of(l: f32) -> Self {
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
    fn linear(&self, a: f32, b: f32) -> [f32; 3] {
        self.linear_scaled(a * (1.0 / 500.0), b * (1.0 / 200.0))
    }

    /// [`Self::linear`] from `a / 500` and `b / 200`.
    #[inline(always)]
    fn linear_scaled(&self, a500: f32, b200: f32) -> [f32; 3] {
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
    /// [`clamp_ab`](super::clamp_ab) first when `clamp`: planar rows, vectorised.
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
                [r[i], g[i], bl[i]] = lab_to_linear(super::clamp_ab([l[i], a[i], b[i]]));
            }
        } else {
            for i in 0..n {
                [r[i], g[i], bl[i]] = lab_to_linear([l[i], a[i], b[i]]);
            }
        }
    }
}

/// A row of planar L, a, b to planar *linear* sRGB: with `clamp`, ab first brought into the
/// Lab range ([`clamp_ab`](super::clamp_ab), the clip rule); without, as predicted. Equal to
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

multiversion! {
    /// `flags[i] = 1` where linear RGB `(r[i], g[i], b[i])` is outside sRGB (with its slack,
    /// or not a number), as `!in_gamut`; `any` is set if one is.
    fn outside_flags(r: &[f32], g: &[f32], b: &[f32], flags: &mut [u8], any: &mut bool) {
        let n = flags.len();
        let (r, g, b) = (&r[..n], &g[..n], &b[..n]);
        let inside = |v: f32| (-GAMUT_SLACK..=1.0 + GAMUT_SLACK).contains(&v);
        let mut seen = 0u8;
        for i in 0..n {
            flags[i] = u8::from(!(inside(r[i]) & inside(g[i]) & inside(b[i])));
            seen |= flags[i];
        }
        *any = seen != 0;
    }
}

/// The out-of-gamut pixels of a row from [`lab_to_linear_row`] (without `clamp`) brought into
/// sRGB as [`lab_to_rgb_in_gamut`] does, in linear RGB; pixels inside are left as they are.
/// The pixels outside are gathered and searched together, in vector lanes.
///
/// # Panics
/// If a slice is shorter than `l`.
pub fn fit_gamut_row(l: &[f32], a: &[f32], b: &[f32], [r, g, bl]: [&mut [f32]; 3]) {
    let n = l.len();
    let (a, b, r, g, bl) = (&a[..n], &b[..n], &mut r[..n], &mut g[..n], &mut bl[..n]);
    let mut flags = vec![0u8; n];
    let mut any = false;
    outside_flags(r, g, bl, &mut flags, &mut any);
    if !any {
        // most rows of most photographs
        return;
    }
    // the pixels outside, FIT_LANES at a time (the last block padded with gray, which fits)
    let mut block = GRAY.map(|v| [v; FIT_LANES]);
    let mut at = [0usize; FIT_LANES];
    let mut k = 0;
    let mut rgb = [r, g, bl];
    // the block's first `at.len()` lanes back to the pixels `at`
    let flush = |block: &[[f32; FIT_LANES]; 3], at: &[usize], rgb: &mut [&mut [f32]; 3]| {
        let mut fitted = [[0f32; FIT_LANES]; 3];
        fit_chroma(block, &mut fitted);
        for (dst, src) in rgb.iter_mut().zip(&fitted) {
            for (&i, &v) in at.iter().zip(src) {
                dst[i] = v;
            }
        }
    };
    for (w, fw) in flags.chunks(FIT_LANES).enumerate() {
        let w0 = w * FIT_LANES;
        let outside = fw.iter().map(|&f| u32::from(f)).sum::<u32>() as usize;
        if outside == 0 {
            continue;
        }
        if fw.len() == FIT_LANES && 4 * outside >= 3 * FIT_LANES {
            // mostly outside (colours outside sRGB come in patches): the window as it stands
            // is the block, and the pixels inside keep their values
            let mut win = [[0f32; FIT_LANES]; 3];
            for (dst, src) in win.iter_mut().zip([l, a, b]) {
                dst.copy_from_slice(&src[w0..][..FIT_LANES]);
            }
            let mut fitted = [[0f32; FIT_LANES]; 3];
            fit_chroma(&win, &mut fitted);
            for (dst, src) in rgb.iter_mut().zip(&fitted) {
                for ((d, &v), &f) in dst[w0..][..FIT_LANES].iter_mut().zip(src).zip(fw) {
                    *d = if f != 0 { v } else { *d };
                }
            }
            continue;
        }
        for (chunk, f) in fw.chunks(16).enumerate() {
            // the flags of 16 pixels as bits, then one step per pixel outside
            let mut bits = f
                .iter()
                .enumerate()
                .fold(0u32, |m, (j, &f)| m | (u32::from(f) << j));
            while bits != 0 {
                let i = w0 + chunk * 16 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                [block[0][k], block[1][k], block[2][k]] = [l[i], a[i], b[i]];
                at[k] = i;
                k += 1;
                if k == FIT_LANES {
                    flush(&block, &at, &mut rgb);
                    k = 0;
                }
            }
        }
    }
    if k > 0 {
        for (c, v) in block.iter_mut().zip(GRAY) {
            c[k..].fill(v);
        }
        flush(&block, &at[..k], &mut rgb);
    }
}

/// Pixels per block of the gamut search: four AVX-512 registers per quantity, independent
/// lanes enough to hide each step's latency (16 were slower than the unblocked loop).
const FIT_LANES: usize = 64;
/// L, a, b of the padding: a gray inside sRGB.
const GRAY: [f32; 3] = [50.0, 0.0, 0.0];

/// Slack on linear RGB for "inside sRGB": the conversion's own float error (white, L = 100 with
/// a = b = 0, comes out at 1.000005 with OpenCV's matrices). What the final clip then removes
/// moves L by at most 0.01 (near black, where L = 903.3 Y).
const GAMUT_SLACK: f32 = 1e-5;
/// Chroma beyond which no sRGB colour lies (the most saturated, pure blue, has about 134):
/// a prediction is first brought within it, keeping its hue.
pub const MAX_CHROMA: f32 = 200.0;
/// Steps of the downward scan for the first chroma scale that fits (1, 7/8, ..., 1/8)...
const GAMUT_SCAN: u32 = 8;
/// ...then halvings of the bracket `[fits, does not]` it leaves (1/8 wide): the scale is
/// found to 2^-19, a chroma within 4e-4 (at [`MAX_CHROMA`]) of the largest that fits, which
/// moves linear RGB by about 1e-6: the encoded colour lands within two 16-bit steps of that
/// of the exact scale (1.7 at worst over 10,000 random colours outside sRGB; the test
/// below).
const GAMUT_STEPS: u32 = 16;

#[inline]
fn in_gamut(rgb: [f32; 3]) -> bool {
    rgb.iter()
        .all(|v| (-GAMUT_SLACK..=1.0 + GAMUT_SLACK).contains(v))
}

/// How far linear RGB lies outside [0, 1] (with the slack); <= 0 inside.
#[inline]
fn gamut_excess(rgb: [f32; 3]) -> f32 {
    rgb.iter().fold(f32::MIN, |m, &v| m.max(v - 1.0).max(-v)) - GAMUT_SLACK
}

/// One L*a*b* pixel to sRGB in [0, 1] **without hue shift**: a colour outside sRGB keeps its L
/// and its hue angle (the ratio a : b) and has its chroma scaled down to the largest that sRGB
/// can show (first to [`MAX_CHROMA`], then down along the same hue to the largest chroma that
/// fits; gray, chroma 0, is inside for every L in 0..100). Inside sRGB it is exactly
/// [`lab_to_rgb`]. Non-finite a or b count as 0 (gray).
///
/// Clipping each RGB channel instead (OpenCV, upstream DDColor) turns a prediction far outside
/// the Lab range (upstream issue #54: b near -180) into another hue and another lightness.
#[inline]
pub fn lab_to_rgb_in_gamut(lab: [f32; 3]) -> [f32; 3] {
    let lin = lab_to_linear(lab);
    if in_gamut(lin) {
        return lin.map(linear_to_srgb);
    }
    // one pixel in lane 0 of a block of gray
    let mut block = GRAY.map(|v| [v; FIT_LANES]);
    for (c, v) in block.iter_mut().zip(lab) {
        c[0] = v;
    }
    let mut fitted = [[0f32; FIT_LANES]; 3];
    fit_chroma(&block, &mut fitted);
    let [r, g, bl] = fitted.map(|c| c[0]);
    [r, g, bl].map(linear_to_srgb)
}

multiversion! {
    /// The out-of-gamut half of [`lab_to_rgb_in_gamut`] for [`FIT_LANES`] pixels at once
    /// (planar L, a, b), into linear RGB: the largest scale `s` in [0, 1] of (a, b) whose
    /// colour fits. Near black and white the colours that fit along one hue need not form one
    /// interval, so the search goes down from the prediction in steps of 1/[`GAMUT_SCAN`] to
    /// the first scale that fits, then halves the bracket it leaves [`GAMUT_STEPS`] times and
    /// keeps the side that fits. Every pixel takes the same steps (no early exit), so the
    /// loops run across the block's pixels in vector lanes, which stay in registers through
    /// all the steps; a pixel gives the same result in any lane, beside any other.
    fn fit_chroma(lab: &[[f32; FIT_LANES]; 3], out: &mut [[f32; FIT_LANES]; 3]) {
        const N: usize = FIT_LANES;
        let [l, a0, b0] = lab;
        let (mut a, mut b) = ([0f32; N], [0f32; N]);
        // ab within MAX_CHROMA along its hue; gray where it is not finite, or where no chroma
        // fits at all (black and white: gray itself is outside)
        for i in 0..N {
            let (ai, bi) = (a0[i], b0[i]);
            let gray_out = gamut_excess(lab_to_linear([l[i], 0.0, 0.0])) >= 0.0;
            let m = ai.abs().max(bi.abs());
            let (p, q) = (ai / m, bi / m);
            let c = m * (p * p + q * q).sqrt();
            let k = if c > MAX_CHROMA { MAX_CHROMA / c } else { 1.0 };
            let keep = ai.is_finite() && bi.is_finite() && !gray_out;
            a[i] = if keep { ai * k } else { 0.0 };
            b[i] = if keep { bi * k } else { 0.0 };
        }
        let (mut lo, mut hi) = ([0f32; N], [1f32; N]);
        // what depends on L alone, as planes (an array of structs does not vectorise)
        let (mut fy, mut y) = ([0f32; N], [[0f32; N]; 3]);
        for i in 0..N {
            let t = LightnessTerms::of(l[i]);
            fy[i] = t.fy;
            [y[0][i], y[1][i], y[2][i]] = t.y;
        }
        // the test of the search: lab_to_linear with a/500 and b/200 formed once, inside sRGB
        // with its slack, in few operations (it runs 24 times per pixel)
        let (da, db): ([f32; N], [f32; N]) = (
            std::array::from_fn(|i| a[i] * (1.0 / 500.0)),
            std::array::from_fn(|i| b[i] * (1.0 / 200.0)),
        );
        let terms = |i: usize| LightnessTerms {
            fy: fy[i],
            y: [y[0][i], y[1][i], y[2][i]],
        };
        let fits = |i: usize, s: f32| {
            let [r, g, bl] = terms(i).linear_scaled(s * da[i], s * db[i]);
            r.min(g).min(bl) >= -GAMUT_SLACK && r.max(g).max(bl) <= 1.0 + GAMUT_SLACK
        };
        // the first step down that fits (lo > 0 marks it found; gray, at 0, always fits)
        for step in (1..=GAMUT_SCAN).rev() {
            let s = step as f32 / GAMUT_SCAN as f32;
            for i in 0..N {
                let fits = fits(i, s);
                let searching = lo[i] == 0.0;
                lo[i] = if searching && fits { s } else { lo[i] };
                hi[i] = if searching && !fits { s } else { hi[i] };
            }
        }
        for _ in 0..GAMUT_STEPS {
            for i in 0..N {
                let mid = (lo[i] + hi[i]) * 0.5;
                let fits = fits(i, mid);
                lo[i] = if fits { mid } else { lo[i] };
                hi[i] = if fits { hi[i] } else { mid };
            }
        }
        // the result by lab_to_linear itself
        let [r, g, bl] = out;
        for i in 0..N {
            [r[i], g[i], bl[i]] = terms(i).linear(lo[i] * a[i], lo[i] * b[i]);
        }
    }
}

/// Rows per rayon task: enough work per task that scheduling stays negligible.
fn rows_per_task(width: usize) -> usize {
    (16_384 / width.max(1)).max(1)
}

/// L plane (row-major, `len / 3` values) of an interleaved RGB image `width` pixels wide.
pub fn rgb_to_l_slice(rgb: &[f32], width: usize) -> Vec<f32> {
    assert_eq!(
        rgb.len() % 3,
        0,
        "interleaved RGB length must be a multiple of 3"
    );
    let mut out = vec![0.0f32; rgb.len() / 3];
    let rows = rows_per_task(width);
    out.par_chunks_mut(rows * width.max(1))
        .zip(rgb.par_chunks(3 * rows * width.max(1)))
        .for_each(|(dst, src)| {
            for (d, p) in dst.iter_mut().zip(src.chunks_exact(3)) {
                *d = rgb_to_l([p[0], p[1], p[2]]);
            }
        });
    out
}

/// Interleaved RGB -> interleaved Lab (same length); `width` only sets the parallel chunking.
pub fn rgb_to_lab_slice(rgb: &[f32], width: usize) -> Vec<f32> {
    map_pixels(rgb, width, rgb_to_lab)
}

/// Interleaved Lab -> interleaved RGB in [0, 1] (same length).
pub fn lab_to_rgb_slice(lab: &[f32], width: usize) -> Vec<f32> {
    map_pixels(lab, width, lab_to_rgb)
}

fn map_pixels(src: &[f32], width: usize, f: fn([f32; 3]) -> [f32; 3]) -> Vec<f32> {
    assert_eq!(
        src.len() % 3,
        0,
        "interleaved length must be a multiple of 3"
    );
    let mut out = vec![0.0f32; src.len()];
    let chunk = 3 * rows_per_task(width) * width.max(1);
    out.par_chunks_mut(chunk)
        .zip(src.par_chunks(chunk))
        .for_each(|(dst, src)| {
            for (d, s) in dst.chunks_exact_mut(3).zip(src.chunks_exact(3)) {
                d.copy_from_slice(&f([s[0], s[1], s[2]]));
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gamut search written plainly, one pixel at a time, with 40 halvings: the chroma
    /// scale to float precision.
    fn reference_fit(lab: [f32; 3]) -> [f32; 3] {
        let [l, a0, b0] = lab;
        let inside = |s: f32, a: f32, b: f32| in_gamut(lab_to_linear([l, s * a, s * b]));
        let c = a0.hypot(b0);
        let k = if c > MAX_CHROMA { MAX_CHROMA / c } else { 1.0 };
        let (a, b) = (a0 * k, b0 * k);
        let (mut lo, mut hi) = (0f32, 1f32);
        for step in (1..=GAMUT_SCAN).rev() {
            let s = step as f32 / GAMUT_SCAN as f32;
            if inside(s, a, b) {
                lo = s;
                break;
            }
            hi = s;
        }
        for _ in 0..40 {
            let mid = (lo + hi) * 0.5;
            if inside(mid, a, b) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lab_to_linear([l, lo * a, lo * b]).map(linear_to_srgb)
    }

    #[test]
    fn the_gamut_search_lands_within_two_16_bit_steps_of_the_exact_scale() {
        let mut seed = 0x2545_f491_u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as f32 / u32::MAX as f32
        };
        let mut worst = 0f32;
        let mut outside = 0;
        for _ in 0..20_000 {
            let lab = [
                2.0 + 96.0 * next(),
                300.0 * next() - 150.0,
                300.0 * next() - 150.0,
            ];
            if in_gamut(lab_to_linear(lab)) {
                continue;
            }
            outside += 1;
            let (got, want) = (lab_to_rgb_in_gamut(lab), reference_fit(lab));
            for (g, w) in got.iter().zip(want) {
                worst = worst.max((g - w).abs());
            }
        }
        assert!(outside > 10_000, "{outside}");
        assert!(
            worst <= 2.0 / 65535.0,
            "max difference {worst} (> two 16-bit steps)"
        );
    }
}
