//! The shape of a DDColor network: presets for the released checkpoints, and inference of every
//! width, depth and count from the tensor shapes of a checkpoint (the head count, which shapes
//! cannot tell, comes from a Hugging Face `config.json` beside the weights, else 8).
use std::path::Path;

use super::checkpoint::{Checkpoint, LoadError};
use super::color_decoder::ColorDecoderConfig;
use super::convnext::ConvNextConfig;

/// Attention heads in every released model.
pub const DEFAULT_HEADS: usize = 8;

/// The key every DDColor checkpoint has; its absence means "not DDColor at all".
const ANCHOR: &str = "encoder.arch.downsample_layers.0.0.weight";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub encoder: ConvNextConfig,
    /// Pixel-decoder width (`nf`).
    pub nf: usize,
    pub color_decoder: ColorDecoderConfig,
    /// 2 (ab) in every released model.
    pub num_output_channels: usize,
}

impl Config {
    fn released(encoder: ConvNextConfig) -> Self {
        Self {
            encoder,
            nf: 512,
            color_decoder: ColorDecoderConfig {
                in_channels: [512, 512, 256],
                hidden_dim: 256,
                num_heads: DEFAULT_HEADS,
                dim_feedforward: 2048,
                num_queries: 100,
                dec_layers: 9,
                num_scales: 3,
                color_embed_dim: 256,
            },
            num_output_channels: 2,
        }
    }

    /// `ddcolor_paper_tiny`: ConvNeXt-T encoder.
    pub fn paper_tiny() -> Self {
        Self::released(ConvNextConfig::TINY)
    }

    /// `ddcolor_paper`, `ddcolor_modelscope`, `ddcolor_artistic`: ConvNeXt-L encoder.
    pub fn large() -> Self {
        Self::released(ConvNextConfig::LARGE)
    }

    /// Read the architecture off the checkpoint's tensor shapes.
    pub fn infer(ck: &Checkpoint, num_heads: usize) -> Result<Self, LoadError> {
        if !ck.contains(ANCHOR) {
            if ck.keys().any(|k| k.starts_with("encoder.arch.")) {
                return Err(ck.missing(ANCHOR));
            }
            let mut sample: Vec<&str> = ck.keys().collect();
            sample.sort();
            sample.truncate(3);
            return Err(LoadError::NotDdcolor {
                path: ck.path().to_owned(),
                reason: format!(
                    "it has no `{ANCHOR}` ({} tensors, such as {})",
                    ck.len(),
                    sample
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        let dim0 = |key: &str| -> Result<usize, LoadError> {
            ck.require_shape(key)?
                .first()
                .copied()
                .ok_or_else(|| ck.invalid(format!("`{key}` is a scalar")))
        };
        let shape2 = |key: &str| -> Result<[usize; 2], LoadError> {
            match ck.require_shape(key)? {
                [a, b, ..] => Ok([*a, *b]),
                s => Err(ck.invalid(format!("`{key}` has shape {s:?}, rank >= 2 expected"))),
            }
        };
        let count = |f: &dyn Fn(usize) -> String| (0..).take_while(|&i| ck.contains(&f(i))).count();

        let mut dims = [0; 4];
        let mut depths = [0; 4];
        for i in 0..4 {
            dims[i] = if i == 0 {
                dim0(ANCHOR)?
            } else {
                dim0(&format!("encoder.arch.downsample_layers.{i}.1.weight"))?
            };
            depths[i] = count(&|j| format!("encoder.arch.stages.{i}.{j}.dwconv.weight"));
            if depths[i] == 0 {
                return Err(ck.missing(&format!("encoder.arch.stages.{i}.0.dwconv.weight")));
            }
        }
        // the pixel decoder's 3x3 conv may be spectral-normed, weight-normed or plain
        let conv = "decoder.layers.0.conv.0";
        let nf_key = ["weight_orig", "weight_v", "weight"]
            .iter()
            .map(|s| format!("{conv}.{s}"))
            .find(|k| ck.contains(k))
            .unwrap_or_else(|| format!("{conv}.weight_orig"));
        let nf = dim0(&nf_key)?;

        let cd = "decoder.color_decoder";
        let [num_queries, hidden_dim] = shape2(&format!("{cd}.query_feat.weight"))?;
        let dec_layers =
            count(&|i| format!("{cd}.transformer_self_attention_layers.{i}.norm.weight"));
        if dec_layers == 0 {
            return Err(ck.missing(&format!(
                "{cd}.transformer_self_attention_layers.0.norm.weight"
            )));
        }
        let dim_feedforward = dim0(&format!("{cd}.transformer_ffn_layers.0.linear1.weight"))?;
        let num_scales = dim0(&format!("{cd}.level_embed.weight"))?;
        if num_scales != 3 {
            return Err(ck.invalid(format!(
                "{num_scales} decoder scales; DDColor's pixel decoder feeds exactly 3"
            )));
        }
        let mut in_channels = [0; 3];
        for (i, c) in in_channels.iter_mut().enumerate() {
            *c = shape2(&format!("{cd}.input_proj.{i}.weight"))?[1];
        }
        let color_embed_dim = dim0(&format!("{cd}.color_embed.layers.2.weight"))?;
        let refine = ["weight_orig", "weight_v", "weight"]
            .iter()
            .map(|s| format!("refine_net.0.0.{s}"))
            .find(|k| ck.contains(k))
            .unwrap_or_else(|| "refine_net.0.0.weight_orig".into());
        let num_output_channels = dim0(&refine)?;
        if num_heads == 0 || hidden_dim % num_heads != 0 {
            return Err(ck.invalid(format!(
                "hidden size {hidden_dim} cannot be split into {num_heads} attention heads"
            )));
        }
        Ok(Self {
            encoder: ConvNextConfig { dims, depths },
            nf,
            color_decoder: ColorDecoderConfig {
                in_channels,
                hidden_dim,
                num_heads,
                dim_feedforward,
                num_queries,
                dec_layers,
                num_scales,
                color_embed_dim,
            },
            num_output_channels,
        })
    }

    /// A short human name: `paper_tiny`-shaped, `large`-shaped or custom.
    pub fn variant(&self) -> &'static str {
        let mut c = *self;
        c.color_decoder.num_heads = DEFAULT_HEADS;
        if c == Self::paper_tiny() {
            "tiny"
        } else if c == Self::large() {
            "large"
        } else {
            "custom"
        }
    }
}

/// The head count from a Hugging Face `config.json` beside the weights, if it names one.
///
/// The key is looked for at any depth under the usual spellings (`nheads`, `num_heads`,
/// `n_heads`, `num_attention_heads`).
pub fn heads_from_config_json(weights: &Path) -> Result<Option<usize>, LoadError> {
    let Some(dir) = weights.parent() else {
        return Ok(None);
    };
    let path = dir.join("config.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LoadError::Io { path, source }),
    };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| LoadError::Invalid {
        path: path.clone(),
        reason: format!("not valid JSON: {e}"),
    })?;
    fn find(v: &serde_json::Value) -> Option<u64> {
        match v {
            serde_json::Value::Object(m) => {
                for k in ["nheads", "num_heads", "n_heads", "num_attention_heads"] {
                    if let Some(n) = m.get(k).and_then(|v| v.as_u64()) {
                        return Some(n);
                    }
                }
                m.values().find_map(find)
            }
            _ => None,
        }
    }
    Ok(find(&json).map(|n| n as usize))
}
