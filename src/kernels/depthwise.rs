//! The depthwise `k x k` convolution on NHWC data (ConvNeXt's 7x7; candle's grouped conv2d
//! loops over groups): a CPU kernel, a CUDA kernel (`depthwise.cu`, built by `build.rs`), and
//! the device-independent fallback and reference they are tested against.
#[cfg(feature = "cuda")]
use candle_core::DType;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::common::{contiguous_slice, is_cpu_f32, par_output};
use crate::simd::multiversion;

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

/// The PTX of `src/kernels/depthwise.cu`, built by `build.rs` for `CUDA_COMPUTE_CAP`.
#[cfg(feature = "cuda")]
const KERNELS_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/depthwise.ptx"));

#[cfg(feature = "cuda")]
impl DepthwiseNhwc {
    /// One launch of `depthwise.cu`'s `depthwise_nhwc_<dtype>` over the whole tensor.
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
        // SAFETY: the argument list matches the kernel's signature in depthwise.cu, and the
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
