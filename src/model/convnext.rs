//! `encoder.arch`: the ConvNeXt backbone (ConvNeXt-T for paper_tiny, ConvNeXt-L for the others).
//!
//! PyTorch runs it in NCHW with permutes around every block; here the whole backbone stays in
//! NHWC (channels last), where LayerNorm, the pointwise MLP and the depthwise convolution all read
//! contiguous channel rows. The four hooked features (`norm0..norm3`) are returned in NCHW.
use candle_core::{Device, Result, Tensor};

use super::checkpoint::Vb;
use super::layers::{to_dev, LayerNorm, Linear, LoadResult};
use crate::kernels::activation::Act;
use crate::kernels::epilogue::{Channels, Epilogue};
use crate::kernels::gemm::Weight;
use crate::kernels::{depthwise, gemm};

/// ConvNeXt's `LayerNorm(eps=1e-6)`, both data formats.
const LN_EPS: f64 = 1e-6;

/// A non-overlapping `p x p` stride-`p` convolution (the stem and the downsampling layers) on
/// NHWC input, computed as one GEMM over patches.
#[derive(Debug, Clone)]
struct Patchify {
    p: usize,
    w_t: Weight, // [p*p*c_in, c_out], rows ordered (ky, kx, c)
    b: Tensor,
    span: tracing::Span,
}

impl Patchify {
    fn load(vb: &Vb, c_in: usize, c_out: usize, p: usize, dev: &Device) -> LoadResult<Self> {
        let w = vb.get("weight", &[c_out, c_in, p, p])?;
        // [O, I, kh, kw] -> [O, kh, kw, I] -> [kh*kw*I, O]
        let w_t = w
            .permute((0, 2, 3, 1))
            .and_then(|t| t.reshape((c_out, p * p * c_in)))
            .and_then(|t| t.t())
            .and_then(|t| t.contiguous())
            .map_err(|e| vb.checkpoint().tensor_err(e))?;
        let w_t = Weight::right(to_dev(vb, w_t, dev)?, vb.bf16_products())
            .map_err(|e| vb.checkpoint().tensor_err(e))?;
        Ok(Self {
            p,
            w_t,
            b: to_dev(vb, vb.get("bias", &[c_out])?, dev)?,
            span: tracing::span!(tracing::Level::TRACE, "patchify"),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let _enter = self.span.enter();
        let (b, h, w, c) = x.dims4()?;
        let p = self.p;
        let (oh, ow) = (h / p, w / p);
        let patches = x
            .reshape((b, oh, p, ow, p, c))?
            .permute((0, 1, 3, 2, 4, 5))?
            .contiguous()?
            .reshape((b * oh * ow, p * p * c))?;
        let y = gemm::matmul_right(
            &patches,
            &self.w_t,
            Channels::Columns,
            Some(&Epilogue::bias(&self.b, Act::Identity)),
        )?;
        y.reshape((b, oh, ow, ()))
    }
}

/// `stages.i.j`: depthwise 7x7 -> LayerNorm -> Linear(4C) -> GELU -> Linear(C) -> gamma, residual.
#[derive(Debug, Clone)]
struct Block {
    dw_w: Tensor, // [7, 7, C]
    dw_b: Tensor,
    norm: LayerNorm,
    pwconv1: Linear,
    pwconv2: Linear, // layer scale `gamma` folded in
    span: tracing::Span,
}

impl Block {
    fn load(vb: &Vb, dim: usize, dev: &Device) -> LoadResult<Self> {
        let e = |e| vb.checkpoint().tensor_err(e);
        let dw = vb.pp("dwconv");
        let dw_w = dw
            .get("weight", &[dim, 1, 7, 7])?
            .reshape((dim, 7, 7))
            .and_then(|t| t.permute((1, 2, 0)))
            .and_then(|t| t.contiguous())
            .map_err(e)?;
        let gamma = vb.get("gamma", &[dim])?;
        let pw2 = vb.pp("pwconv2");
        // gamma * (W x + b) = (gamma W) x + gamma b
        let w2 = pw2
            .get("weight", &[dim, 4 * dim])?
            .broadcast_mul(&gamma.reshape((dim, 1)).map_err(e)?)
            .map_err(e)?;
        let b2 = (pw2.get("bias", &[dim])? * &gamma).map_err(e)?;
        Ok(Self {
            dw_w: to_dev(vb, dw_w, dev)?,
            dw_b: to_dev(vb, dw.get("bias", &[dim])?, dev)?,
            norm: LayerNorm::load(&vb.pp("norm"), dim, LN_EPS, dev)?,
            pwconv1: Linear::load(&vb.pp("pwconv1"), dim, 4 * dim, dev)?,
            pwconv2: Linear::from_weight(vb, &w2, b2, dev)?,
            span: tracing::span!(tracing::Level::TRACE, "convnext-block"),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let _enter = self.span.enter();
        let y = depthwise::depthwise_conv_nhwc(x, &self.dw_w, &self.dw_b)?;
        let y = self.norm.forward(&y)?;
        self.pwconv1
            .forward_mlp_residual(&y, Act::Gelu, &self.pwconv2, x)
    }
}

/// `stages.i`: `depths[i]` blocks of width `dims[i]`, one after the other.
#[derive(Debug, Clone)]
struct Stage {
    blocks: Vec<Block>,
    span: tracing::Span,
}

impl Stage {
    fn load(vb: &Vb, depth: usize, dim: usize, dev: &Device) -> LoadResult<Self> {
        let blocks = (0..depth)
            .map(|j| Block::load(&vb.pp(j), dim, dev))
            .collect::<LoadResult<Vec<_>>>()?;
        Ok(Self {
            blocks,
            span: tracing::span!(tracing::Level::TRACE, "convnext-stage"),
        })
    }

    /// Takes `x` by value: each block's input is dropped once the block has run.
    fn forward(&self, mut x: Tensor) -> Result<Tensor> {
        let _enter = self.span.enter();
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        Ok(x)
    }
}

/// ConvNeXt's shape: four stages of `depths[i]` blocks of width `dims[i]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvNextConfig {
    pub dims: [usize; 4],
    pub depths: [usize; 4],
}

impl ConvNextConfig {
    pub const TINY: Self = Self {
        dims: [96, 192, 384, 768],
        depths: [3, 3, 9, 3],
    };
    pub const LARGE: Self = Self {
        dims: [192, 384, 768, 1536],
        depths: [3, 3, 27, 3],
    };

    /// The upstream name of this encoder, where it has one.
    pub fn name(&self) -> &'static str {
        match *self {
            Self::TINY => "convnext-t",
            Self::LARGE => "convnext-l",
            Self {
                dims: [96, 192, 384, 768],
                depths: [3, 3, 27, 3],
            } => "convnext-s",
            Self {
                dims: [128, 256, 512, 1024],
                depths: [3, 3, 27, 3],
            } => "convnext-b",
            _ => "convnext-custom",
        }
    }
}

/// `encoder.arch`.
#[derive(Debug, Clone)]
pub struct ConvNext {
    stem: Patchify,
    stem_norm: LayerNorm,
    /// `downsample_layers.{1,2,3}`: LayerNorm then a 2x2 stride-2 conv.
    down: Vec<(LayerNorm, Patchify)>,
    stages: Vec<Stage>,
    /// `norm0..norm3`, whose outputs the decoder hooks.
    hook_norms: Vec<LayerNorm>,
    span: tracing::Span,
}

impl ConvNext {
    pub fn load(vb: &Vb, cfg: &ConvNextConfig, dev: &Device) -> LoadResult<Self> {
        let d = cfg.dims;
        let ds = vb.pp("downsample_layers");
        // the stem reads the image itself: its product stays f32 in a bf16 model
        let stem = Patchify::load(&ds.pp(0).pp(0).f32_products(), 3, d[0], 4, dev)?;
        let stem_norm = LayerNorm::load(&ds.pp(0).pp(1), d[0], LN_EPS, dev)?;
        let mut down = Vec::with_capacity(3);
        for i in 1..4 {
            let l = ds.pp(i);
            down.push((
                LayerNorm::load(&l.pp(0), d[i - 1], LN_EPS, dev)?,
                Patchify::load(&l.pp(1), d[i - 1], d[i], 2, dev)?,
            ));
        }
        let mut stages = Vec::with_capacity(4);
        for (i, (&depth, &dim)) in cfg.depths.iter().zip(&d).enumerate() {
            stages.push(Stage::load(&vb.pp("stages").pp(i), depth, dim, dev)?);
        }
        let hook_norms = (0..4)
            .map(|i| LayerNorm::load(&vb.pp(format!("norm{i}")), d[i], LN_EPS, dev))
            .collect::<LoadResult<Vec<_>>>()?;
        Ok(Self {
            stem,
            stem_norm,
            down,
            stages,
            hook_norms,
            span: tracing::span!(tracing::Level::TRACE, "convnext"),
        })
    }

    /// The four hooked features `norm0..norm3`, NCHW, at strides 4, 8, 16 and 32.
    pub fn forward(&self, x_nchw: &Tensor) -> Result<Vec<Tensor>> {
        let _enter = self.span.enter();
        let x = x_nchw.permute((0, 2, 3, 1))?;
        let mut x = self.stem_norm.forward(&self.stem.forward(&x)?)?;
        let mut hooks = Vec::with_capacity(4);
        for i in 0..4 {
            if i > 0 {
                let (norm, conv) = &self.down[i - 1];
                x = conv.forward(&norm.forward(&x)?)?;
            }
            x = self.stages[i].forward(x)?;
            let hooked = self.hook_norms[i].forward(&x)?;
            hooks.push(hooked.permute((0, 3, 1, 2))?.contiguous()?);
        }
        Ok(hooks)
    }
}
