//! `decoder.color_decoder`: the multi-scale colour decoder. Learnable colour queries attend to
//! the three pixel-decoder scales in turn (cross-attention -> self-attention -> FFN, post-norm),
//! then each query's colour embedding is dotted with the full-resolution image feature.
//!
//! PyTorch keeps sequences first (`[L, B, C]`); here they are batch first (`[B, L, C]`), the
//! same arithmetic.
use super::ops::softmax_last_dim;
use candle_core::{Device, Result, Tensor};

use super::layers::{to_dev, Conv2d, LayerNorm, Linear, LoadResult};
use super::weights::Vb;

/// `nn.LayerNorm`'s default epsilon, used by every norm of the colour decoder.
const LN_EPS: f64 = 1e-5;

/// The colour decoder's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColorDecoderConfig {
    /// Channels of the three pixel-decoder features it reads (`[nf, nf, nf/2]` upstream).
    pub in_channels: [usize; 3],
    pub hidden_dim: usize,
    pub num_heads: usize,
    pub dim_feedforward: usize,
    pub num_queries: usize,
    pub dec_layers: usize,
    pub num_scales: usize,
    /// Width of the colour embedding, equal to the image feature's channels (`nf/2`).
    pub color_embed_dim: usize,
}

/// `nn.MultiheadAttention` (batch first, no masks, no dropout).
#[derive(Debug, Clone)]
struct MultiheadAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl MultiheadAttention {
    fn load(vb: &Vb, c: usize, heads: usize, dev: &Device) -> LoadResult<Self> {
        let w = vb.get("in_proj_weight", &[3 * c, c])?;
        let b = vb.get("in_proj_bias", &[3 * c])?;
        let e = |e| vb.checkpoint().tensor_err(e);
        let part = |i: usize| -> LoadResult<Linear> {
            let wi = w.narrow(0, i * c, c).map_err(e)?;
            let bi = b.narrow(0, i * c, c).map_err(e)?;
            Linear::from_weight(vb, &wi, bi, dev)
        };
        Ok(Self {
            q: part(0)?,
            k: part(1)?,
            v: part(2)?,
            out: Linear::load(&vb.pp("out_proj"), c, c, dev)?,
            heads,
        })
    }

    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l, c) = x.dims3()?;
        x.reshape((b, l, self.heads, c / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// `attn(query, key, value)` with `[B, Lq, C]`, `[B, Lk, C]`, `[B, Lk, C]`.
    fn forward(&self, query: &Tensor, key: &Tensor, value: &Tensor) -> Result<Tensor> {
        let (b, lq, c) = query.dims3()?;
        let scale = 1.0 / ((c / self.heads) as f64).sqrt();
        let q = self.split_heads(&(self.q.forward(query)? * scale)?)?;
        let k = self.split_heads(&self.k.forward(key)?)?;
        let v = self.split_heads(&self.v.forward(value)?)?;
        let att = softmax_last_dim(&q.matmul(&k.t()?)?)?;
        let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b, lq, c))?;
        self.out.forward(&y)
    }
}

/// `CrossAttentionLayer` (post-norm): `norm(tgt + attn(tgt + query_pos, memory + pos, memory))`.
#[derive(Debug, Clone)]
struct CrossAttentionLayer {
    attn: MultiheadAttention,
    norm: LayerNorm,
}

impl CrossAttentionLayer {
    fn forward(
        &self,
        tgt: &Tensor,
        memory: &Tensor,
        pos: &Tensor,
        qpos: &Tensor,
    ) -> Result<Tensor> {
        let key = memory.broadcast_add(pos)?;
        let y = self.attn.forward(&(tgt + qpos)?, &key, memory)?;
        self.norm.forward(&(tgt + y)?)
    }
}

/// `SelfAttentionLayer` (post-norm): `norm(tgt + attn(tgt + query_pos, tgt + query_pos, tgt))`.
#[derive(Debug, Clone)]
struct SelfAttentionLayer {
    attn: MultiheadAttention,
    norm: LayerNorm,
}

impl SelfAttentionLayer {
    fn forward(&self, tgt: &Tensor, qpos: &Tensor) -> Result<Tensor> {
        let qk = (tgt + qpos)?;
        let y = self.attn.forward(&qk, &qk, tgt)?;
        self.norm.forward(&(tgt + y)?)
    }
}

/// `FFNLayer` (post-norm): `norm(tgt + linear2(relu(linear1(tgt))))`.
#[derive(Debug, Clone)]
struct FfnLayer {
    linear1: Linear,
    linear2: Linear,
    norm: LayerNorm,
}

impl FfnLayer {
    fn forward(&self, tgt: &Tensor) -> Result<Tensor> {
        let y = self.linear2.forward(&self.linear1.forward(tgt)?.relu()?)?;
        self.norm.forward(&(tgt + y)?)
    }
}

/// `PositionEmbeddingSine(hidden/2, normalize=True)` for an `h x w` grid, as `[h*w, hidden]`
/// (y features first, then x; sin and cos interleaved), identical for every image of a batch.
pub fn position_embedding_sine(h: usize, w: usize, hidden: usize) -> Vec<f32> {
    let npf = hidden / 2;
    let scale = 2.0 * std::f64::consts::PI;
    let eps = 1e-6;
    let dim_t: Vec<f64> = (0..npf)
        .map(|i| 10000f64.powf(2.0 * (i / 2) as f64 / npf as f64))
        .collect();
    let mut out = vec![0f32; h * w * hidden];
    for y in 0..h {
        let ye = (y + 1) as f64 / (h as f64 + eps) * scale;
        for x in 0..w {
            let xe = (x + 1) as f64 / (w as f64 + eps) * scale;
            let row = &mut out[(y * w + x) * hidden..][..hidden];
            for (i, &d) in dim_t.iter().enumerate() {
                let (py, px) = (ye / d, xe / d);
                let (vy, vx) = if i % 2 == 0 {
                    (py.sin(), px.sin())
                } else {
                    (py.cos(), px.cos())
                };
                row[i] = vy as f32;
                row[npf + i] = vx as f32;
            }
        }
    }
    out
}

/// `MultiScaleColorDecoder`.
#[derive(Debug, Clone)]
pub struct MultiScaleColorDecoder {
    cfg: ColorDecoderConfig,
    cross: Vec<CrossAttentionLayer>,
    selfa: Vec<SelfAttentionLayer>,
    ffn: Vec<FfnLayer>,
    decoder_norm: LayerNorm,
    query_feat: Tensor,  // [Q, C]
    query_embed: Tensor, // [Q, C]
    level_embed: Vec<Tensor>,
    input_proj: Vec<Conv2d>,
    color_embed: [Linear; 3],
}

impl MultiScaleColorDecoder {
    pub fn load(vb: &Vb, cfg: &ColorDecoderConfig, dev: &Device) -> LoadResult<Self> {
        let c = cfg.hidden_dim;
        let mut cross = Vec::with_capacity(cfg.dec_layers);
        let mut selfa = Vec::with_capacity(cfg.dec_layers);
        let mut ffn = Vec::with_capacity(cfg.dec_layers);
        for i in 0..cfg.dec_layers {
            let l = vb.pp("transformer_cross_attention_layers").pp(i);
            cross.push(CrossAttentionLayer {
                attn: MultiheadAttention::load(&l.pp("multihead_attn"), c, cfg.num_heads, dev)?,
                norm: LayerNorm::load(&l.pp("norm"), c, LN_EPS, dev)?,
            });
            let l = vb.pp("transformer_self_attention_layers").pp(i);
            selfa.push(SelfAttentionLayer {
                attn: MultiheadAttention::load(&l.pp("self_attn"), c, cfg.num_heads, dev)?,
                norm: LayerNorm::load(&l.pp("norm"), c, LN_EPS, dev)?,
            });
            let l = vb.pp("transformer_ffn_layers").pp(i);
            ffn.push(FfnLayer {
                linear1: Linear::load(&l.pp("linear1"), c, cfg.dim_feedforward, dev)?,
                linear2: Linear::load(&l.pp("linear2"), cfg.dim_feedforward, c, dev)?,
                norm: LayerNorm::load(&l.pp("norm"), c, LN_EPS, dev)?,
            });
        }
        let q = cfg.num_queries;
        let level = vb.pp("level_embed").get("weight", &[cfg.num_scales, c])?;
        let level_embed = (0..cfg.num_scales)
            .map(|i| {
                let t = level
                    .get(i)
                    .and_then(|t| t.reshape((1, 1, c)))
                    .map_err(|e| vb.checkpoint().tensor_err(e))?;
                to_dev(vb, t, dev)
            })
            .collect::<LoadResult<Vec<_>>>()?;
        let input_proj = (0..cfg.num_scales)
            .map(|i| {
                Conv2d::load(
                    &vb.pp("input_proj").pp(i),
                    cfg.in_channels[i],
                    c,
                    1,
                    1,
                    0,
                    dev,
                )
            })
            .collect::<LoadResult<Vec<_>>>()?;
        let ce = vb.pp("color_embed").pp("layers");
        Ok(Self {
            cfg: *cfg,
            cross,
            selfa,
            ffn,
            decoder_norm: LayerNorm::load(&vb.pp("decoder_norm"), c, LN_EPS, dev)?,
            query_feat: to_dev(vb, vb.pp("query_feat").get("weight", &[q, c])?, dev)?,
            query_embed: to_dev(vb, vb.pp("query_embed").get("weight", &[q, c])?, dev)?,
            level_embed,
            input_proj,
            color_embed: [
                Linear::load(&ce.pp(0), c, c, dev)?,
                Linear::load(&ce.pp(1), c, c, dev)?,
                Linear::load(&ce.pp(2), c, cfg.color_embed_dim, dev)?,
            ],
        })
    }

    /// The per-query colour embeddings `[B, Q, color_embed_dim]` for the three scales.
    pub fn color_embeddings(&self, scales: &[Tensor; 3]) -> Result<Tensor> {
        let c = self.cfg.hidden_dim;
        let b = scales[0].dim(0)?;
        let mut src = Vec::with_capacity(3);
        let mut pos = Vec::with_capacity(3);
        for (i, x) in scales.iter().enumerate() {
            let (_, _, h, w) = x.dims4()?;
            let pe = position_embedding_sine(h, w, c);
            pos.push(Tensor::from_vec(pe, (1, h * w, c), x.device())?.to_dtype(x.dtype())?);
            // input_proj(x).flatten(2) + level_embed[i], as [B, HW, C]
            let s = self.input_proj[i]
                .forward(x)?
                .reshape((b, c, h * w))?
                .transpose(1, 2)?
                .broadcast_add(&self.level_embed[i])?
                .contiguous()?;
            src.push(s);
        }
        let q = self.cfg.num_queries;
        let qpos = self
            .query_embed
            .unsqueeze(0)?
            .broadcast_as((b, q, c))?
            .contiguous()?;
        let mut out = self
            .query_feat
            .unsqueeze(0)?
            .broadcast_as((b, q, c))?
            .contiguous()?;
        for i in 0..self.cfg.dec_layers {
            let level = i % self.cfg.num_scales;
            out = self.cross[i].forward(&out, &src[level], &pos[level], &qpos)?;
            out = self.selfa[i].forward(&out, &qpos)?;
            out = self.ffn[i].forward(&out)?;
        }
        let mut e = self.decoder_norm.forward(&out)?;
        for (i, layer) in self.color_embed.iter().enumerate() {
            e = layer.forward(&e)?;
            if i < 2 {
                e = e.relu()?;
            }
        }
        Ok(e)
    }

    /// `einsum("bqc,bchw->bqhw", color_embed, img_features)`.
    pub fn forward(&self, scales: &[Tensor; 3], img: &Tensor) -> Result<Tensor> {
        let e = self.color_embeddings(scales)?;
        let (b, ce, h, w) = img.dims4()?;
        e.matmul(&img.reshape((b, ce, h * w))?)?
            .reshape((b, self.cfg.num_queries, h, w))
    }
}
