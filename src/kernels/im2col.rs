//! Zero-padded "same" convolutions of any odd size on the CPU as im2col and one GEMM, with the
//! epilogue applied to the product in place.
use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};

use super::common::{contiguous_slice, is_cpu_f32, par_output, per_image};
use super::epilogue::{channel_op, Channels, Epilogue};
use super::gemm::matmul_epilogue;

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
