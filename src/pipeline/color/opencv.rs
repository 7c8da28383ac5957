//! OpenCV's float `BGR2Lab` as OpenCV computes it, for `--compat upstream`.
//!
//! For float sRGB input with the default white point, OpenCV does not evaluate the Lab formulas
//! per pixel: it rounds each channel to 1/16384, looks the colour up in a 33x33x33 table of Lab
//! values (built once with exact arithmetic and stored as integers in 1/16384 units), and
//! interpolates trilinearly between the 8 corners with 4-bit integer weights. The result
//! differs from the formula by up to ~0.002 in L, which the real network amplifies into
//! visible differences; reproducing the table and the interpolation makes the model see what it
//! sees in the authors' script. The reverse conversion, `Lab2BGR`, evaluates the formula up to
//! XYZ and then encodes through a spline-interpolated table: [`lab_to_rgb_opencv`].
//!
//! Table layout and arithmetic follow OpenCV's `color_lab.cpp` (`initLUTforLABLUVs16`,
//! `trilinearInterpolate`): the table's first axis is the blue channel, then green, then red;
//! corners are rounded half to even (`cvRound`).
use std::sync::OnceLock;

const LUT_SHIFT: u32 = 5;
const DIM: usize = (1 << LUT_SHIFT) + 1;
const BASE_SHIFT: u32 = 14;
const BASE: i32 = 1 << BASE_SHIFT;
/// Bits of the interpolation weights per axis.
const TRI_SHIFT: u32 = 8 - LUT_SHIFT + 1;
const TRI_BASE: i32 = 1 << TRI_SHIFT;

/// OpenCV's sRGB -> XYZ (D65) matrix, as the doubles it stores.
const SRGB_TO_XYZ: [f64; 9] = [
    f64::from_bits(0x3fda65a14488c60d),
    f64::from_bits(0x3fd6e297396d0918),
    f64::from_bits(0x3fc71819d2391d58),
    f64::from_bits(0x3fcb38cda6e75ff6),
    f64::from_bits(0x3fe6e297396d0918),
    f64::from_bits(0x3fb279aae6c8f755),
    f64::from_bits(0x3f93cc4ac6cdaf4b),
    f64::from_bits(0x3fbe836eb4e98138),
    f64::from_bits(0x3fee68427418d691),
];
/// D65 white point, as OpenCV stores it.
const D65: [f64; 3] = [
    f64::from_bits(0x3fee6a22b3892ee8),
    1.0,
    f64::from_bits(0x3ff16b8950763a19),
];

/// Round half to even, as `cvRound` (lrint in the default rounding mode).
fn round_even(x: f32) -> i32 {
    x.round_ties_even() as i32
}

/// The sRGB decoding curve in double precision, rounded to single (OpenCV's `applyGamma`).
fn decode(x: f32) -> f32 {
    let xd = x as f64;
    let v = if xd <= 809.0 / 20000.0 {
        xd / (323.0 / 25.0)
    } else {
        ((xd + 11.0 / 200.0) / (1.0 + 11.0 / 200.0)).powf(12.0 / 5.0)
    };
    v as f32
}

/// The table: per corner (blue, green, red), L, a and b in 1/16384 units of L/100 and
/// (a + 128)/256, (b + 128)/256.
fn table() -> &'static [[i16; 3]] {
    static TABLE: OnceLock<Vec<[i16; 3]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let scale = [1.0 / D65[0], 1.0, 1.0 / D65[2]];
        // rows X, Y, Z; columns in table order: blue, green, red
        let s: [f32; 9] = std::array::from_fn(|k| {
            let (row, col) = (k / 3, k % 3);
            (SRGB_TO_XYZ[row * 3 + (2 - col)] * scale[row]) as f32
        });
        let lthresh = 216.0f32 / 24389.0;
        let lscale = 841.0f32 / 108.0;
        let lbias = 16.0f32 / 116.0;
        let f9033 = 24389.0f32 / 27.0;
        let f = |t: f32| {
            if t > lthresh {
                (t as f64).cbrt() as f32
            } else {
                t.mul_add(lscale, lbias)
            }
        };
        let lld = (DIM - 1) as f32;
        let mut out = vec![[0i16; 3]; DIM * DIM * DIM];
        for r in 0..DIM {
            for q in 0..DIM {
                for p in 0..DIM {
                    let c0 = decode(p as f32 / lld);
                    let c1 = decode(q as f32 / lld);
                    let c2 = decode(r as f32 / lld);
                    let x = c0 * s[0] + c1 * s[1] + c2 * s[2];
                    let y = c0 * s[3] + c1 * s[4] + c2 * s[5];
                    let z = c0 * s[6] + c1 * s[7] + c2 * s[8];
                    let (fx, fy, fz) = (f(x), f(y), f(z));
                    let l = if y > lthresh {
                        116.0 * fy - 16.0
                    } else {
                        f9033 * y
                    };
                    let a = 500.0 * (fx - fy);
                    let b = 200.0 * (fy - fz);
                    let base = BASE as f32;
                    out[p + q * DIM + r * DIM * DIM] = [
                        round_even(base * l / 100.0) as i16,
                        round_even(base * (a + 128.0) / 256.0) as i16,
                        round_even(base * (b + 128.0) / 256.0) as i16,
                    ];
                }
            }
        }
        out
    })
}

/// One sRGB pixel (`[r, g, b]` in [0, 1]) to L*a*b* as OpenCV's float `BGR2Lab` gives it.
pub fn rgb_to_lab_opencv(rgb: [f32; 3]) -> [f32; 3] {
    let t = table();
    // table order: blue, green, red
    let c = [rgb[2], rgb[1], rgb[0]].map(|v| round_even(v.clamp(0.0, 1.0) * BASE as f32));
    let cell = c.map(|v| (v >> (BASE_SHIFT - LUT_SHIFT)) as usize);
    let frac = c.map(|v| (v >> (BASE_SHIFT - 8 - 1)) & (TRI_BASE - 1));
    let mut acc = [0i32; 3];
    for corner in 0..8 {
        let d = [(corner >> 2) & 1, (corner >> 1) & 1, corner & 1];
        let mut w = 1;
        let mut idx = 0;
        let mut stride = 1;
        for axis in 0..3 {
            w *= if d[axis] == 1 {
                frac[axis]
            } else {
                TRI_BASE - frac[axis]
            };
            idx += (cell[axis] + d[axis]).min(DIM - 1) * stride;
            stride *= DIM;
        }
        for (k, a) in acc.iter_mut().enumerate() {
            *a += t[idx][k] as i32 * w;
        }
    }
    let shift = TRI_SHIFT * 3;
    let [l, a, b] = acc.map(|v| (v + (1 << (shift - 1))) >> shift);
    let base = BASE as f32;
    [
        l as f32 / base * 100.0,
        (a as f32 / base) * 256.0 - 128.0,
        (b as f32 / base) * 256.0 - 128.0,
    ]
}

/// OpenCV's XYZ -> sRGB matrix (`XYZ2sRGB_D65`), as the doubles it stores.
const XYZ_TO_SRGB: [f64; 9] = [
    f64::from_bits(0x4009ec804102ff8f),
    f64::from_bits(0xbff8982a9930be0e),
    f64::from_bits(0xbfdfe7ff583a53b9),
    f64::from_bits(0xbfef042528ae74f3),
    f64::from_bits(0x3ffe040f23897204),
    f64::from_bits(0x3fa546d3f9e7b80b),
    f64::from_bits(0x3fac7de5082cf52c),
    f64::from_bits(0xbfca1e14bdfd2631),
    f64::from_bits(0x3ff0eabef06b3786),
];

/// Intervals of OpenCV's gamma tables (`GAMMA_TAB_SIZE`).
const GAMMA_TAB: usize = 1024;

/// OpenCV's `sRGBInvGammaTab`: the sRGB encoding curve at 1025 points, and per interval the
/// cubic (value, slope, curvature, jerk) of a natural spline through them, built in single
/// precision as `splineBuild` does.
fn inv_gamma_spline() -> &'static [[f32; 4]] {
    static TAB: OnceLock<Vec<[f32; 4]>> = OnceLock::new();
    TAB.get_or_init(|| {
        let n = GAMMA_TAB;
        let f: Vec<f32> = (0..=n)
            .map(|i| {
                let x = (i as f32 / n as f32) as f64;
                let v = if x <= 0.0031308 {
                    x * 12.92
                } else {
                    (1.0 + 0.055) * x.powf(1.0 / 2.4) - 0.055
                };
                v as f32
            })
            .collect();
        let mut tab = vec![[0f32; 4]; n + 1];
        for i in 1..n - 1 {
            let t = (f[i + 1] - f[i] * 2.0 + f[i - 1]) * 3.0;
            let l = 1.0 / (4.0 - tab[i - 1][0]);
            tab[i][0] = l;
            tab[i][1] = (t - tab[i - 1][1]) * l;
        }
        let mut cn = 0f32;
        for i in (0..n).rev() {
            let c = tab[i][1] - tab[i][0] * cn;
            let b = f[i + 1] - f[i] - (cn + c * 2.0) / 3.0;
            let d = (cn - c) / 3.0;
            tab[i] = [f[i], b, c, d];
            cn = c;
        }
        tab
    })
}

/// `splineInterpolate` on [`inv_gamma_spline`]: `x` in table units (0..=1024).
fn encode_spline(x: f32) -> f32 {
    let ix = (x as i32).clamp(0, GAMMA_TAB as i32 - 1) as usize;
    let x = x - ix as f32;
    let t = inv_gamma_spline()[ix];
    ((t[3] * x + t[2]) * x + t[1]) * x + t[0]
}

/// L*a*b* to sRGB (`[r, g, b]` in [0, 1]) as OpenCV's float `Lab2RGB` gives it: its vector
/// path's arithmetic (reciprocals multiplied, no fused operations) and its spline-interpolated
/// sRGB curve, which differs from the formula by up to 8e-5 in dark tones. The result is
/// within a unit in the last place of OpenCV's for grays (the model input of `--compat
/// upstream`) and within 6e-7 for colours (OpenCV's vector code sums the matrix product in
/// another order, which shows where its terms cancel).
pub fn lab_to_rgb_opencv([li, ai, bi]: [f32; 3]) -> [f32; 3] {
    let lbias = 16.0f32 / 116.0;
    let (y, fy) = if li <= 8.0 {
        let y = li * (1.0f32 / 903.3);
        (y, 7.787f32 * y + lbias)
    } else {
        let fy = (li + 16.0) * (1.0f32 / 116.0);
        (fy * fy * fy, fy)
    };
    let xz = |v: f32| {
        if v <= 6.0f32 / 29.0 {
            (v - lbias) * (1.0f32 / 7.787)
        } else {
            v * v * v
        }
    };
    let x = xz(fy + ai * 0.002);
    let z = xz(fy - bi * 0.005);
    let white = [D65[0], D65[1], D65[2]];
    std::array::from_fn(|row| {
        let c: [f32; 3] =
            std::array::from_fn(|col| (XYZ_TO_SRGB[row * 3 + col] * white[col]) as f32);
        let v = (c[0] * x + c[1] * y + c[2] * z).clamp(0.0, 1.0);
        encode_spline(v * GAMMA_TAB as f32)
    })
}

/// L alone ([`rgb_to_lab_opencv`]).
pub fn rgb_to_l_opencv(rgb: [f32; 3]) -> f32 {
    rgb_to_lab_opencv(rgb)[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_points_are_the_formula_and_between_them_it_is_the_table() {
        // on a table corner the interpolation returns the corner: the exact L to 1/16384
        for v in [0.0f32, 0.25, 0.5, 1.0] {
            let exact = crate::pipeline::color::rgb_to_l([v, v, v]);
            let got = rgb_to_l_opencv([v, v, v]);
            assert!((got - exact).abs() < 0.01, "{v}: {got} vs {exact}");
        }
        // between corners it departs from the formula by up to ~0.2 L (0.002 of the range)
        let mut worst = 0.0f32;
        for i in 0..=255 {
            let v = i as f32 / 255.0;
            let d =
                (rgb_to_l_opencv([v, v, v]) - crate::pipeline::color::rgb_to_l([v, v, v])).abs();
            worst = worst.max(d);
        }
        assert!(worst > 1e-3 && worst < 0.5, "worst {worst}");
        // white and black
        assert_eq!(rgb_to_l_opencv([1.0, 1.0, 1.0]), 100.0);
        assert_eq!(rgb_to_l_opencv([0.0, 0.0, 0.0]), 0.0);
        let [_, a, b] = rgb_to_lab_opencv([0.5, 0.5, 0.5]);
        assert!(a.abs() < 0.05 && b.abs() < 0.05, "{a} {b}");
    }
}
