//! Normalisations over the last dimension: a two-pass LayerNorm (candle's fused one computes
//! the variance as `E[x²] - E[x]²`, which loses digits on ConvNeXt's large activations) and a
//! parallel, vectorised softmax.
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, D};

use super::activation::exp_neg;
use super::common::{contiguous_slice, is_cpu_f32, par_output};
use crate::simd::multiversion;

/// LayerNorm over the last dimension with a two-pass (centred) variance, as PyTorch computes it.
pub fn layer_norm_last(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    if is_cpu_f32(&[x, w, b]) {
        let x = x.contiguous()?;
        return x.apply_op3_no_bwd(
            &w.contiguous()?,
            &b.contiguous()?,
            &LayerNormLast { eps: eps as f32 },
        );
    }
    // statistics in f32 whatever the storage (bf16 has 8 bits of mantissa)
    let dtype = x.dtype();
    let (x, w, b) = (
        x.to_dtype(DType::F32)?,
        w.to_dtype(DType::F32)?,
        b.to_dtype(DType::F32)?,
    );
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    xc.broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(&w)?
        .broadcast_add(&b)?
        .to_dtype(dtype)
}

struct LayerNormLast {
    eps: f32,
}

impl CustomOp3 for LayerNormLast {
    fn name(&self) -> &'static str {
        "layer-norm-two-pass"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let c = xl.shape().dims().last().copied().unwrap_or(1);
        let x = contiguous_slice(xs, xl, "layer norm input")?;
        let w = contiguous_slice(ws, wl, "layer norm weight")?;
        let b = contiguous_slice(bs, bl, "layer norm bias")?;
        if w.len() != c || b.len() != c {
            candle_core::bail!("layer norm weight/bias do not match {c} channels")
        }
        let eps = self.eps;
        let chunk = c * (8192 / c.max(1)).max(1);
        let out = par_output(x.len(), chunk, |i, o| {
            layer_norm_rows(o, &x[i * chunk..][..o.len()], w, b, eps)
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

/// `sum f(x)` in eight independent f64 lanes (one vector of the widest target), not as one
/// serial chain of dependent adds, which cost a 4-cycle latency per element.
#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    const L: usize = 8;
    let mut lanes = [0f64; L];
    let chunks = x.chunks_exact(L);
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for ch in chunks {
        for (s, &v) in lanes.iter_mut().zip(ch) {
            *s += f(v);
        }
    }
    lanes.iter().sum::<f64>() + tail
}

multiversion! {
    /// LayerNorm of consecutive rows of `w.len()` values, statistics in f64.
    fn layer_norm_rows(out: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
        // f64 sums: rows of large, nearly equal values keep their spread
        let c = w.len();
        let n = c as f64;
        for (o, x) in out.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
            let mean = lane_sum(x, |v| v as f64) / n;
            let var = lane_sum(x, |v| (v as f64 - mean) * (v as f64 - mean)) / n;
            let inv = 1.0 / (var + eps as f64).sqrt();
            for (((o, &x), &w), &b) in o.iter_mut().zip(x).zip(w).zip(b) {
                *o = ((x as f64 - mean) * inv) as f32 * w + b;
            }
        }
    }
}

/// Softmax over the last dimension. On the CPU in f32: one parallel pass per row with the
/// vectorised [`exp_neg`] (every `x - max` is <= 0), where candle's version calls libm's `expf`
/// per element (6% of the tiny model's forward pass, in the colour decoder's attention).
/// Elsewhere: candle's.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if is_cpu_f32(&[x]) {
        return x.contiguous()?.apply_op1_no_bwd(&SoftmaxLastDim);
    }
    candle_nn::ops::softmax_last_dim(x)
}

struct SoftmaxLastDim;

impl candle_core::CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "softmax-last-dim"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let n = xl.shape().dims().last().copied().unwrap_or(1).max(1);
        let x = contiguous_slice(xs, xl, "softmax input")?;
        // rows of a few hundred values: hand rayon tasks of ~16k values
        let chunk = n * (16_384 / n).max(1);
        let out = par_output(x.len(), chunk, |i, o| {
            let x = &x[i * chunk..][..o.len()];
            for (o, x) in o.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
                softmax_row(o, x);
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

multiversion! {
    /// `o = exp(x - max x) / sum`, one row.
    fn softmax_row(o: &mut [f32], x: &[f32]) {
        // reductions in 16 lanes, then across them (a float sum in one chain does not
        // vectorise: its order is fixed)
        const L: usize = 16;
        let mut lanes = [f32::NEG_INFINITY; L];
        let chunks = x.chunks_exact(L);
        let tail = chunks.remainder();
        for c in chunks {
            for (m, &v) in lanes.iter_mut().zip(c) {
                *m = m.max(v);
            }
        }
        let max = tail.iter().chain(&lanes).fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        for (o, &v) in o.iter_mut().zip(x) {
            *o = exp_neg(v - max);
        }
        let mut lanes = [0f32; L];
        let chunks = o.chunks_exact(L);
        let tail: f32 = chunks.remainder().iter().sum();
        for c in chunks {
            for (s, &v) in lanes.iter_mut().zip(c) {
                *s += v;
            }
        }
        let inv = 1.0 / (lanes.iter().sum::<f32>() + tail);
        for o in o.iter_mut() {
            *o *= inv;
        }
    }
}
