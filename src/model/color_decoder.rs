//! `decoder.color_decoder`: the multi-scale colour decoder. Learnable colour queries attend to
//! the three pixel-decoder scales in turn (cross-attention -> self-attention -> FFN, post-norm),
//! then each query's colour embedding is dotted with the full-resolution image feature.
//!
//! PyTorch keeps sequences first (`[L, B, C]`); here they are batch first (`[B, L, C]`), the
//! same arithmetic.
use candle_core::{Device, Result, Tensor};

use super::checkpoint::Vb;
use super::layers::{to_dev, Conv2d, LayerNorm, Linear, LoadResult};
use crate::kernels::attention::attention_channels_first;
use crate::kernels::norm::softmax_last_dim;

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
    span: tracing::Span,
}

/// `in_proj_weight`/`in_proj_bias` split into the q, k and v parts (`[C, C]`, `[C]`, on the CPU).
fn in_proj_parts(vb: &Vb, c: usize) -> LoadResult<[(Tensor, Tensor); 3]> {
    let w = vb.get("in_proj_weight", &[3 * c, c])?;
    let b = vb.get("in_proj_bias", &[3 * c])?;
    let e = |e| vb.checkpoint().tensor_err(e);
    let part = |i: usize| -> LoadResult<(Tensor, Tensor)> {
        Ok((
            w.narrow(0, i * c, c).map_err(e)?,
            b.narrow(0, i * c, c).map_err(e)?,
        ))
    };
    Ok([part(0)?, part(1)?, part(2)?])
}

impl MultiheadAttention {
    fn load(vb: &Vb, c: usize, heads: usize, dev: &Device) -> LoadResult<Self> {
        let [q, k, v] = in_proj_parts(vb, c)?;
        let lin = |(w, b): (Tensor, Tensor)| Linear::from_weight(vb, &w, b, dev);
        Ok(Self {
            q: lin(q)?,
            k: lin(k)?,
            v: lin(v)?,
            out: Linear::load(&vb.pp("out_proj"), c, c, dev)?,
            heads,
            span: tracing::span!(tracing::Level::TRACE, "multihead-attention"),
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
        let _enter = self.span.enter();
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
///
/// The memory (a pixel-decoder scale, up to 16k tokens) stays channels first, `[B, C, L]`, as
/// the 1x1 `input_proj` produces it: the key and value projections are `W [C, C] x [C, L]`,
/// whose `[C, L]` results split into heads as contiguous `[heads, C/heads, L]` blocks. The
/// scores are `q_h [Lq, d] x k_h [d, L]` and the output `att [Lq, L] x v_h^T`, so no
/// `[L, C]` tensor is ever transposed or copied (the query side has only `Lq` = 100 rows).
#[derive(Debug, Clone)]
struct CrossAttentionLayer {
    q: Linear,
    k: Conv2d, // 1x1 on [B, C, L, 1]
    v: Conv2d,
    out: Linear,
    heads: usize,
    norm: LayerNorm,
    span: tracing::Span,
}

impl CrossAttentionLayer {
    fn load(vb: &Vb, c: usize, heads: usize, dev: &Device) -> LoadResult<Self> {
        let a = vb.pp("multihead_attn");
        let [q, k, v] = in_proj_parts(&a, c)?;
        let conv = |(w, b): (Tensor, Tensor), vb: &Vb| {
            let w = w
                .reshape((c, c, 1, 1))
                .map_err(|e| a.checkpoint().tensor_err(e))?;
            Conv2d::from_parts(vb, w, Some(b), 1, 0, dev)
        };
        // the memory side (k, v: a product per pixel) as the model's products are; the query
        // side in f32 (see MultiScaleColorDecoder::load)
        let f = a.f32_products();
        Ok(Self {
            q: Linear::from_weight(&f, &q.0, q.1, dev)?,
            k: conv(k, &a)?,
            v: conv(v, &a)?,
            out: Linear::load(&f.pp("out_proj"), c, c, dev)?,
            heads,
            norm: LayerNorm::load(&vb.pp("norm"), c, LN_EPS, dev)?,
            span: tracing::span!(tracing::Level::TRACE, "cross-attention-layer"),
        })
    }

    /// `tgt`, `qpos`: `[B, Lq, C]`; `key` (memory + pos) and `value` (memory): `[B, C, L]`.
    fn forward(&self, tgt: &Tensor, key: &Tensor, value: &Tensor, qpos: &Tensor) -> Result<Tensor> {
        let _enter = self.span.enter();
        let (b, lq, c) = tgt.dims3()?;
        let l = key.dim(2)?;
        let (nh, d) = (self.heads, c / self.heads);
        let scale = 1.0 / (d as f64).sqrt();
        let q = (self.q.forward(&(tgt + qpos)?)? * scale)?
            .reshape((b, lq, nh, d))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * nh, lq, d))?;
        let project = |conv: &Conv2d, x: &Tensor| -> Result<Tensor> {
            conv.forward(&x.reshape((b, c, l, 1))?)?
                .reshape((b * nh, d, l))
        };
        let k = project(&self.k, key)?;
        let v = project(&self.v, value)?;
        let y = attention_channels_first(&q, &k, &v)? // [B*nh, Lq, d]
            .reshape((b, nh, lq, d))?
            .transpose(1, 2)?
            .reshape((b, lq, c))?;
        let y = self.out.forward(&y)?;
        self.norm.forward(&(tgt + y)?)
    }
}

/// `SelfAttentionLayer` (post-norm): `norm(tgt + attn(tgt + query_pos, tgt + query_pos, tgt))`.
#[derive(Debug, Clone)]
struct SelfAttentionLayer {
    attn: MultiheadAttention,
    norm: LayerNorm,
    span: tracing::Span,
}

impl SelfAttentionLayer {
    fn forward(&self, tgt: &Tensor, qpos: &Tensor) -> Result<Tensor> {
        let _enter = self.span.enter();
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
    span: tracing::Span,
}

impl FfnLayer {
    fn forward(&self, tgt: &Tensor) -> Result<Tensor> {
        let _enter = self.span.enter();
        let y = self.linear2.forward(&self.linear1.forward(tgt)?.relu()?)?;
        self.norm.forward(&(tgt + y)?)
    }
}

/// `PositionEmbeddingSine(hidden/2, normalize=True)` for an `h x w` grid, channels first
/// (`[hidden, h*w]`, identical for every image of a batch): channels `0..hidden/2` depend on the
/// row only, the rest on the column only (sin and cos interleaved in each half), so each of the
/// `h + w` distinct feature vectors is computed once and broadcast along its line.
pub fn position_embedding_sine(h: usize, w: usize, hidden: usize) -> Vec<f32> {
    let npf = hidden / 2;
    let scale = 2.0 * std::f64::consts::PI;
    let eps = 1e-6;
    let dim_t: Vec<f64> = (0..npf)
        .map(|i| 10000f64.powf(2.0 * (i / 2) as f64 / npf as f64))
        .collect();
    // feature i of coordinate `pos` (1-based) on an axis of length n
    let feature = |i: usize, pos: usize, n: usize| -> f32 {
        let p = pos as f64 / (n as f64 + eps) * scale / dim_t[i];
        (if i.is_multiple_of(2) {
            p.sin()
        } else {
            p.cos()
        }) as f32
    };
    let mut out = vec![0f32; hidden * h * w];
    for (ch, plane) in out.chunks_exact_mut(h * w).enumerate() {
        if ch < npf {
            for (y, row) in plane.chunks_exact_mut(w).enumerate() {
                row.fill(feature(ch, y + 1, h));
            }
        } else {
            let line: Vec<f32> = (0..w).map(|x| feature(ch - npf, x + 1, w)).collect();
            for row in plane.chunks_exact_mut(w) {
                row.copy_from_slice(&line);
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
    input_proj: Vec<Conv2d>,
    color_embed: [Linear; 3],
    span: tracing::Span,
}

impl MultiScaleColorDecoder {
    /// In a bf16 model, the products over the pixels of the memory (`input_proj` and the
    /// cross-attention's key and value projections: at 512, six times the FLOPs of all the
    /// query-side products) run in bf16, and everything on the 100 queries in f32: with the
    /// query side in bf16 too, the worst photo's mean ΔE76 against f32 went from 0.13-0.15 to
    /// 0.31-0.48, over the bar (BENCHMARKS.md "bf16 on the CPU").
    pub fn load(vb_model: &Vb, cfg: &ColorDecoderConfig, dev: &Device) -> LoadResult<Self> {
        let c = cfg.hidden_dim;
        let vb = &vb_model.f32_products();
        let mut cross = Vec::with_capacity(cfg.dec_layers);
        let mut selfa = Vec::with_capacity(cfg.dec_layers);
        let mut ffn = Vec::with_capacity(cfg.dec_layers);
        for i in 0..cfg.dec_layers {
            let l = vb_model.pp("transformer_cross_attention_layers").pp(i);
            cross.push(CrossAttentionLayer::load(&l, c, cfg.num_heads, dev)?);
            let l = vb.pp("transformer_self_attention_layers").pp(i);
            selfa.push(SelfAttentionLayer {
                attn: MultiheadAttention::load(&l.pp("self_attn"), c, cfg.num_heads, dev)?,
                norm: LayerNorm::load(&l.pp("norm"), c, LN_EPS, dev)?,
                span: tracing::span!(tracing::Level::TRACE, "self-attention-layer"),
            });
            let l = vb.pp("transformer_ffn_layers").pp(i);
            ffn.push(FfnLayer {
                linear1: Linear::load(&l.pp("linear1"), c, cfg.dim_feedforward, dev)?,
                linear2: Linear::load(&l.pp("linear2"), cfg.dim_feedforward, c, dev)?,
                norm: LayerNorm::load(&l.pp("norm"), c, LN_EPS, dev)?,
                span: tracing::span!(tracing::Level::TRACE, "ffn-layer"),
            });
        }
        let q = cfg.num_queries;
        // input_proj[i](x) + level_embed[i]: the level embedding is a per-channel constant,
        // so it joins the conv's bias
        let level = vb.pp("level_embed").get("weight", &[cfg.num_scales, c])?;
        let input_proj = (0..cfg.num_scales)
            .map(|i| {
                let p = vb_model.pp("input_proj").pp(i);
                let w = p.get("weight", &[c, cfg.in_channels[i], 1, 1])?;
                let b = p.get("bias", &[c])?;
                let b = level
                    .get(i)
                    .and_then(|l| b + l)
                    .map_err(|e| vb.checkpoint().tensor_err(e))?;
                Conv2d::from_parts(&p, w, Some(b), 1, 0, dev)
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
            input_proj,
            color_embed: [
                Linear::load(&ce.pp(0), c, c, dev)?,
                Linear::load(&ce.pp(1), c, c, dev)?,
                Linear::load(&ce.pp(2), c, cfg.color_embed_dim, dev)?,
            ],
            span: tracing::span!(tracing::Level::TRACE, "color-decoder"),
        })
    }

    /// The per-query colour embeddings `[B, Q, color_embed_dim]` for the three scales.
    pub fn color_embeddings(&self, scales: &[Tensor; 3]) -> Result<Tensor> {
        let _enter = self.span.enter();
        let c = self.cfg.hidden_dim;
        let b = scales[0].dim(0)?;
        // per scale, channels first [B, C, HW]: the value (memory) and the key (memory + pos)
        let mut values = Vec::with_capacity(3);
        let mut keys = Vec::with_capacity(3);
        for (i, x) in scales.iter().enumerate() {
            let (_, _, h, w) = x.dims4()?;
            let pe = position_embedding_sine(h, w, c);
            let pos = Tensor::from_vec(pe, (1, c, h * w), x.device())?.to_dtype(x.dtype())?;
            let v = self.input_proj[i].forward(x)?.reshape((b, c, h * w))?;
            keys.push(v.broadcast_add(&pos)?);
            values.push(v);
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
            out = self.cross[i].forward(&out, &keys[level], &values[level], &qpos)?;
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
        let _enter = self.span.enter();
        let e = self.color_embeddings(scales)?;
        let (b, ce, h, w) = img.dims4()?;
        e.matmul(&img.reshape((b, ce, h * w))?)?
            .reshape((b, self.cfg.num_queries, h, w))
    }
}
