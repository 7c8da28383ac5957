//! The AVX512_BF16 (`vdpbf16ps`) and AMX micro-kernels; [`super::emulated`] computes the same
//! bits without them.

use std::arch::x86_64::*;

use super::*;

/// # Safety
/// The CPU has AVX512F, AVX512BW and AVX512_BF16; the task's block lies in the output.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn task(t: &Task) {
    task_body!(t, tile)
}

/// [`task`] with AMX for the whole 32 x 32 blocks, over all of `k` (the panel and rows
/// stream from L2 through the tiles), the rest of `k` (under 32) and the edges by [`tile`].
///
/// # Safety
/// As [`task`], and the CPU has AMX (the tile state granted).
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn task_amx(t: &Task) {
    crate::kernels::amx::configure();
    let (kp, n, ldc) = (t.kp, t.n, t.ldc);
    let pairs = kp / 2;
    // pairs of k in whole 32-value steps
    let steps = kp / 32;
    let whole = steps * 16;
    let (a, b, c) = (t.a, t.b, t.c);
    for p in t.panels.clone() {
        let cols = NR.min(n - p * NR);
        let bp = b.add(p * pairs * 2 * NR);
        let mut r = t.rows.start;
        while r < t.rows.end {
            let ap = a.add(r * kp);
            let cp = c.add(r * ldc + (p - t.p0) * NR);
            if cols == NR && t.rows.end - r >= 32 && steps > 0 {
                crate::kernels::amx::block(ap, kp, bp, steps, cp, ldc, t.read_dst);
                if whole < pairs {
                    for q in 0..32 / MR {
                        tile::<MR>(
                            ap.add(q * MR * kp + 2 * whole),
                            kp,
                            bp.add(whole * 2 * NR),
                            pairs - whole,
                            cp.add(q * MR * ldc),
                            ldc,
                            cols,
                            true,
                        );
                    }
                }
                r += 32;
            } else {
                let rows = MR.min(t.rows.end - r);
                let load = t.read_dst;
                match rows {
                    8 => tile::<8>(ap, kp, bp, pairs, cp, ldc, cols, load),
                    7 => tile::<7>(ap, kp, bp, pairs, cp, ldc, cols, load),
                    6 => tile::<6>(ap, kp, bp, pairs, cp, ldc, cols, load),
                    5 => tile::<5>(ap, kp, bp, pairs, cp, ldc, cols, load),
                    4 => tile::<4>(ap, kp, bp, pairs, cp, ldc, cols, load),
                    3 => tile::<3>(ap, kp, bp, pairs, cp, ldc, cols, load),
                    2 => tile::<2>(ap, kp, bp, pairs, cp, ldc, cols, load),
                    _ => tile::<1>(ap, kp, bp, pairs, cp, ldc, cols, load),
                }
                r += rows;
            }
        }
    }
    crate::kernels::amx::release();
}

/// `c[R x cols] (=|+=) a[R x 2 pairs] b[2 pairs x 32]`.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize>(
    a: *const u16,
    lda: usize,
    b: *const u16,
    pairs: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    load: bool,
) {
    let m0: __mmask16 = if cols >= 16 {
        0xffff
    } else {
        (1u32 << cols) as u16 - 1
    };
    let m1: __mmask16 = if cols >= 32 {
        0xffff
    } else if cols > 16 {
        (1u32 << (cols - 16)) as u16 - 1
    } else {
        0
    };
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    if load {
        for (r, acc) in acc.iter_mut().enumerate() {
            let row = c.add(r * ldc);
            acc[0] = _mm512_maskz_loadu_ps(m0, row);
            acc[1] = _mm512_maskz_loadu_ps(m1, row.add(16));
        }
    }
    for p in 0..pairs {
        let bp = b.add(p * 2 * NR);
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp as *const _));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(NR) as *const _));
        for (r, acc) in acc.iter_mut().enumerate() {
            let pair = (a.add(r * lda + 2 * p) as *const i32).read_unaligned();
            let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
            acc[0] = _mm512_dpbf16_ps(acc[0], av, b0);
            acc[1] = _mm512_dpbf16_ps(acc[1], av, b1);
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let row = c.add(r * ldc);
        _mm512_mask_storeu_ps(row, m0, acc[0]);
        _mm512_mask_storeu_ps(row.add(16), m1, acc[1]);
    }
}
