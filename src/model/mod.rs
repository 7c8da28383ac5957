//! DDColor in candle, one Rust struct per PyTorch module so that a checkpoint key leads to its
//! line: `encoder.arch` ([`convnext`]), `decoder.layers` / `decoder.last_shuf` ([`unet`]),
//! `decoder.color_decoder` ([`color_decoder`]) and `refine_net` (here).
//!
//! Input: `[B, 3, H, W]` in `[0, 1]` (gray replicated to RGB), H and W multiples of 32.
//! Output: `[B, 2, H, W]`, the predicted a and b channels in Lab units.
pub mod color_decoder;
pub mod config;
pub mod convnext;
pub mod layers;
pub mod ops;
pub mod unet;
pub mod weights;

use std::path::Path;

use candle_core::{Device, Result, Tensor};

pub use config::Config;
pub use weights::{Checkpoint, LoadError};

use color_decoder::MultiScaleColorDecoder;
use convnext::ConvNext;
use layers::{to_dev, Conv2d};
use unet::PixelDecoder;

/// The DDColor network, ready for inference.
#[derive(Debug, Clone)]
pub struct DDColor {
    cfg: Config,
    identity: String,
    device: Device,
    mean: Tensor, // [1, 3, 1, 1], ImageNet statistics stored in the checkpoint
    std: Tensor,
    encoder: ConvNext,
    decoder: PixelDecoder,
    color_decoder: MultiScaleColorDecoder,
    refine_net: Conv2d,
}

impl DDColor {
    /// Load a checkpoint file (`.pth`, `pytorch_model.bin` or safetensors), inferring the
    /// architecture from its shapes and the head count from a `config.json` beside it.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> std::result::Result<Self, LoadError> {
        let path = path.as_ref();
        let ck = Checkpoint::open(path)?;
        let heads = config::heads_from_config_json(path)?.unwrap_or(config::DEFAULT_HEADS);
        let cfg = Config::infer(&ck, heads)?;
        Self::from_checkpoint(&ck, cfg, device)
    }

    /// Build from tensors already read, with a known configuration.
    pub fn from_checkpoint(
        ck: &Checkpoint,
        cfg: Config,
        device: &Device,
    ) -> std::result::Result<Self, LoadError> {
        let vb = ck.root();
        let dec = vb.pp("decoder");
        let q = cfg.color_decoder.num_queries;
        let identity = ck.digest(&format!("{cfg:?}"))?;
        Ok(Self {
            cfg,
            identity,
            device: device.clone(),
            mean: to_dev(&vb, vb.get("mean", &[1, 3, 1, 1])?, device)?,
            std: to_dev(&vb, vb.get("std", &[1, 3, 1, 1])?, device)?,
            encoder: ConvNext::load(&vb.pp("encoder").pp("arch"), &cfg.encoder, device)?,
            decoder: PixelDecoder::load(&dec, cfg.encoder.dims, cfg.nf, device)?,
            color_decoder: MultiScaleColorDecoder::load(
                &dec.pp("color_decoder"),
                &cfg.color_decoder,
                device,
            )?,
            refine_net: Conv2d::load_normed(
                &vb.pp("refine_net").pp(0).pp(0),
                q + 3,
                cfg.num_output_channels,
                1,
                true,
                None,
                device,
            )?,
        })
    }

    /// The architecture `cfg` with random weights (timing without a checkpoint).
    pub fn random(cfg: Config, device: &Device) -> std::result::Result<Self, LoadError> {
        Self::from_checkpoint(&Checkpoint::random(), cfg, device)
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

    /// `[B, 3, H, W]` in `[0, 1]` to ab `[B, 2, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_traced(x, &mut |_, _| Ok(()))
    }

    /// [`DDColor::forward`], handing each intermediate to `trace` under the name the golden
    /// files use (`encoder.norm0`, `decoder.layers.0`, `decoder.last_shuf`, ...).
    pub fn forward_traced(
        &self,
        x: &Tensor,
        trace: &mut dyn FnMut(&str, &Tensor) -> Result<()>,
    ) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        if c != 3 || h % 32 != 0 || w % 32 != 0 || h == 0 || w == 0 {
            candle_core::bail!(
                "DDColor takes [B, 3, H, W] with H and W positive multiples of 32, got {:?}",
                x.dims()
            )
        }
        let x = x.broadcast_sub(&self.mean)?.broadcast_div(&self.std)?;
        let hooks = self.encoder.forward(&x)?;
        for (i, t) in hooks.iter().enumerate() {
            trace(&format!("encoder.norm{i}"), t)?;
        }
        let (scales, img) = self.decoder.forward(&hooks)?;
        for (i, t) in scales.iter().enumerate() {
            trace(&format!("decoder.layers.{i}"), t)?;
        }
        trace("decoder.last_shuf", &img)?;
        let out = self.color_decoder.forward(&scales, &img)?;
        trace("decoder.color_decoder", &out)?;
        // refine_net(cat([out_feat, x], dim=1))
        self.refine_net.forward(&Tensor::cat(&[&out, &x], 1)?)
    }
}
