//! The sRGB transfer curve: decoding (encoded -> linear) from a table, encoding (linear ->
//! encoded) by a polynomial per octave, scalar and as a vectorised row kernel.

use super::table::BitTable;

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

/// Linear from encoded sRGB on [2^-5, 1] (the knee is at 0.04045 > 2^-5): within 5e-7.
static SRGB_DECODE: std::sync::LazyLock<BitTable<{ 5 * 1024 + 2 }>> =
    std::sync::LazyLock::new(|| BitTable::new(-5, 10, |x| ((x + 0.055) / 1.055).powf(2.4)));

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

/// [`linear_to_srgb`] of every value of `v`, in place: vectorised, the same values bit for bit.
/// AVX-512: `encode_row_avx512` (the octave factor from a register); AVX2+FMA: the scalar
/// loop compiled for it (the octave factor by gather); otherwise the scalar loop.
pub fn linear_to_srgb_row(v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { encode_row_avx512(v) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { encode_row_avx2(v) };
        }
    }
    encode_row(v);
}

/// [`linear_to_srgb`] of every value of `v`, in place, as a plain loop (vectorised for the
/// target it is inlined into).
#[inline(always)]
fn encode_row(v: &mut [f32]) {
    for x in v.iter_mut() {
        *x = linear_to_srgb(*x);
    }
}

/// [`encode_row`] compiled for AVX2+FMA. (Not `simd::multiversion!`: its AVX-512 copy would
/// never run, [`encode_row_avx512`] being taken first.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn encode_row_avx2(v: &mut [f32]) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row kernel this CPU can run, not only the one dispatch picks, gives the scalar
    /// function's values bit for bit (tests/pipeline.rs checks the dispatched one).
    #[test]
    fn every_row_kernel_the_cpu_has_equals_the_scalar_function() {
        let mut values: Vec<f32> = (0..=u32::MAX).step_by(65_537).map(f32::from_bits).collect();
        values.extend([0.0, -0.0, SRGB_KNEE, 0.003_130_9, 1.0, 1.000_001, f32::NAN]);
        values.truncate(values.len() / 16 * 16 + 7);
        let want: Vec<f32> = values.iter().map(|&v| linear_to_srgb(v)).collect();
        type Kernel = fn(&mut [f32]);
        let mut kernels: Vec<(&str, Kernel)> = vec![("baseline", encode_row)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: only called on a CPU with AVX2 and FMA.
                kernels.push(("avx2", |v| unsafe { encode_row_avx2(v) }));
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: only called on a CPU with AVX-512F.
                kernels.push(("avx512", |v| unsafe { encode_row_avx512(v) }));
            }
        }
        for (name, kernel) in kernels {
            let mut row = values.clone();
            kernel(&mut row);
            for ((v, y), w) in values.iter().zip(&row).zip(&want) {
                assert!(
                    y.to_bits() == w.to_bits() || (y.is_nan() && w.is_nan()),
                    "{name}: {v:e} ({:#x}): row {y:e}, scalar {w:e}",
                    v.to_bits()
                );
            }
        }
    }
}
