//! What follows a product or a convolution per channel, applied in place in one parallel pass:
//! `post(pre(y) * scale + shift)`, i.e. a bias and activation, or an eval-mode BatchNorm with a
//! ReLU before or after it. [`Epilogue`] describes it on tensors, `CpuEpilogue` holds it in
//! host vectors for the CPU kernels, [`channel_op`] applies it on its own.
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::activation::{apply, Act};
use super::common::{contiguous_slice, is_cpu_f32, par_output};
use crate::simd::multiversion;

/// Which axis of the `[.., M, N]` product holds the channels the epilogue is indexed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    /// Channels last (`x W^T`): channel `j` is column `j`.
    Columns,
    /// Channels first (`W x` on `[C, H*W]` planes): channel `i` is row `i`.
    Rows,
}

/// `post(pre(y) * scale + shift)` per channel of the product `y`; no scale means 1.
#[derive(Debug, Clone, Copy)]
pub struct Epilogue<'a> {
    pub scale: Option<&'a Tensor>,
    pub shift: &'a Tensor,
    pub pre: Act,
    pub post: Act,
}

impl<'a> Epilogue<'a> {
    /// `act(y + bias)`.
    pub fn bias(bias: &'a Tensor, act: Act) -> Self {
        Self {
            scale: None,
            shift: bias,
            pre: Act::Identity,
            post: act,
        }
    }
}

/// An [`Epilogue`] read into host vectors, for the CPU kernels that apply it.
pub(crate) struct CpuEpilogue {
    pub(super) ch: Channels,
    pub(super) scale: Option<Vec<f32>>,
    pub(super) shift: Vec<f32>,
    pub(super) pre: Act,
    pub(super) post: Act,
}

impl CpuEpilogue {
    pub(crate) fn of(ch: Channels, e: &Epilogue) -> Result<Self> {
        let vec = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        Ok(Self {
            ch,
            scale: e.scale.map(vec).transpose()?,
            shift: vec(e.shift)?,
            pre: e.pre,
            post: e.post,
        })
    }

    /// Fails unless the vectors hold `c` channels.
    pub(crate) fn check(&self, c: usize) -> Result<()> {
        if self.shift.len() != c || self.scale.as_ref().is_some_and(|s| s.len() != c) {
            candle_core::bail!(
                "epilogue vectors of {} do not match {c} channels",
                self.shift.len()
            )
        }
        Ok(())
    }

    /// Channel `c`'s epilogue on its plane `o`, in place.
    pub(crate) fn plane(&self, c: usize, o: &mut [f32]) {
        let scale = self.scale.as_ref().map_or(1.0, |s| s[c]);
        channel_plane(o, scale, self.shift[c], self.pre, self.post);
    }
}

/// `post(pre(x) * scale + shift)` with `scale` and `shift` per channel along `axis` (1 for
/// NCHW, the last axis for channels-last data): bias + activation, eval-mode BatchNorm with a
/// ReLU before or after, all in one parallel pass (candle's element-wise ops are serial).
pub fn channel_op(
    x: &Tensor,
    scale: Option<&Tensor>,
    shift: &Tensor,
    axis: usize,
    pre: Act,
    post: Act,
) -> Result<Tensor> {
    let c = x.dim(axis)?;
    let op = ChannelOp {
        axis,
        pre,
        post,
        has_scale: scale.is_some(),
    };
    if is_cpu_f32(&[x, shift]) && scale.is_none_or(|s| is_cpu_f32(&[s])) {
        let x = x.contiguous()?;
        let scale = scale.unwrap_or(shift).contiguous()?;
        return x.apply_op3_no_bwd(&scale, &shift.contiguous()?, &op);
    }
    let mut shape = vec![1usize; x.rank()];
    shape[axis] = c;
    let mut y = pre.tensor(x)?;
    if let Some(s) = scale {
        y = y.broadcast_mul(&s.reshape(shape.as_slice())?)?;
    }
    y = y.broadcast_add(&shift.reshape(shape.as_slice())?)?;
    post.tensor(&y)
}

struct ChannelOp {
    axis: usize,
    pre: Act,
    post: Act,
    has_scale: bool,
}

impl CustomOp3 for ChannelOp {
    fn name(&self) -> &'static str {
        "channel-op"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = xl.shape().dims();
        let c = dims[self.axis];
        let inner: usize = dims[self.axis + 1..].iter().product();
        let x = contiguous_slice(xs, xl, "channel op input")?;
        let scale = contiguous_slice(ss, sl, "channel op scale")?;
        let shift = contiguous_slice(bs, bl, "channel op shift")?;
        if shift.len() != c || (self.has_scale && scale.len() != c) {
            candle_core::bail!("channel op: per-channel vectors do not match {c} channels")
        }
        let (pre, post, has_scale) = (self.pre, self.post, self.has_scale);
        let ones;
        let scale = if has_scale {
            scale
        } else {
            ones = vec![1f32; c];
            &ones
        };
        let out = if inner == 1 {
            // channels last: each row of `c` values is one pixel
            let chunk = c * (16384 / c.max(1)).max(1);
            par_output(x.len(), chunk, |i, o| {
                o.copy_from_slice(&x[i * chunk..][..o.len()]);
                for o in o.chunks_exact_mut(c) {
                    channel_row(o, scale, shift, pre, post);
                }
            })
        } else {
            par_output(x.len(), inner, |row, o| {
                o.copy_from_slice(&x[row * inner..][..inner]);
                let ch = row % c;
                channel_plane(o, scale[ch], shift[ch], pre, post);
            })
        };
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

multiversion! {
    /// One channels-last row, in place: `o[j] = post(pre(o[j]) * scale[j] + shift[j])`.
    pub(crate) fn channel_row(o: &mut [f32], scale: &[f32], shift: &[f32], pre: Act, post: Act) {
        macro_rules! go {
            ($pre:expr, $post:expr) => {
                for ((o, &s), &b) in o.iter_mut().zip(scale).zip(shift) {
                    *o = apply($post, apply($pre, *o) * s + b);
                }
            };
        }
        // one monomorphic loop per activation pair, so each vectorises
        match (pre, post) {
            (Act::Identity, Act::Identity) => go!(Act::Identity, Act::Identity),
            (Act::Identity, Act::Relu) => go!(Act::Identity, Act::Relu),
            (Act::Identity, Act::Gelu) => go!(Act::Identity, Act::Gelu),
            (Act::Relu, Act::Identity) => go!(Act::Relu, Act::Identity),
            (p, q) => go!(p, q),
        }
    }
}

multiversion! {
    /// One NCHW channel plane, in place: `o[j] = post(pre(o[j]) * scale + shift)`.
    pub(crate) fn channel_plane(o: &mut [f32], scale: f32, shift: f32, pre: Act, post: Act) {
        macro_rules! go {
            ($pre:expr, $post:expr) => {
                for o in o.iter_mut() {
                    *o = apply($post, apply($pre, *o) * scale + shift);
                }
            };
        }
        match (pre, post) {
            (Act::Identity, Act::Identity) => go!(Act::Identity, Act::Identity),
            (Act::Identity, Act::Relu) => go!(Act::Identity, Act::Relu),
            (Act::Identity, Act::Gelu) => go!(Act::Identity, Act::Gelu),
            (Act::Relu, Act::Identity) => go!(Act::Relu, Act::Identity),
            (p, q) => go!(p, q),
        }
    }
}
