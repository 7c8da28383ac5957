//! `decoder.layers` and `decoder.last_shuf`: the pixel decoder (fastai's UNet blocks as DDColor
//! uses them), upsampling the stride-32 encoder feature back to full resolution.
use candle_core::{Device, Result, Tensor};

use super::checkpoint::Vb;
use super::layers::{ChannelAffine, Conv2d, LoadResult};
use crate::kernels::activation::Act;
use crate::kernels::tail;

/// `CustomPixelShuffle_ICNR`: 1x1 conv (+ BatchNorm when `extra_bn`) -> ReLU -> PixelShuffle(r)
/// -> ReplicationPad2d((1,0,1,0)) -> AvgPool2d(2, stride 1).
#[derive(Debug, Clone)]
pub struct PixelShuffleIcnr {
    conv: Conv2d, // spectral norm and the optional BatchNorm folded in
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

    /// The 1x1 conv as `x [N, C_in] x W^T [C_in, C_out]` (a transposed view) and its bias.
    pub fn weight_t_and_bias(&self) -> Result<(Tensor, Tensor)> {
        let w = self
            .conv
            .weight_matrix()
            .ok_or_else(|| candle_core::Error::Msg("pixel shuffle conv is not 1x1".into()))?;
        let zeros = || Tensor::zeros(w.dim(0)?, w.dtype(), w.device());
        let b = match self.conv.bias() {
            Some(b) => b.clone(),
            None => zeros()?,
        };
        Ok((w.t()?, b))
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
        // the last layer before the output: f32 products in a bf16 model
        let last = vb.pp("last_shuf").f32_products();
        let last_shuf = PixelShuffleIcnr::load(&last, embed, embed, 4, false, dev)?;
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
