//! Tensor kernels candle lacks or does too slowly for DDColor: the depthwise 7x7 convolution of
//! ConvNeXt (candle's grouped conv2d loops over groups) and a two-pass LayerNorm (candle's fused
//! one computes the variance as E[x²]-E[x]², which loses digits on ConvNeXt's large activations).
//!
//! Each op has a CPU kernel (f32, contiguous) and a device-independent fallback built from
//! ordinary tensor ops, so every device computes the same thing.
use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::gemm::{matmul_epilogue, Channels, Epilogue};
use crate::simd::multiversion;

pub(crate) fn is_cpu_f32(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32)
}

pub(crate) fn contiguous_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

/// `n` floats computed in parallel, `chunk` at a time, by `f(chunk index, chunk)`. Each chunk is
/// zeroed right before `f` gets it, by the thread that computes it, while it is in cache.
/// `vec![0.0; n]` zeroes all of it on the calling thread first: a serial pass over memory
/// (8% of the tiny model's forward pass on two threads) while the pool waits.
pub(crate) fn par_output<F>(n: usize, chunk: usize, f: F) -> Vec<f32>
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    let mut v: Vec<f32> = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| {
            c.fill(std::mem::MaybeUninit::new(0.0));
            // SAFETY: every element of `c` was initialised just above, and `MaybeUninit<f32>`
            // has the layout of `f32`.
            let c = unsafe { &mut *(c as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) };
            f(i, c);
        });
    // SAFETY: the chunks cover `0..n` and each was initialised above.
    unsafe { v.set_len(n) };
    v
}

/// Depthwise `k x k` convolution with zero padding `k/2`, stride 1, on NHWC data.
///
/// `x`: `[B, H, W, C]`, `w`: `[k, k, C]` (torch's `[C, 1, k, k]` permuted), `b`: `[C]`.
/// Cost is linear in C (one pass per tap), unlike a grouped conv2d that loops over channels.
pub fn depthwise_conv_nhwc(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let k = w.dim(0)?;
    if is_cpu_f32(&[x, w, b]) {
        let x = x.contiguous()?;
        return x.apply_op3_no_bwd(&w.contiguous()?, &b.contiguous()?, &DepthwiseNhwc { k });
    }
    #[cfg(feature = "cuda")]
    if x.device().is_cuda()
        && matches!(x.dtype(), DType::F32 | DType::BF16 | DType::F16)
        && w.dtype() == x.dtype()
        && b.dtype() == x.dtype()
    {
        let x = x.contiguous()?;
        return x.apply_op3_no_bwd(&w.contiguous()?, &b.contiguous()?, &DepthwiseNhwc { k });
    }
    depthwise_conv_nhwc_shifted(x, w, b)
}

/// [`depthwise_conv_nhwc`] from ordinary tensor ops, on any device and dtype: one broadcast
/// multiply-add per tap (49 kernel launches per layer on a GPU). The reference the kernels are
/// tested against.
pub fn depthwise_conv_nhwc_shifted(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let k = w.dim(0)?;
    let (_, h, wd, _) = x.dims4()?;
    let pad = k / 2;
    let xp = x.pad_with_zeros(1, pad, pad)?.pad_with_zeros(2, pad, pad)?;
    let mut acc = b
        .reshape((1, 1, 1, ()))?
        .broadcast_as(x.shape())?
        .contiguous()?;
    for ky in 0..k {
        for kx in 0..k {
            let tap = w.get(ky)?.get(kx)?;
            let win = xp.narrow(1, ky, h)?.narrow(2, kx, wd)?;
            acc = (acc + win.broadcast_mul(&tap)?)?;
        }
    }
    Ok(acc)
}

struct DepthwiseNhwc {
    k: usize,
}

impl CustomOp3 for DepthwiseNhwc {
    fn name(&self) -> &'static str {
        "depthwise-conv-nhwc"
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
        let (nb, h, w, c) = xl.shape().dims4()?;
        let k = self.k;
        let x = contiguous_slice(xs, xl, "depthwise input")?;
        let wt = contiguous_slice(ws, wl, "depthwise weight")?;
        let bias = contiguous_slice(bs, bl, "depthwise bias")?;
        if wt.len() != k * k * c || bias.len() != c {
            candle_core::bail!("depthwise weight/bias do not match {c} channels")
        }
        let out = par_output(nb * h * w * c, w * c, |row, orow| {
            let (bi, y) = (row / h, row % h);
            let img = &x[bi * h * w * c..(bi + 1) * h * w * c];
            depthwise_row(orow, img, wt, bias, y, h, w, c, k);
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
        bs: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::cuda::CudaStorageSlice as S;
        let dev = &xs.device;
        let slice = match (&xs.slice, &ws.slice, &bs.slice) {
            (S::F32(x), S::F32(w), S::F32(b)) => {
                S::F32(self.launch("depthwise_nhwc_f32", dev, x, xl, w, wl, b, bl)?)
            }
            (S::BF16(x), S::BF16(w), S::BF16(b)) => {
                S::BF16(self.launch("depthwise_nhwc_bf16", dev, x, xl, w, wl, b, bl)?)
            }
            (S::F16(x), S::F16(w), S::F16(b)) => {
                S::F16(self.launch("depthwise_nhwc_f16", dev, x, xl, w, wl, b, bl)?)
            }
            _ => {
                candle_core::bail!("depthwise: input, weight and bias must all be f32, bf16 or f16")
            }
        };
        let out = candle_core::CudaStorage {
            slice,
            device: dev.clone(),
        };
        Ok((out, xl.shape().clone()))
    }
}

/// The PTX of `src/model/kernels.cu`, built by `build.rs` for `CUDA_COMPUTE_CAP`.
#[cfg(feature = "cuda")]
const KERNELS_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels.ptx"));

#[cfg(feature = "cuda")]
impl DepthwiseNhwc {
    /// One launch of `kernels.cu`'s `depthwise_nhwc_<dtype>` over the whole tensor.
    #[allow(clippy::too_many_arguments)]
    fn launch<T: candle_core::cuda::cudarc::driver::DeviceRepr>(
        &self,
        name: &str,
        dev: &candle_core::CudaDevice,
        x: &candle_core::cuda::cudarc::driver::CudaSlice<T>,
        xl: &Layout,
        w: &candle_core::cuda::cudarc::driver::CudaSlice<T>,
        wl: &Layout,
        b: &candle_core::cuda::cudarc::driver::CudaSlice<T>,
        bl: &Layout,
    ) -> Result<candle_core::cuda::cudarc::driver::CudaSlice<T>> {
        use candle_core::cuda::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda::WrapErr;
        let (n, h, wd, c) = xl.shape().dims4()?;
        let k = self.k;
        let range = |l: &Layout, what: &str| match l.contiguous_offsets() {
            Some((a, b)) => Ok(a..b),
            None => candle_core::bail!("{what} must be contiguous"),
        };
        let (xr, wr, br) = (
            range(xl, "depthwise input")?,
            range(wl, "depthwise weight")?,
            range(bl, "depthwise bias")?,
        );
        if wr.len() != k * k * c || br.len() != c {
            candle_core::bail!("depthwise weight/bias do not match {c} channels")
        }
        let total = n * h * wd * c;
        let dims: [i32; 5] = [n, h, wd, c, k].map(|v| v as i32);
        if [n, h, wd, c, k].iter().any(|&v| v > i32::MAX as usize) {
            candle_core::bail!("depthwise: a dimension does not fit i32")
        }
        let func = dev.get_or_load_custom_func(name, "ddcolor_kernels", KERNELS_PTX)?;
        // SAFETY: every element is written by the kernel before it is read.
        let dst = unsafe { dev.alloc::<T>(total)? };
        let (xv, wv, bv) = (x.slice(xr), w.slice(wr), b.slice(br));
        let mut args = func.builder();
        args.arg(&xv);
        args.arg(&wv);
        args.arg(&bv);
        args.arg(&dst);
        for d in &dims {
            args.arg(d);
        }
        // a grid-stride loop: the grid need not cover every element
        let threads = 256u32;
        let blocks = total.div_ceil(threads as usize).clamp(1, 65_535 * 8) as u32;
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the argument list matches the kernel's signature in kernels.cu, and the
        // buffers hold the sizes checked above.
        unsafe { args.launch(cfg) }.w()?;
        Ok(dst)
    }
}

multiversion! {
    /// One output row `y` of the NHWC depthwise convolution of one image.
    ///
    /// Interior columns (every tap inside the row), 16 channels x 4 columns at a time: the
    /// four accumulators stay in registers across all `k x k` taps and each tap's weights are
    /// loaded once for the four columns. The border columns and any channels past a multiple
    /// of 16 take the plain loop. Both add the taps to the bias in the same order.
    #[allow(clippy::too_many_arguments)]
    fn depthwise_row(
        orow: &mut [f32],
        img: &[f32],
        wt: &[f32],
        bias: &[f32],
        y: usize,
        h: usize,
        w: usize,
        c: usize,
        k: usize,
    ) {
        const V: usize = 16;
        const P: usize = 4;
        let pad = k / 2;
        // rows of the image that the taps reach
        let rows = |ky: usize| {
            let iy = y as isize + ky as isize - pad as isize;
            (0..h as isize).contains(&iy).then(|| &img[iy as usize * w * c..][..w * c])
        };
        // fast columns [fa, fb): all k taps inside the row, a whole number of groups of P
        let fa = pad.min(w);
        let interior = (w + pad + 1).saturating_sub(k).saturating_sub(fa);
        let fb = fa + interior / P * P;
        let cv = c / V * V;
        for ox0 in (fa..fb).step_by(P) {
            for cb in (0..cv).step_by(V) {
                let b: &[f32; V] = bias[cb..cb + V].try_into().expect("V channels");
                let mut acc = [*b; P];
                for ky in 0..k {
                    let Some(irow) = rows(ky) else { continue };
                    for kx in 0..k {
                        let t: &[f32; V] =
                            wt[(ky * k + kx) * c + cb..][..V].try_into().expect("V taps");
                        for (j, acc) in acc.iter_mut().enumerate() {
                            let ix = ox0 + j + kx - pad;
                            let i: &[f32; V] =
                                irow[ix * c + cb..][..V].try_into().expect("V inputs");
                            for l in 0..V {
                                acc[l] += i[l] * t[l];
                            }
                        }
                    }
                }
                for (j, acc) in acc.iter().enumerate() {
                    orow[(ox0 + j) * c + cb..][..V].copy_from_slice(acc);
                }
            }
        }
        // the rest: every channel of the other columns, the channel tail of the fast ones
        let slow = |ox: usize| -> std::ops::Range<usize> {
            if (fa..fb).contains(&ox) {
                cv..c
            } else {
                0..c
            }
        };
        for ox in 0..w {
            let ch = slow(ox);
            orow[ox * c..][..c][ch.clone()].copy_from_slice(&bias[ch]);
        }
        for ky in 0..k {
            let Some(irow) = rows(ky) else { continue };
            for kx in 0..k {
                let tap = &wt[(ky * k + kx) * c..][..c];
                // output columns whose input column x + kx - pad lies inside the row
                let x0 = pad.saturating_sub(kx);
                let x1 = (w + pad).saturating_sub(kx).min(w);
                for ox in x0..x1 {
                    let ch = slow(ox);
                    if ch.is_empty() {
                        continue;
                    }
                    let ix = ox + kx - pad;
                    let o = &mut orow[ox * c..(ox + 1) * c][ch.clone()];
                    let i = &irow[ix * c..(ix + 1) * c][ch.clone()];
                    for ((o, &i), &t) in o.iter_mut().zip(i).zip(&tap[ch]) {
                        *o += i * t;
                    }
                }
            }
        }
    }
}

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

/// `torch.nn.PixelShuffle(r)` on NCHW: `[B, C*r*r, H, W] -> [B, C, H*r, W*r]`.
pub fn pixel_shuffle(x: &Tensor, r: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let oc = c / (r * r);
    x.reshape((b, oc, r, r, h, w))?
        .permute((0, 1, 4, 2, 5, 3))?
        .reshape((b, oc, h * r, w * r))
}

/// `nn.AvgPool2d(2, stride=1)(nn.ReplicationPad2d((1, 0, 1, 0))(x))` on NCHW: each output pixel
/// is the mean of itself, its left, upper and upper-left neighbours (edges replicated).
pub fn blur_replicate(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let p = x.pad_with_same(2, 1, 0)?.pad_with_same(3, 1, 0)?;
    let top = (p.narrow(2, 0, h)?.narrow(3, 0, w)? + p.narrow(2, 0, h)?.narrow(3, 1, w)?)?;
    let bot = (p.narrow(2, 1, h)?.narrow(3, 0, w)? + p.narrow(2, 1, h)?.narrow(3, 1, w)?)?;
    (top + bot)? * 0.25
}

/// Plain tensor reference for the depthwise op (used by tests to check the CPU kernel).
pub fn depthwise_conv_reference(x_nhwc: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let k = w.dim(0)?;
    let c = w.dim(2)?;
    // torch layout [C, 1, k, k] and the grouped conv2d
    let wt = w.permute((2, 0, 1))?.reshape((c, 1, k, k))?.contiguous()?;
    let x = x_nhwc.permute((0, 3, 1, 2))?.contiguous()?;
    let y = x.conv2d(&wt, k / 2, 1, 1, c)?;
    y.broadcast_add(&b.reshape((1, c, 1, 1))?)?
        .permute((0, 2, 3, 1))?
        .contiguous()
}

/// An activation applied inside [`channel_op`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Identity,
    Relu,
    /// Exact (erf) GELU, PyTorch's `nn.GELU()`.
    Gelu,
}

/// `erf` to within 1.5e-7 (Abramowitz & Stegun 7.1.26), branch-free apart from the sign.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    let y = 1.0 - poly * exp_neg(-a * a);
    y.copysign(x)
}

/// `e^x` for `x <= 0` to about 2e-7 relative, in plain arithmetic so that loops calling it
/// vectorise (the libm call does not): `2^(x log2 e)` split into an integer power, built in
/// the exponent bits, and a degree-6 polynomial for the fraction in [-0.5, 0.5].
#[inline(always)]
pub(crate) fn exp_neg(x: f32) -> f32 {
    let t = x.max(-87.0) * std::f32::consts::LOG2_E;
    let n = (t + 0.5).floor();
    let f = t - n;
    let p = 1.0
        + f * (std::f32::consts::LN_2
            + f * (0.240_226_5
                + f * (0.055_504_11
                    + f * (0.009_618_129 + f * (0.001_333_355_8 + f * 0.000_154_035_3)))));
    // 2^n from the exponent bits. n + 127 is a whole number in [1, 127]; adding 2^23 leaves it
    // in the low mantissa bits, read off as an integer: a float-to-int `as` cast saturates and
    // LLVM then converts lane by lane, which kept GELU loops from vectorising
    const MAGIC: f32 = 8_388_608.0; // 2^23
    let biased = (n + (127.0 + MAGIC)).to_bits() - MAGIC.to_bits();
    p * f32::from_bits(biased << 23)
}

#[inline(always)]
fn apply(act: Act, v: f32) -> f32 {
    match act {
        Act::Identity => v,
        Act::Relu => v.max(0.0),
        Act::Gelu => 0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2)),
    }
}

impl Act {
    /// The activation with candle's (serial) element-wise ops.
    pub fn tensor(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Act::Identity => Ok(x.clone()),
            Act::Relu => x.relu(),
            Act::Gelu => x.gelu_erf(),
        }
    }
}

/// `post(pre(x) * scale + shift)` with `scale` and `shift` per channel along `axis` (1 for
/// NCHW, the last axis for channels-last data): bias + activation, eval-mode BatchNorm with a
/// ReLU before or after, all in one parallel pass (candle's element-wise ops are serial).
pub fn channel_op(
    x: &Tensor,
    scale: Option<&Tensor>,
    shift: &Tensor,
    axis: usize,
    pre: Act,
    post: Act,
) -> Result<Tensor> {
    let c = x.dim(axis)?;
    let op = ChannelOp {
        axis,
        pre,
        post,
        has_scale: scale.is_some(),
    };
    if is_cpu_f32(&[x, shift]) && scale.is_none_or(|s| is_cpu_f32(&[s])) {
        let x = x.contiguous()?;
        let scale = scale.unwrap_or(shift).contiguous()?;
        return x.apply_op3_no_bwd(&scale, &shift.contiguous()?, &op);
    }
    let mut shape = vec![1usize; x.rank()];
    shape[axis] = c;
    let mut y = pre.tensor(x)?;
    if let Some(s) = scale {
        y = y.broadcast_mul(&s.reshape(shape.as_slice())?)?;
    }
    y = y.broadcast_add(&shift.reshape(shape.as_slice())?)?;
    post.tensor(&y)
}

struct ChannelOp {
    axis: usize,
    pre: Act,
    post: Act,
    has_scale: bool,
}

impl CustomOp3 for ChannelOp {
    fn name(&self) -> &'static str {
        "channel-op"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = xl.shape().dims();
        let c = dims[self.axis];
        let inner: usize = dims[self.axis + 1..].iter().product();
        let x = contiguous_slice(xs, xl, "channel op input")?;
        let scale = contiguous_slice(ss, sl, "channel op scale")?;
        let shift = contiguous_slice(bs, bl, "channel op shift")?;
        if shift.len() != c || (self.has_scale && scale.len() != c) {
            candle_core::bail!("channel op: per-channel vectors do not match {c} channels")
        }
        let (pre, post, has_scale) = (self.pre, self.post, self.has_scale);
        let ones;
        let scale = if has_scale {
            scale
        } else {
            ones = vec![1f32; c];
            &ones
        };
        let out = if inner == 1 {
            // channels last: each row of `c` values is one pixel
            let chunk = c * (16384 / c.max(1)).max(1);
            par_output(x.len(), chunk, |i, o| {
                o.copy_from_slice(&x[i * chunk..][..o.len()]);
                for o in o.chunks_exact_mut(c) {
                    channel_row(o, scale, shift, pre, post);
                }
            })
        } else {
            par_output(x.len(), inner, |row, o| {
                o.copy_from_slice(&x[row * inner..][..inner]);
                let ch = row % c;
                channel_plane(o, scale[ch], shift[ch], pre, post);
            })
        };
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

multiversion! {
    /// One channels-last row, in place: `o[j] = post(pre(o[j]) * scale[j] + shift[j])`.
    pub(crate) fn channel_row(o: &mut [f32], scale: &[f32], shift: &[f32], pre: Act, post: Act) {
        macro_rules! go {
            ($pre:expr, $post:expr) => {
                for ((o, &s), &b) in o.iter_mut().zip(scale).zip(shift) {
                    *o = apply($post, apply($pre, *o) * s + b);
                }
            };
        }
        // one monomorphic loop per activation pair, so each vectorises
        match (pre, post) {
            (Act::Identity, Act::Identity) => go!(Act::Identity, Act::Identity),
            (Act::Identity, Act::Relu) => go!(Act::Identity, Act::Relu),
            (Act::Identity, Act::Gelu) => go!(Act::Identity, Act::Gelu),
            (Act::Relu, Act::Identity) => go!(Act::Relu, Act::Identity),
            (p, q) => go!(p, q),
        }
    }
}

multiversion! {
    /// One NCHW channel plane, in place: `o[j] = post(pre(o[j]) * scale + shift)`.
    pub(crate) fn channel_plane(o: &mut [f32], scale: f32, shift: f32, pre: Act, post: Act) {
        macro_rules! go {
            ($pre:expr, $post:expr) => {
                for o in o.iter_mut() {
                    *o = apply($post, apply($pre, *o) * scale + shift);
                }
            };
        }
        match (pre, post) {
            (Act::Identity, Act::Identity) => go!(Act::Identity, Act::Identity),
            (Act::Identity, Act::Relu) => go!(Act::Identity, Act::Relu),
            (Act::Identity, Act::Gelu) => go!(Act::Identity, Act::Gelu),
            (Act::Relu, Act::Identity) => go!(Act::Relu, Act::Identity),
            (p, q) => go!(p, q),
        }
    }
}

/// [`pixel_shuffle`] followed by [`blur_replicate`], fused: one pass per output plane instead
/// of a strided copy, two pads and four shifted adds over the upsampled tensor.
pub fn shuffle_blur(x: &Tensor, r: usize) -> Result<Tensor> {
    if is_cpu_f32(&[x]) {
        return x.contiguous()?.apply_op1_no_bwd(&ShuffleBlur { r });
    }
    blur_replicate(&pixel_shuffle(x, r)?)
}

struct ShuffleBlur {
    r: usize,
}

impl candle_core::CustomOp1 for ShuffleBlur {
    fn name(&self) -> &'static str {
        "shuffle-blur"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, cin, h, w) = xl.shape().dims4()?;
        let r = self.r;
        let c = cin / (r * r);
        let (oh, ow) = (h * r, w * r);
        let x = contiguous_slice(xs, xl, "shuffle input")?;
        let out = par_output(b * c * oh * ow, oh * ow, |plane, o| {
            let (bi, ci) = (plane / c, plane % c);
            // shuffled value at output (y, x): in[bi, ci*r*r + (y%r)*r + x%r, y/r, x/r]
            let at = |y: usize, xx: usize| {
                let ch = ci * r * r + (y % r) * r + xx % r;
                x[((bi * cin + ch) * h + y / r) * w + xx / r]
            };
            for y in 0..oh {
                let yu = y.saturating_sub(1);
                for xx in 0..ow {
                    let xl = xx.saturating_sub(1);
                    o[y * ow + xx] = 0.25 * (at(yu, xl) + at(yu, xx) + at(y, xl) + at(y, xx));
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, c, oh, ow))))
    }
}

/// Zero-padded `k x k` stride-1 convolution of NCHW data as one matrix product:
/// `W [O, C*k*k] x im2col(x) [B, C*k*k, H*W]`. candle 0.11's CPU conv2d is a direct loop;
/// this puts the work into the parallel GEMM.
pub fn conv2d_same(x: &Tensor, w: &Tensor, epi: &Epilogue) -> Result<Tensor> {
    let (_, c, h, wd) = x.dims4()?;
    let (o, ci, k, _) = w.dims4()?;
    if ci != c {
        candle_core::bail!("conv2d_same: {c} input channels, weight expects {ci}")
    }
    if !is_cpu_f32(&[x, w]) {
        let y = x.conv2d(w, k / 2, 1, 1, 1)?;
        return channel_op(&y, epi.scale, epi.shift, 1, epi.pre, epi.post);
    }
    let wm = w.reshape((o, c * k * k))?;
    // the column matrix is k*k times the input
    per_image(x, |x| {
        let cols = x.apply_op1_no_bwd(&Im2Col { k })?;
        // [O, H*W]
        matmul_epilogue(&wm, &cols.squeeze(0)?, Channels::Rows, epi)?.reshape((1, o, h, wd))
    })
}

/// `f` of each image of the batch `x` (`[B, ...]`), given as a contiguous batch of one and
/// returning one: the convolutions' scratch (column matrix, Winograd transforms) then follows
/// one image, not the batch.
pub(crate) fn per_image(x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let b = x.dim(0)?;
    if b == 1 {
        return f(&x.contiguous()?);
    }
    let images = (0..b)
        .map(|i| f(&x.narrow(0, i, 1)?.contiguous()?))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&images, 0)
}

struct Im2Col {
    k: usize,
}

impl candle_core::CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col-same"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = xl.shape().dims4()?;
        let k = self.k;
        let pad = k / 2;
        let x = contiguous_slice(xs, xl, "im2col input")?;
        let plane = h * w;
        let out = par_output(b * c * k * k * plane, plane, |row, o| {
            // row = (bi * c + ci) * k * k + ky * k + kx
            let (bc, tap) = (row / (k * k), row % (k * k));
            let (ky, kx) = (tap / k, tap % k);
            let src = &x[bc * plane..(bc + 1) * plane];
            for y in 0..h {
                let iy = y as isize + ky as isize - pad as isize;
                let orow = &mut o[y * w..(y + 1) * w];
                if iy < 0 || iy >= h as isize {
                    orow.fill(0.0);
                    continue;
                }
                let irow = &src[iy as usize * w..(iy as usize + 1) * w];
                // orow[x] = irow[x + kx - pad]
                let x0 = pad.saturating_sub(kx);
                let x1 = (w + pad).saturating_sub(kx).min(w);
                orow[..x0].fill(0.0);
                if x1 > x0 {
                    orow[x0..x1].copy_from_slice(&irow[x0 + kx - pad..x1 + kx - pad]);
                }
                orow[x1.max(x0)..].fill(0.0);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, c * k * k, plane))))
    }
}

/// `y[p, o*S + s] = sum_c a[o, c] * relu(r[p, c*S + s] + bias[c*S + s])`: contract the
/// channels of a pre-shuffle feature (`r`: `[N, C*S]`, sub-pixel `s` of channel `c` at column
/// `c*S + s`; its bias and ReLU applied as it is read) with a small `[O, C]` map, keeping the
/// `S` sub-pixels apart. This is the DDColor tail's `bqc,bchw->bqhw` product and
/// `refine_net`, moved in front of the pixel shuffle.
pub fn subpixel_contract(r: &Tensor, bias: &Tensor, a: &Tensor, s: usize) -> Result<Tensor> {
    let (n, cs) = r.dims2()?;
    let (o, c) = a.dims2()?;
    if c * s != cs || bias.elem_count() != cs {
        candle_core::bail!(
            "subpixel_contract: {cs} columns and a bias of {} for {c} channels x {s}",
            bias.elem_count()
        )
    }
    if is_cpu_f32(&[r, bias, a]) {
        return r.contiguous()?.apply_op3_no_bwd(
            &bias.contiguous()?,
            &a.contiguous()?,
            &SubpixelContract { s },
        );
    }
    // [N, C, S] -> [N, S, C] x [C, O] -> [N, S, O] -> [N, O, S]
    r.broadcast_add(bias)?
        .relu()?
        .reshape((n, c, s))?
        .transpose(1, 2)?
        .contiguous()?
        .broadcast_matmul(&a.t()?)?
        .transpose(1, 2)?
        .reshape((n, o * s))
}

struct SubpixelContract {
    s: usize,
}

impl CustomOp3 for SubpixelContract {
    fn name(&self) -> &'static str {
        "subpixel-contract"
    }

    fn cpu_fwd(
        &self,
        rs: &CpuStorage,
        rl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
        as_: &CpuStorage,
        al: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, cs) = rl.shape().dims2()?;
        let (o, c) = al.shape().dims2()?;
        let s = self.s;
        let r = contiguous_slice(rs, rl, "subpixel input")?;
        let bias = contiguous_slice(bs, bl, "subpixel bias")?;
        let a = contiguous_slice(as_, al, "subpixel map")?;
        let out = par_output(n * o * s, o * s * 64, |i, y| {
            subpixel_rows(
                y,
                &r[i * cs * 64..][..y.len() / (o * s) * cs],
                bias,
                a,
                c,
                s,
            )
        });
        Ok((CpuStorage::F32(out), Shape::from((n, o * s))))
    }
}

multiversion! {
    /// [`subpixel_contract`] for consecutive pixel rows (`y` zeroed).
    fn subpixel_rows(y: &mut [f32], rows: &[f32], bias: &[f32], a: &[f32], c: usize, s: usize) {
        let o = a.len() / c;
        let mut v = vec![0f32; s];
        for (y, row) in y.chunks_exact_mut(o * s).zip(rows.chunks_exact(c * s)) {
            for (ci, (rc, bc)) in row.chunks_exact(s).zip(bias.chunks_exact(s)).enumerate() {
                // the channel's S sub-pixels, biased and rectified once for all O outputs
                for ((v, &x), &b) in v.iter_mut().zip(rc).zip(bc) {
                    *v = (x + b).max(0.0);
                }
                for (oi, yo) in y.chunks_exact_mut(s).enumerate() {
                    let w = a[oi * c + ci];
                    for (y, &v) in yo.iter_mut().zip(&v) {
                        *y += w * v;
                    }
                }
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
