//! The bf16 micro-kernel emulated with f32 FMAs, in the order `vdpbf16ps` adds (the module
//! docs of [`super`]): every bf16 test runs on every CPU.

use super::*;

/// # Safety
/// The task's block lies in the output.
pub(super) unsafe fn task(t: &Task) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
        unsafe fn v4(t: &Task) {
            task_body!(t, tile)
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn v3(t: &Task) {
            task_body!(t, tile)
        }
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
        {
            return v4(t);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return v3(t);
        }
    }
    task_body!(t, tile)
}

/// The native micro-kernel's arithmetic in f32 operations (Rust never fuses `+` and `*`,
/// and the product of two bf16 values is exact, so each step rounds exactly once, as the
/// instruction's does).
#[inline(always)]
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
    let mut acc = [[0f32; NR]; R];
    if load {
        for (r, acc) in acc.iter_mut().enumerate() {
            let row = std::slice::from_raw_parts(c.add(r * ldc), cols);
            acc[..cols].copy_from_slice(row);
        }
    }
    let (mut even, mut odd) = ([0f32; NR], [0f32; NR]);
    for p in 0..pairs {
        let bp = std::slice::from_raw_parts(b.add(p * 2 * NR), 2 * NR);
        for j in 0..NR {
            even[j] = to_f32(bp[2 * j]);
            odd[j] = to_f32(bp[2 * j + 1]);
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            let a0 = to_f32(*a.add(r * lda + 2 * p));
            let a1 = to_f32(*a.add(r * lda + 2 * p + 1));
            for j in 0..NR {
                let t = acc[j] + a1 * odd[j];
                acc[j] = t + a0 * even[j];
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let row = std::slice::from_raw_parts_mut(c.add(r * ldc), cols);
        row.copy_from_slice(&acc[..cols]);
    }
}
