//! `decoder.layers` and `decoder.last_shuf`: the pixel decoder (fastai's UNet blocks as DDColor
//! uses them), upsampling the stride-32 encoder feature back to full resolution.
use candle_core::{Device, Result, Tensor};

use super::checkpoint::Vb;
use super::layers::{ChannelAffine, Conv2d, LoadResult};
use crate::kernels::activation::Act;
use crate::kernels::gemm::Weight;
use crate::kernels::tail;

/// `CustomPixelShuffle_ICNR`: 1x1 conv (+ BatchNorm when `extra_bn`) -> ReLU -> PixelShuffle(r)
/// -> ReplicationPad2d((1,0,1,0)) -> AvgPool2d(2, stride 1).
#[derive(Debug, Clone)]
pub struct PixelShuffleIcnr {
    conv: Conv2d, // spectral norm and the optional BatchNorm folded in
    /// `last_shuf`'s conv as `W^T [C_in, C_out]` for the fused tail (see `DDColor::forward`),
    /// in bf16 when the model's products are; `conv` itself keeps f32 for the traced order.
    w_t: Option<Weight>,
    scale: usize,
    span: tracing::Span,
}

impl PixelShuffleIcnr {
    pub fn load(
        vb: &Vb,
        c_in: usize,
        c_out: usize,
        scale: usize,
        extra_bn: bool,
        dev: &Device,
    ) -> LoadResult<Self> {
        let c = c_out * scale * scale;
        // custom_conv_layer: bias only when there is no BatchNorm
        let bn = if extra_bn {
            Some(ChannelAffine::batch_norm(&vb.pp("conv").pp(1), c)?)
        } else {
            None
        };
        let conv = Conv2d::load_normed(&vb.pp("conv").pp(0), c_in, c, 1, !extra_bn, bn, dev)?;
        Ok(Self {
            conv,
            w_t: None,
            scale,
            span: tracing::span!(tracing::Level::TRACE, "pixel-shuffle-icnr"),
        })
    }

    /// `relu(conv(x))`, before the shuffle: the last nonlinearity of this module.
    pub fn pre_shuffle(&self, x: &Tensor) -> Result<Tensor> {
        let _enter = self.span.enter();
        self.conv.forward_act(x, Act::Relu)
    }

    /// The output is non-negative (a blur of ReLU outputs).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let _enter = self.span.enter();
        tail::shuffle_blur(&self.pre_shuffle(x)?, self.scale)
    }

    pub fn scale(&self) -> usize {
        self.scale
    }

    /// `last_shuf`: the conv in f32 for [`PixelShuffleIcnr::forward`] and, for the fused tail,
    /// its `W^T` with products in the precision `vb` asks for.
    pub fn load_last(
        vb: &Vb,
        c_in: usize,
        c_out: usize,
        scale: usize,
        dev: &Device,
    ) -> LoadResult<Self> {
        let mut shuf = Self::load(&vb.f32_products(), c_in, c_out, scale, false, dev)?;
        let e = |e| vb.checkpoint().tensor_err(e);
        let w = shuf
            .conv
            .weight_matrix()
            .expect("a 1x1 conv with f32 products");
        let w_t = w.t().and_then(|t| t.contiguous()).map_err(e)?;
        shuf.w_t = Some(Weight::right(w_t, vb.bf16_products() && dev.is_cpu()).map_err(e)?);
        Ok(shuf)
    }

    /// The 1x1 conv as `x [N, C_in] x W^T [C_in, C_out]` and its bias (`last_shuf` only).
    pub fn weight_t_and_bias(&self) -> Result<(&Weight, Tensor)> {
        let w_t = self
            .w_t
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg("not loaded as last_shuf".into()))?;
        let b = match self.conv.bias() {
            Some(b) => b.clone(),
            None => {
                let o = w_t.dims()[1];
                let x = self.conv.weight_matrix();
                let dev = x.map_or(candle_core::Device::Cpu, |w| w.device().clone());
                let dtype = x.map_or(candle_core::DType::F32, |w| w.dtype());
                Tensor::zeros(o, dtype, &dev)?
            }
        };
        Ok((w_t, b))
    }
}

/// `UnetBlockWide`: upsample the input, concatenate the BatchNorm'd skip feature, ReLU, 3x3 conv,
/// ReLU, BatchNorm.
#[derive(Debug, Clone)]
pub struct UnetBlockWide {
    shuf: PixelShuffleIcnr,
    bn: ChannelAffine,
    conv: Conv2d,
    conv_bn: ChannelAffine, // conv.2, after the ReLU, so it cannot be folded into conv.0
    span: tracing::Span,
}

impl UnetBlockWide {
    pub fn load(
        vb: &Vb,
        up_in_c: usize,
        x_in_c: usize,
        n_out: usize,
        dev: &Device,
    ) -> LoadResult<Self> {
        let shuf = PixelShuffleIcnr::load(&vb.pp("shuf"), up_in_c, n_out, 2, true, dev)?;
        let bn = ChannelAffine::batch_norm(&vb.pp("bn"), x_in_c)?.to_device(vb, dev)?;
        let ni = n_out + x_in_c;
        let conv = Conv2d::load_normed(&vb.pp("conv").pp(0), ni, n_out, 3, false, None, dev)?;
        let conv_bn = ChannelAffine::batch_norm(&vb.pp("conv").pp(2), n_out)?.to_device(vb, dev)?;
        Ok(Self {
            shuf,
            bn,
            conv,
            conv_bn,
            span: tracing::span!(tracing::Level::TRACE, "unet-block-wide"),
        })
    }

    pub fn forward(&self, up_in: &Tensor, skip: &Tensor) -> Result<Tensor> {
        let _enter = self.span.enter();
        // relu(cat([up, bn(skip)])): `up` is already non-negative, so the ReLU only acts on
        // the skip half and is fused into its BatchNorm.
        let up = self.shuf.forward(up_in)?;
        let skip = self.bn.forward(skip, Act::Identity, Act::Relu)?;
        let cat = Tensor::cat(&[&up, &skip], 1)?;
        // conv -> ReLU -> BatchNorm, applied to the product in place
        self.conv.forward_relu_affine(&cat, &self.conv_bn)
    }
}

/// The three UNet blocks plus `last_shuf` (x4), from the stride-32 feature to full resolution.
#[derive(Debug, Clone)]
pub struct PixelDecoder {
    pub layers: Vec<UnetBlockWide>,
    pub last_shuf: PixelShuffleIcnr,
    span: tracing::Span,
}

impl PixelDecoder {
    /// `enc_dims` are the encoder widths (norm0..norm3), `nf` the decoder width.
    pub fn load(vb: &Vb, enc_dims: [usize; 4], nf: usize, dev: &Device) -> LoadResult<Self> {
        let mut layers = Vec::with_capacity(3);
        let mut in_c = enc_dims[3];
        for (i, &skip_c) in [enc_dims[2], enc_dims[1], enc_dims[0]].iter().enumerate() {
            let out_c = if i == 2 { nf / 2 } else { nf };
            layers.push(UnetBlockWide::load(
                &vb.pp("layers").pp(i),
                in_c,
                skip_c,
                out_c,
                dev,
            )?);
            in_c = out_c;
        }
        let embed = nf / 2;
        let last_shuf = PixelShuffleIcnr::load_last(&vb.pp("last_shuf"), embed, embed, 4, dev)?;
        Ok(Self {
            layers,
            last_shuf,
            span: tracing::span!(tracing::Level::TRACE, "pixel-decoder"),
        })
    }

    /// The three UNet block outputs (strides 16, 8, 4), which the colour decoder attends to.
    pub fn scales(&self, hooks: &[Tensor]) -> Result<[Tensor; 3]> {
        let _enter = self.span.enter();
        let out0 = self.layers[0].forward(&hooks[3], &hooks[2])?;
        let out1 = self.layers[1].forward(&out0, &hooks[1])?;
        let out2 = self.layers[2].forward(&out1, &hooks[0])?;
        Ok([out0, out1, out2])
    }

    /// The three block outputs and the full-resolution image feature (`last_shuf`).
    pub fn forward(&self, hooks: &[Tensor]) -> Result<([Tensor; 3], Tensor)> {
        let _enter = self.span.enter();
        let scales = self.scales(hooks)?;
        let out3 = self.last_shuf.forward(&scales[2])?;
        Ok((scales, out3))
    }
}
