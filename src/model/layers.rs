//! The building blocks shared by the encoder and decoders: linear layers, convolutions (with
//! spectral norm and BatchNorm folded at load time), eval-mode BatchNorm and LayerNorm.
use candle_core::{Device, Result, Tensor};

use super::checkpoint::{LoadError, Vb};
use crate::kernels::activation::Act;
use crate::kernels::common::is_cpu_f32;
use crate::kernels::epilogue::{channel_op, Channels, Epilogue};
use crate::kernels::gemm::Weight;
use crate::kernels::{gemm, im2col, mlp, norm, transpose, winograd};

pub(crate) type LoadResult<T> = std::result::Result<T, LoadError>;

/// Move a finished (folded) f32 CPU weight to the model's device, in the model's dtype.
pub(crate) fn to_dev(vb: &Vb, t: Tensor, dev: &Device) -> LoadResult<Tensor> {
    t.to_dtype(vb.dtype())
        .and_then(|t| t.to_device(dev))
        .map_err(|e| vb.checkpoint().tensor_err(e))
}

/// `nn.Linear`, stored transposed (`[in, out]`) so that any `[..., in]` input is one GEMM
/// (in bf16 when the model's products are).
#[derive(Debug, Clone)]
pub struct Linear {
    w_t: Weight,
    b: Tensor,
    span: tracing::Span,
}

impl Linear {
    pub fn load(vb: &Vb, d_in: usize, d_out: usize, dev: &Device) -> LoadResult<Self> {
        let w = vb.get("weight", &[d_out, d_in])?;
        Self::from_weight(vb, &w, vb.get("bias", &[d_out])?, dev)
    }

    /// From a (possibly folded) torch weight `[out, in]` and bias `[out]` on the CPU.
    pub fn from_weight(vb: &Vb, w: &Tensor, b: Tensor, dev: &Device) -> LoadResult<Self> {
        let w_t = transpose::transpose2d(w).map_err(|e| vb.checkpoint().tensor_err(e))?;
        let w_t = Weight::right(to_dev(vb, w_t, dev)?, vb.bf16_products())
            .map_err(|e| vb.checkpoint().tensor_err(e))?;
        Ok(Self {
            w_t,
            b: to_dev(vb, b, dev)?,
            span: tracing::span!(tracing::Level::TRACE, "linear"),
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, Act::Identity)
    }

    /// `act(x W^T + b)`, the bias and activation applied in place after the product.
    pub fn forward_act(&self, x: &Tensor, act: Act) -> Result<Tensor> {
        let _enter = self.span.enter();
        self.on_rows(x, |x2| {
            gemm::matmul_right(
                x2,
                &self.w_t,
                Channels::Columns,
                Some(&Epilogue::bias(&self.b, act)),
            )
        })
    }

    /// `res + x W^T + b` (a residual branch), accumulated onto `res`.
    pub fn forward_residual(&self, x: &Tensor, res: &Tensor) -> Result<Tensor> {
        let _enter = self.span.enter();
        self.on_rows(x, |x2| {
            let r = res.reshape((x2.dim(0)?, self.d_out()))?;
            gemm::matmul_right_bias_residual(x2, &self.w_t, &self.b, &r)
        })
    }

    /// `res + next(act(x W^T + b))`: this layer and `next` as one MLP with a residual, in one
    /// pass over blocks of rows where both are bf16 on the CPU (`kernels::mlp`).
    pub fn forward_mlp_residual(
        &self,
        x: &Tensor,
        act: Act,
        next: &Linear,
        res: &Tensor,
    ) -> Result<Tensor> {
        let _enter = self.span.enter();
        let f = mlp::MlpWeights {
            w1: &self.w_t,
            b1: &self.b,
            act,
            w2: &next.w_t,
            b2: &next.b,
        };
        mlp::mlp_residual(x, &f, res)
    }

    /// `f` on `x` viewed as `[rows, in]`, its `[rows, out]` result given `x`'s leading dims.
    fn on_rows(&self, x: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        let dims = x.dims();
        let d_in = dims[dims.len() - 1];
        let rows = x.elem_count() / d_in.max(1);
        let y = f(&x.reshape((rows, d_in))?)?;
        let mut out = dims.to_vec();
        *out.last_mut().expect("rank >= 1") = self.d_out();
        y.reshape(out)
    }

    fn d_out(&self) -> usize {
        self.w_t.dims()[1]
    }
}

/// Per-channel affine `x * scale + shift` on NCHW: what an eval-mode BatchNorm2d computes.
#[derive(Debug, Clone)]
pub struct ChannelAffine {
    pub scale: Tensor,
    pub shift: Tensor,
    span: tracing::Span,
}

impl ChannelAffine {
    /// `nn.BatchNorm2d(c)` in eval mode (eps 1e-5), read from `weight`, `bias`, `running_mean`,
    /// `running_var`; kept on the CPU until [`ChannelAffine::to_device`].
    pub fn batch_norm(vb: &Vb, c: usize) -> LoadResult<Self> {
        let w = vb.get("weight", &[c])?;
        let b = vb.get("bias", &[c])?;
        let mean = vb.get("running_mean", &[c])?;
        let var = vb.get("running_var", &[c])?;
        let fold = || -> Result<(Tensor, Tensor)> {
            let scale = (w / (var + 1e-5)?.sqrt()?)?;
            let shift = (b - (mean * &scale)?)?;
            Ok((scale, shift))
        };
        let (scale, shift) = fold().map_err(|e| vb.checkpoint().tensor_err(e))?;
        Ok(Self {
            scale,
            shift,
            span: tracing::span!(tracing::Level::TRACE, "batch-norm"),
        })
    }

    pub fn to_device(self, vb: &Vb, dev: &Device) -> LoadResult<Self> {
        Ok(Self {
            scale: to_dev(vb, self.scale, dev)?,
            shift: to_dev(vb, self.shift, dev)?,
            span: self.span,
        })
    }

    /// `post(pre(x) * scale + shift)` on NCHW.
    pub fn forward(&self, x: &Tensor, pre: Act, post: Act) -> Result<Tensor> {
        let _enter = self.span.enter();
        channel_op(x, Some(&self.scale), &self.shift, 1, pre, post)
    }
}

/// A 2-D convolution on NCHW; 1x1 kernels run as one matrix product.
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// `[out, in]` for 1x1 kernels (in bf16 when the model's products are), else
    /// `[out, in, k, k]`; none where only the bf16 Winograd form is kept (a bf16 CPU model,
    /// whose activations are CPU f32 and so always take the Winograd path: the f32 kernels
    /// were 44 MB of the large model's 571).
    w: Option<Weight>,
    out: usize,
    b: Option<Tensor>,
    k: usize,
    stride: usize,
    padding: usize,
    /// For a 3x3 "same" convolution of an f32 CPU model: the Winograd-transformed weight (in
    /// bf16 when the model's products are).
    winograd: Option<Weight>,
    span: tracing::Span,
}

impl Conv2d {
    /// Build from a folded weight `[out, in, k, k]` and optional bias `[out]` (CPU tensors).
    pub fn from_parts(
        vb: &Vb,
        w: Tensor,
        b: Option<Tensor>,
        stride: usize,
        padding: usize,
        dev: &Device,
    ) -> LoadResult<Self> {
        let e = |e| vb.checkpoint().tensor_err(e);
        let (o, i, k, _) = w.dims4().map_err(e)?;
        let w = if k == 1 {
            w.reshape((o, i)).map_err(e)?
        } else {
            w
        };
        let b = match b {
            Some(b) => Some(to_dev(vb, b, dev)?),
            None => None,
        };
        let w = to_dev(vb, w, dev)?;
        let bf16 = vb.bf16_products() && dev.is_cpu();
        let winograd = if k == 3 && stride == 1 && padding == 1 && is_cpu_f32(&[&w]) {
            Some(Weight::left(winograd::weight(&w).map_err(e)?, bf16).map_err(e)?)
        } else {
            None
        };
        let w = if k == 1 {
            Some(Weight::left(w, bf16).map_err(e)?)
        } else if bf16 && winograd.is_some() {
            None
        } else {
            Some(Weight::Tensor(w))
        };
        Ok(Self {
            w,
            out: o,
            winograd,
            b,
            k,
            stride,
            padding,
            span: tracing::span!(tracing::Level::TRACE, "conv2d"),
        })
    }

    /// A plain `nn.Conv2d` with bias.
    pub fn load(
        vb: &Vb,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        padding: usize,
        dev: &Device,
    ) -> LoadResult<Self> {
        let w = vb.get("weight", &[c_out, c_in, k, k])?;
        let b = vb.get("bias", &[c_out])?;
        Self::from_parts(vb, w, Some(b), stride, padding, dev)
    }

    /// `custom_conv_layer`'s conv (spectral or weight norm folded), optionally followed directly
    /// by a BatchNorm that is folded into it as well (`conv -> bn` with nothing in between).
    pub fn load_normed(
        vb: &Vb,
        c_in: usize,
        c_out: usize,
        k: usize,
        bias: bool,
        bn: Option<ChannelAffine>,
        dev: &Device,
    ) -> LoadResult<Self> {
        let w = vb.normed_weight(&[c_out, c_in, k, k])?;
        let b = if bias {
            Some(vb.get("bias", &[c_out])?)
        } else {
            None
        };
        let (w, b) = match bn {
            None => (w, b),
            Some(bn) => {
                // bn(conv(x)) = scale * (W x + b) + shift
                let fold = || -> Result<(Tensor, Tensor)> {
                    let w = w.broadcast_mul(&bn.scale.reshape((c_out, 1, 1, 1))?)?;
                    let b = match b {
                        Some(b) => ((b * &bn.scale)? + &bn.shift)?,
                        None => bn.shift.clone(),
                    };
                    Ok((w, b))
                };
                let (w, b) = fold().map_err(|e| vb.checkpoint().tensor_err(e))?;
                (w, Some(b))
            }
        };
        Self::from_parts(vb, w, b, 1, (k - 1) / 2, dev)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, Act::Identity)
    }

    /// `act(conv(x) + b)`, the bias and activation applied in place after the product.
    pub fn forward_act(&self, x: &Tensor, act: Act) -> Result<Tensor> {
        let _enter = self.span.enter();
        let zeros;
        let b = match &self.b {
            Some(b) => b,
            None => {
                zeros = Tensor::zeros(self.out, x.dtype(), x.device())?;
                &zeros
            }
        };
        self.forward_epilogue(x, &Epilogue::bias(b, act))
    }

    /// `bn(relu(conv(x)))` for a convolution without bias (fastai's `conv -> ReLU -> BN`).
    pub fn forward_relu_affine(&self, x: &Tensor, bn: &ChannelAffine) -> Result<Tensor> {
        let _enter = self.span.enter();
        if self.b.is_some() {
            candle_core::bail!("forward_relu_affine: the convolution has a bias")
        }
        let epi = Epilogue {
            scale: Some(&bn.scale),
            shift: &bn.shift,
            pre: Act::Relu,
            post: Act::Identity,
        };
        self.forward_epilogue(x, &epi)
    }

    fn forward_epilogue(&self, x: &Tensor, epi: &Epilogue) -> Result<Tensor> {
        if self.k == 1 && self.stride == 1 && self.padding == 0 {
            let (b, c, h, w) = x.dims4()?;
            let xs = x.reshape((b, c, h * w))?;
            let Some(wm) = &self.w else {
                unreachable!("a 1x1 weight is always kept")
            };
            let y = gemm::matmul_left(wm, &xs, Channels::Rows, Some(epi))?;
            y.reshape((b, self.out, h, w))
        } else if let Some(u) = self.winograd.as_ref().filter(|_| is_cpu_f32(&[x])) {
            winograd::conv3x3(x, u, epi)
        } else {
            let Some(Weight::Tensor(w)) = &self.w else {
                candle_core::bail!(
                    "conv2d: the {}x{} kernel of a bf16 model is kept in its Winograd form only, \
                     for f32 inputs on the CPU",
                    self.k,
                    self.k
                )
            };
            if self.stride == 1 && self.padding == self.k / 2 && self.k % 2 == 1 {
                im2col::conv2d_same(x, w, epi)
            } else {
                let y = x.conv2d(w, self.padding, self.stride, 1, 1)?;
                channel_op(&y, epi.scale, epi.shift, 1, epi.pre, epi.post)
            }
        }
    }

    /// The weight as an f32 matrix `[out, in]` (1x1 convolutions with f32 products only).
    pub fn weight_matrix(&self) -> Option<&Tensor> {
        match &self.w {
            Some(Weight::Tensor(w)) if self.k == 1 => Some(w),
            _ => None,
        }
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.b.as_ref()
    }
}

/// `nn.LayerNorm` over the last dimension (`channels_last`), with its own epsilon.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    w: Tensor,
    b: Tensor,
    eps: f64,
    span: tracing::Span,
}

impl LayerNorm {
    pub fn load(vb: &Vb, c: usize, eps: f64, dev: &Device) -> LoadResult<Self> {
        Ok(Self {
            w: to_dev(vb, vb.get("weight", &[c])?, dev)?,
            b: to_dev(vb, vb.get("bias", &[c])?, dev)?,
            eps,
            span: tracing::span!(tracing::Level::TRACE, "layer-norm"),
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let _enter = self.span.enter();
        norm::layer_norm_last(x, &self.w, &self.b, self.eps)
    }
}
