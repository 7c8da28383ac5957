//! Attention of a few queries over many channels-first keys: the colour decoder's
//! cross-attention, where 100 queries attend to up to 16k pixels of a pixel-decoder scale.
//!
//! Computed as `softmax(q k) v^T` with tensor ops, the `[heads, 100, L]` score tensor (52 MB for
//! the stride-4 scale at 512x512) is written by one GEMM, rewritten by the softmax and read by
//! the next GEMM, and both GEMMs have an inner dimension of only 32: the products ran at a fifth
//! of the machine's GEMM speed and the three passes over memory took as long again. On the CPU
//! the op instead walks the keys in tiles that stay in the core's L2 cache, with the running
//! maximum and sum of an online softmax (FlashAttention's rescaling): per tile, one GEMM for the
//! scores, one vectorised pass of `exp`, one GEMM accumulating into the output. The result is
//! the same function up to float rounding.
use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::activation::exp_neg;
use super::common::contiguous_slice;
use super::norm::softmax_last_dim;
use crate::simd::multiversion;

/// Keys per tile: the `rows x TILE` scores (200 KB for 100 queries), and the `d x TILE` key and
/// value slices (64 KB each at d = 32) stay in L2.
const TILE: usize = 512;

/// `softmax(q k) v^T` per head: `q` `[N, Lq, d]` (already scaled by `1/sqrt(d)`), `k` and `v`
/// channels first `[N, d, L]`; the result is `[N, Lq, d]`.
pub fn attention_channels_first(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (n, _, d) = q.dims3()?;
    let (kn, kd, l) = k.dims3()?;
    if (kn, kd) != (n, d) || v.dims() != k.dims() {
        candle_core::bail!(
            "attention: q {:?}, k {:?} and v {:?} do not fit [N, Lq, d], [N, d, L], [N, d, L]",
            q.dims(),
            k.dims(),
            v.dims()
        )
    }
    let cpu_f32 = [q, k, v]
        .iter()
        .all(|t| matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32);
    if cpu_f32 && l > 0 {
        return q.contiguous()?.apply_op3_no_bwd(
            &k.contiguous()?,
            &v.contiguous()?,
            &FusedAttention,
        );
    }
    softmax_last_dim(&q.matmul(k)?)?.matmul(&v.t()?)
}

struct FusedAttention;

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "attention-channels-first"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, lq, d) = ql.shape().dims3()?;
        let l = kl.shape().dims3()?.2;
        let q = contiguous_slice(qs, ql, "attention q")?;
        let k = contiguous_slice(ks, kl, "attention k")?;
        let v = contiguous_slice(vs, vl, "attention v")?;
        let mut out = vec![0f32; n * lq * d];
        if lq == 0 || d == 0 {
            return Ok((CpuStorage::F32(out), Shape::from((n, lq, d))));
        }
        // heads x query blocks, at least two tasks per thread
        let blocks = (2 * rayon::current_num_threads()).div_ceil(n).clamp(1, lq);
        let rows = lq.div_ceil(blocks);
        out.par_chunks_mut(lq * d)
            .zip(q.par_chunks(lq * d))
            .enumerate()
            .for_each(|(h, (o, q))| {
                let (k, v) = (&k[h * d * l..][..d * l], &v[h * d * l..][..d * l]);
                o.par_chunks_mut(rows * d)
                    .zip(q.par_chunks(rows * d))
                    .for_each(|(o, q)| attend(q, k, v, d, l, o));
            });
        Ok((CpuStorage::F32(out), Shape::from((n, lq, d))))
    }
}

/// One head, one block of queries: `q` `[rows, d]`, `k` and `v` `[d, l]`, `out` `[rows, d]`
/// (zeroed).
fn attend(q: &[f32], k: &[f32], v: &[f32], d: usize, l: usize, out: &mut [f32]) {
    let rows = q.len() / d;
    let mut s = vec![0f32; rows * TILE];
    let mut max = vec![f32::NEG_INFINITY; rows];
    let mut sum = vec![0f32; rows];
    for j0 in (0..l).step_by(TILE) {
        let t = TILE.min(l - j0);
        let s = &mut s[..rows * t];
        // SAFETY: every pointer and stride below addresses inside its slice: s is rows x t
        // (row stride t), q rows x d (stride d), k d x l from column j0 (t columns), v read
        // as its transpose, l x d from row j0 (t rows); out is rows x d.
        unsafe {
            // s = q k[:, j0..j0+t]
            gemm::gemm(
                rows,
                t,
                d,
                s.as_mut_ptr(),
                1,
                t as isize,
                false,
                q.as_ptr(),
                1,
                d as isize,
                k.as_ptr().add(j0),
                1,
                l as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        online_softmax_tile(s, t, &mut max, &mut sum, out, d);
        unsafe {
            // out += p v[:, j0..j0+t]^T
            gemm::gemm(
                rows,
                d,
                t,
                out.as_mut_ptr(),
                1,
                d as isize,
                true,
                s.as_ptr(),
                1,
                t as isize,
                v.as_ptr().add(j0),
                l as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
    for (o, &z) in out.chunks_exact_mut(d).zip(&sum) {
        let inv = 1.0 / z;
        o.iter_mut().for_each(|o| *o *= inv);
    }
}

multiversion! {
    /// One tile of the online softmax: each row of scores `s` (`t` wide) becomes
    /// `exp(s - m')` with `m'` the running maximum including this tile; the running sum and
    /// the output row accumulated so far (`d` wide) are rescaled by `exp(m - m')`.
    fn online_softmax_tile(
        s: &mut [f32],
        t: usize,
        max: &mut [f32],
        sum: &mut [f32],
        out: &mut [f32],
        d: usize,
    ) {
        const L: usize = 16;
        for (((row, m), z), o) in s
            .chunks_exact_mut(t)
            .zip(max.iter_mut())
            .zip(sum.iter_mut())
            .zip(out.chunks_exact_mut(d))
        {
            let mut lanes = [f32::NEG_INFINITY; L];
            let chunks = row.chunks_exact(L);
            let tail = chunks.remainder();
            for c in chunks {
                for (m, &v) in lanes.iter_mut().zip(c) {
                    *m = m.max(v);
                }
            }
            let m_new = tail.iter().chain(&lanes).fold(*m, |a, &v| a.max(v));
            for v in row.iter_mut() {
                *v = exp_neg(*v - m_new);
            }
            let mut lanes = [0f32; L];
            let chunks = row.chunks_exact(L);
            let tail: f32 = chunks.remainder().iter().sum();
            for c in chunks {
                for (s, &v) in lanes.iter_mut().zip(c) {
                    *s += v;
                }
            }
            let tile_sum = lanes.iter().sum::<f32>() + tail;
            if *m == f32::NEG_INFINITY {
                // first tile: nothing accumulated to rescale
                *z = tile_sum;
            } else {
                let corr = exp_neg(*m - m_new);
                *z = *z * corr + tile_sum;
                o.iter_mut().for_each(|o| *o *= corr);
            }
            *m = m_new;
        }
    }
}
