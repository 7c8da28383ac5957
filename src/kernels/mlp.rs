//! A two-layer MLP with a residual on tensors, `res + act(x W1 + b1) W2 + b2` (ConvNeXt's
//! pointwise pair): in one pass over blocks of rows ([`super::bf16::mlp`]) where both weights
//! are bf16 and the operands f32 on the CPU, else as the two products apart ([`super::gemm`]),
//! which give the same bits.
use candle_core::{Device, Result, Storage, Tensor};

use super::activation::Act;
use super::bf16;
use super::common::{contiguous_slice, is_cpu_f32};
use super::epilogue::{Channels, Epilogue};
use super::gemm::{self, Weight};

/// The weights of [`mlp_residual`]: `w1` `[C, H]` and `w2` `[H, N]` on the right of the
/// products, the biases `[H]` and `[N]`.
#[derive(Debug, Clone, Copy)]
pub struct MlpWeights<'a> {
    pub w1: &'a Weight,
    pub b1: &'a Tensor,
    pub act: Act,
    pub w2: &'a Weight,
    pub b2: &'a Tensor,
}

/// `res + act(x W1 + b1) W2 + b2` for `x` `[.., C]` and `res` `[.., N]` (the same leading
/// dimensions); the result has `res`'s shape.
pub fn mlp_residual(x: &Tensor, f: &MlpWeights, res: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    let c = *dims.last().unwrap_or(&0);
    let rows = x.elem_count() / c.max(1);
    let x2 = x.reshape((rows, c))?;
    if let (Weight::Right(w1), Weight::Right(w2)) = (f.w1, f.w2) {
        if is_cpu_f32(&[x, res, f.b1, f.b2]) {
            return fused(&x2, w1, w2, f, res);
        }
    }
    let hidden = gemm::matmul_right(
        &x2,
        f.w1,
        Channels::Columns,
        Some(&Epilogue::bias(f.b1, f.act)),
    )?;
    let n = f.w2.dims()[1];
    let r = res.reshape((rows, n))?;
    gemm::matmul_right_bias_residual(&hidden, f.w2, f.b2, &r)?.reshape(res.shape())
}

fn fused(
    x: &Tensor,
    w1: &bf16::Panels,
    w2: &bf16::Panels,
    f: &MlpWeights,
    res: &Tensor,
) -> Result<Tensor> {
    let (x, res) = (x.contiguous()?, res.contiguous()?);
    let (b1, b2) = (f.b1.flatten_all()?, f.b2.flatten_all()?);
    let vec = |t: &Tensor| -> Result<Vec<f32>> { t.to_vec1::<f32>() };
    let (b1, b2) = (vec(&b1)?, vec(&b2)?);
    let (xs, xl) = x.storage_and_layout();
    let (rs, rl) = res.storage_and_layout();
    let (Storage::Cpu(xs), Storage::Cpu(rs)) = (&*xs, &*rs) else {
        candle_core::bail!("mlp: operands not on the CPU")
    };
    let xv = contiguous_slice(xs, xl, "mlp input")?;
    let rv = contiguous_slice(rs, rl, "mlp residual")?;
    let rows = x.dim(0)?;
    if w1.k != x.dim(1)? || w2.k != w1.n || rv.len() != rows * w2.n {
        candle_core::bail!(
            "mlp: {rows} rows of {} through {}x{} and {}x{} onto {} residuals",
            x.dim(1)?,
            w1.k,
            w1.n,
            w2.k,
            w2.n,
            rv.len()
        )
    }
    let mut out = vec![0f32; rv.len()];
    let weights = bf16::Mlp {
        w1,
        b1: &b1,
        act: f.act,
        w2,
        b2: &b2,
    };
    bf16::mlp(bf16::Kernel::current(), xv, rv, &weights, &mut out);
    Tensor::from_vec(out, res.shape(), &Device::Cpu)
}
