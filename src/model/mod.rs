//! DDColor in candle, one Rust struct per PyTorch module so that a checkpoint key leads to its
//! line: `encoder.arch` ([`convnext`]), `decoder.layers` / `decoder.last_shuf` ([`unet`]),
//! `decoder.color_decoder` ([`color_decoder`]) and `refine_net` (here).
//!
//! The network only: the loops it runs on are in [`crate::kernels`]. Each struct enters its
//! `tracing` span in `forward` (recorded only when a subscriber is installed).
//!
//! Input: `[B, 3, H, W]` in `[0, 1]` (gray replicated to RGB), H and W multiples of 32.
//! Output: `[B, 2, H, W]`, the predicted a and b channels in Lab units.
pub mod checkpoint;
pub mod color_decoder;
pub mod config;
pub mod convnext;
pub mod layers;
mod torch_zip;
pub mod unet;

use std::path::Path;

use candle_core::{DType, Device, Result, Tensor};

pub use checkpoint::{Checkpoint, LoadError};
pub use config::Config;

use color_decoder::MultiScaleColorDecoder;
use convnext::ConvNext;
use layers::{to_dev, Conv2d};
use unet::PixelDecoder;

use crate::kernels::activation::Act;
use crate::kernels::epilogue::{channel_op, Channels};
use crate::kernels::{gemm, tail};

/// Pixels per band in the fused tail of [`DDColor::forward`]: 2048 x 4096 channels = 32 MiB of
/// activations at a time, enough for the GEMM to run at full speed.
const TAIL_BAND_PIXELS: usize = 2048;

/// The DDColor network, ready for inference.
#[derive(Debug, Clone)]
pub struct DDColor {
    cfg: Config,
    identity: String,
    device: Device,
    dtype: DType,
    mean: Tensor, // [1, 3, 1, 1], ImageNet statistics stored in the checkpoint
    std: Tensor,
    encoder: ConvNext,
    decoder: PixelDecoder,
    color_decoder: MultiScaleColorDecoder,
    refine_net: Conv2d,
    /// `refine_net`'s weight split into the columns for the query maps `[O, Q]` and for the
    /// normalised input `[O, 3]`, and its bias `[O]` (see [`DDColor::forward`]).
    refine_q: Tensor,
    refine_x: Tensor,
    refine_b: Tensor,
    span: tracing::Span,
}

impl DDColor {
    /// Load a checkpoint file (`.pth`, `pytorch_model.bin` or safetensors), inferring the
    /// architecture from its shapes and the head count from a `config.json` beside it.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> std::result::Result<Self, LoadError> {
        Self::load_as(path, device, DType::F32)
    }

    /// [`DDColor::load`] with the weights and activations kept in `dtype` (f32, bf16 or f16;
    /// inputs and outputs stay f32).
    pub fn load_as(
        path: impl AsRef<Path>,
        device: &Device,
        dtype: DType,
    ) -> std::result::Result<Self, LoadError> {
        Self::load_known(path, device, dtype, None)
    }

    /// [`DDColor::load_as`] with the identity already known (recorded by an earlier load of
    /// the same, unchanged file: `batch::index`), so that the digest over every weight is not
    /// computed again.
    pub fn load_known(
        path: impl AsRef<Path>,
        device: &Device,
        dtype: DType,
        identity: Option<String>,
    ) -> std::result::Result<Self, LoadError> {
        let path = path.as_ref();
        // each tensor freed once its layer has its own form of it
        let ck = Checkpoint::open(path)?.consumed();
        let heads = config::heads_from_config_json(path)?.unwrap_or(config::DEFAULT_HEADS);
        let cfg = Config::infer(&ck, heads)?;
        Self::build(&ck, cfg, device, dtype, identity)
    }

    /// Build from tensors already read, with a known configuration.
    pub fn from_checkpoint(
        ck: &Checkpoint,
        cfg: Config,
        device: &Device,
    ) -> std::result::Result<Self, LoadError> {
        Self::from_checkpoint_as(ck, cfg, device, DType::F32)
    }

    /// [`DDColor::from_checkpoint`] in `dtype` (see [`DDColor::load_as`]). The identity, and so
    /// the cache keys, differ from the f32 model's: a bf16 result is a different result.
    pub fn from_checkpoint_as(
        ck: &Checkpoint,
        cfg: Config,
        device: &Device,
        dtype: DType,
    ) -> std::result::Result<Self, LoadError> {
        Self::build(ck, cfg, device, dtype, None)
    }

    /// Build the layers, and the identity unless it is `known`: the digest (a SHA-256 over
    /// every weight, one core's work) runs on its own thread while the layers are built.
    fn build(
        ck: &Checkpoint,
        cfg: Config,
        device: &Device,
        dtype: DType,
        known: Option<String>,
    ) -> std::result::Result<Self, LoadError> {
        if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(ck.tensor_err(candle_core::Error::Msg(format!(
                "DDColor runs in f32, bf16 or f16, not {dtype:?}"
            ))));
        }
        // (f32 keeps the identity it always had)
        let settings = match dtype {
            DType::F32 => format!("{cfg:?}"),
            other => format!("{cfg:?} dtype={}", other.as_str()),
        };
        let snapshot = known.is_none().then(|| ck.snapshot());
        std::thread::scope(|s| {
            let digest = snapshot.map(|list| s.spawn(|| ck.digest_of(list, &settings)));
            let model = Self::layers(ck, cfg, device, dtype);
            let identity = match (known, digest) {
                (Some(id), _) => Ok(id),
                (None, Some(d)) => d.join().expect("the digest does not panic"),
                (None, None) => unreachable!("spawned when not known"),
            };
            let mut model = model?;
            crate::alloc::return_freed_memory();
            model.identity = identity?;
            Ok(model)
        })
    }

    /// The layers of the model, its identity left empty.
    fn layers(
        ck: &Checkpoint,
        cfg: Config,
        device: &Device,
        dtype: DType,
    ) -> std::result::Result<Self, LoadError> {
        // bf16 on the CPU: activations in f32, the products' weights in bf16 (the kernels'
        // products round the activations to bf16 and accumulate in f32)
        let vb = if dtype == DType::BF16 && device.is_cpu() {
            ck.root_bf16_products()
        } else {
            ck.root_as(dtype)
        };
        let dec = vb.pp("decoder");
        let q = cfg.color_decoder.num_queries;
        let identity = String::new();
        // the output layer: f32 products in a bf16 model
        let refine_net = Conv2d::load_normed(
            &vb.pp("refine_net").pp(0).pp(0).f32_products(),
            q + 3,
            cfg.num_output_channels,
            1,
            true,
            None,
            device,
        )?;
        let e = |e| ck.tensor_err(e);
        let w = refine_net
            .weight_matrix()
            .expect("refine_net is 1x1")
            .clone();
        let refine_q = w.narrow(1, 0, q).and_then(|t| t.contiguous()).map_err(e)?;
        let refine_x = w.narrow(1, q, 3).and_then(|t| t.contiguous()).map_err(e)?;
        let refine_b = refine_net.bias().expect("refine_net has a bias").clone();
        Ok(Self {
            cfg,
            identity,
            device: device.clone(),
            dtype,
            mean: to_dev(&vb, vb.get("mean", &[1, 3, 1, 1])?, device)?,
            std: to_dev(&vb, vb.get("std", &[1, 3, 1, 1])?, device)?,
            encoder: ConvNext::load(&vb.pp("encoder").pp("arch"), &cfg.encoder, device)?,
            decoder: PixelDecoder::load(&dec, cfg.encoder.dims, cfg.nf, device)?,
            // its memory side in bf16 in a bf16 model, its query side f32: measured, see
            // kernels/bf16/mod.rs
            color_decoder: MultiScaleColorDecoder::load(
                &dec.pp("color_decoder"),
                &cfg.color_decoder,
                device,
            )?,
            refine_net,
            refine_q,
            refine_x,
            refine_b,
            span: tracing::span!(tracing::Level::TRACE, "ddcolor"),
        })
    }

    /// The architecture `cfg` with random weights (timing without a checkpoint).
    pub fn random(cfg: Config, device: &Device) -> std::result::Result<Self, LoadError> {
        Self::random_as(cfg, device, DType::F32)
    }

    /// [`DDColor::random`] in `dtype`.
    pub fn random_as(
        cfg: Config,
        device: &Device,
        dtype: DType,
    ) -> std::result::Result<Self, LoadError> {
        Self::from_checkpoint_as(&Checkpoint::random(), cfg, device, dtype)
    }

    /// SHA-256 (hex) of the weights and configuration: two models with the same identity give
    /// the same output for the same input. Cache keys are built from it.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// What the model computes in (inputs and outputs are f32); bf16 on the CPU keeps the
    /// activations in f32 and runs the products in bf16.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The checked input in the model's dtype, normalised with the checkpoint's statistics.
    fn normalised_input(&self, x: &Tensor) -> Result<Tensor> {
        Self::check_input(x)?;
        x.to_dtype(self.mean.dtype())?
            .broadcast_sub(&self.mean)?
            .broadcast_div(&self.std)
    }

    fn check_input(x: &Tensor) -> Result<()> {
        let (_, c, h, w) = x.dims4()?;
        if c != 3 || h % 32 != 0 || w % 32 != 0 || h == 0 || w == 0 {
            candle_core::bail!(
                "DDColor takes [B, 3, H, W] with H and W positive multiples of 32, got {:?}",
                x.dims()
            )
        }
        Ok(())
    }

    /// `[B, 3, H, W]` in `[0, 1]` to ab `[B, 2, H, W]`.
    ///
    /// Everything after the last ReLU of `last_shuf` is linear (pixel shuffle, pad, blur, the
    /// `bqc,bchw->bqhw` product and `refine_net`), so it is computed in the cheapest order:
    /// `refine_net`'s query columns are applied to the colour embeddings first
    /// (`[O, Q] x [B, Q, C]`), that `[B, O, C]` map contracts the pre-shuffle feature, and
    /// only the O = 2 output channels are shuffled and blurred. The Q x H x W query maps and
    /// the C x H x W image feature are never formed. [`DDColor::forward_traced`] computes the
    /// upstream order and matches this to float rounding.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_staged(x, &mut |_| {})
    }

    /// [`DDColor::forward`], calling `stage` as each of its parts finishes: `"encoder"`,
    /// `"pixel decoder"`, `"colour decoder"`, `"tail"` (for timing; `examples/stage_times.rs`).
    pub fn forward_staged(
        &self,
        x: &Tensor,
        stage: &mut dyn FnMut(&'static str),
    ) -> Result<Tensor> {
        let _enter = self.span.enter();
        let x = self.normalised_input(x)?;
        let hooks = self.encoder.forward(&x)?;
        stage("encoder");
        let scales = self.decoder.scales(&hooks)?;
        stage("pixel decoder");
        let emb = self.color_decoder.color_embeddings(&scales)?; // [B, Q, C]
        stage("colour decoder");
        let (b, _, _) = emb.dims3()?;
        let o = self.cfg.num_output_channels;
        // A = W_q @ emb: [B, O, C]
        let a = self.refine_q.broadcast_left(b)?.matmul(&emb)?;
        // relu(conv(out2)) has C*r*r channels, channel c*r*r + s holding sub-pixel s of
        // channel c. It is computed a band of pixels at a time and contracted with A at once,
        // so the full [C*r*r, h, w] feature (268 MB for the tiny model at 512) never exists.
        let r = self.decoder.last_shuf.scale();
        let s = r * r;
        let (_, _, h, w) = scales[2].dims4()?;
        let (wt, bias) = self.decoder.last_shuf.weight_t_and_bias()?;
        let mut per_image = Vec::with_capacity(b);
        for bi in 0..b {
            // [h*w, C_in], a transposed view: the products read it with its strides
            let xt = scales[2].get(bi)?.flatten_from(1)?.t()?;
            let ab = a.get(bi)?; // [O, C]
            let mut bands = Vec::new();
            let band = TAIL_BAND_PIXELS.max(1);
            let mut p0 = 0;
            while p0 < h * w {
                let n = band.min(h * w - p0);
                // the conv's bias and ReLU are applied inside the contraction, as it reads
                let y = gemm::matmul_right(&xt.narrow(0, p0, n)?, wt, Channels::Columns, None)?;
                bands.push(tail::subpixel_contract(&y, &bias, &ab, s)?); // [n, O*S]
                p0 += n;
            }
            per_image.push(Tensor::cat(&bands, 0)?.t()?.reshape((o * s, h, w))?);
        }
        let y = Tensor::stack(&per_image, 0)?; // [B, O*S, h, w]
        let img = tail::shuffle_blur(&y, r)?; // [B, O, H, W]
        let (hh, ww) = (h * r, w * r);
        let xt = self
            .refine_x
            .broadcast_left(b)?
            .matmul(&x.reshape((b, 3, hh * ww))?)?
            .reshape((b, o, hh, ww))?;
        let out = channel_op(
            &(img + xt)?,
            None,
            &self.refine_b,
            1,
            Act::Identity,
            Act::Identity,
        )?
        .to_dtype(DType::F32)?;
        stage("tail");
        Ok(out)
    }

    /// [`DDColor::forward`], handing each intermediate to `trace` under the name the golden
    /// files use (`encoder.norm0`, `decoder.layers.0`, `decoder.last_shuf`, ...).
    pub fn forward_traced(
        &self,
        x: &Tensor,
        trace: &mut dyn FnMut(&str, &Tensor) -> Result<()>,
    ) -> Result<Tensor> {
        let _enter = self.span.enter();
        let x = self.normalised_input(x)?;
        let hooks = self.encoder.forward(&x)?;
        for (i, t) in hooks.iter().enumerate() {
            trace(&format!("encoder.norm{i}"), t)?;
        }
        let d = &self.decoder;
        let out0 = d.layers[0].forward(&hooks[3], &hooks[2])?;
        trace("decoder.layers.0", &out0)?;
        let out1 = d.layers[1].forward(&out0, &hooks[1])?;
        trace("decoder.layers.1", &out1)?;
        let out2 = d.layers[2].forward(&out1, &hooks[0])?;
        trace("decoder.layers.2", &out2)?;
        let img = d.last_shuf.forward(&out2)?;
        let scales = [out0, out1, out2];
        trace("decoder.last_shuf", &img)?;
        let out = self.color_decoder.forward(&scales, &img)?;
        trace("decoder.color_decoder", &out)?;
        // refine_net(cat([out_feat, x], dim=1))
        self.refine_net
            .forward(&Tensor::cat(&[&out, &x], 1)?)?
            .to_dtype(DType::F32)
    }
}
