//! Colours outside sRGB (the model's ab is unbounded): the clip rule brings ab into the Lab
//! range along its hue ([`clamp_ab`]); the fit rule keeps L and hue and searches for the
//! largest chroma that sRGB can show ([`lab_to_rgb_in_gamut`], [`fit_gamut_row`]).

pub use super::lab::{clamp_ab, AB_LIMIT};
use super::lab::{lab_to_linear, LightnessTerms};
use super::srgb::linear_to_srgb;
use crate::simd::multiversion;

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

/// The out-of-gamut pixels of a row from [`lab_to_linear_row`](super::lab_to_linear_row)
/// (without `clamp`) brought into sRGB as [`lab_to_rgb_in_gamut`] does, in linear RGB; pixels
/// inside are left as they are. The pixels outside are gathered and searched together, in
/// vector lanes.
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
/// [`lab_to_rgb`](super::lab_to_rgb). Non-finite a or b count as 0 (gray).
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
