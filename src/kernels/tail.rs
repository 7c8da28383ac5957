//! The tail of the network, after its last ReLU: pixel shuffle and the replicate-padded 2x2
//! blur (fused on the CPU), and the contraction of a pre-shuffle feature with a small channel
//! map that replaces the full-resolution query maps.
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::common::{contiguous_slice, is_cpu_f32, par_output};
use crate::simd::multiversion;

/// `torch.nn.PixelShuffle(r)` on NCHW: `[B, C*r*r, H, W] -> [B, C, H*r, W*r]`.
pub fn pixel_shuffle(x: &Tensor, r: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let oc = c / (r * r);
    x.reshape((b, oc, r, r, h, w))?
        .permute((0, 1, 4, 2, 5, 3))?
        .reshape((b, oc, h * r, w * r))
}

/// `nn.AvgPool2d(2, stride=1)(nn.ReplicationPad2d((1, 0, 1, 0))(x))` on NCHW: each output pixel
/// is the mean of itself, its left, upper and upper-left neighbours (edges replicated).
pub fn blur_replicate(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let p = x.pad_with_same(2, 1, 0)?.pad_with_same(3, 1, 0)?;
    let top = (p.narrow(2, 0, h)?.narrow(3, 0, w)? + p.narrow(2, 0, h)?.narrow(3, 1, w)?)?;
    let bot = (p.narrow(2, 1, h)?.narrow(3, 0, w)? + p.narrow(2, 1, h)?.narrow(3, 1, w)?)?;
    (top + bot)? * 0.25
}

/// [`pixel_shuffle`] followed by [`blur_replicate`], fused: one pass per output plane instead
/// of a strided copy, two pads and four shifted adds over the upsampled tensor.
pub fn shuffle_blur(x: &Tensor, r: usize) -> Result<Tensor> {
    if is_cpu_f32(&[x]) {
        return x.contiguous()?.apply_op1_no_bwd(&ShuffleBlur { r });
    }
    blur_replicate(&pixel_shuffle(x, r)?)
}

struct ShuffleBlur {
    r: usize,
}

impl candle_core::CustomOp1 for ShuffleBlur {
    fn name(&self) -> &'static str {
        "shuffle-blur"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, cin, h, w) = xl.shape().dims4()?;
        let r = self.r;
        let c = cin / (r * r);
        let (oh, ow) = (h * r, w * r);
        let x = contiguous_slice(xs, xl, "shuffle input")?;
        let out = par_output(b * c * oh * ow, oh * ow, |plane, o| {
            let (bi, ci) = (plane / c, plane % c);
            // shuffled value at output (y, x): in[bi, ci*r*r + (y%r)*r + x%r, y/r, x/r]
            let at = |y: usize, xx: usize| {
                let ch = ci * r * r + (y % r) * r + xx % r;
                x[((bi * cin + ch) * h + y / r) * w + xx / r]
            };
            for y in 0..oh {
                let yu = y.saturating_sub(1);
                for xx in 0..ow {
                    let xl = xx.saturating_sub(1);
                    o[y * ow + xx] = 0.25 * (at(yu, xl) + at(yu, xx) + at(y, xl) + at(y, xx));
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, c, oh, ow))))
    }
}

/// `y[p, o*S + s] = sum_c a[o, c] * relu(r[p, c*S + s] + bias[c*S + s])`: contract the
/// channels of a pre-shuffle feature (`r`: `[N, C*S]`, sub-pixel `s` of channel `c` at column
/// `c*S + s`; its bias and ReLU applied as it is read) with a small `[O, C]` map, keeping the
/// `S` sub-pixels apart. This is the DDColor tail's `bqc,bchw->bqhw` product and
/// `refine_net`, moved in front of the pixel shuffle.
pub fn subpixel_contract(r: &Tensor, bias: &Tensor, a: &Tensor, s: usize) -> Result<Tensor> {
    let (n, cs) = r.dims2()?;
    let (o, c) = a.dims2()?;
    if c * s != cs || bias.elem_count() != cs {
        candle_core::bail!(
            "subpixel_contract: {cs} columns and a bias of {} for {c} channels x {s}",
            bias.elem_count()
        )
    }
    if is_cpu_f32(&[r, bias, a]) {
        return r.contiguous()?.apply_op3_no_bwd(
            &bias.contiguous()?,
            &a.contiguous()?,
            &SubpixelContract { s },
        );
    }
    // [N, C, S] -> [N, S, C] x [C, O] -> [N, S, O] -> [N, O, S]
    r.broadcast_add(bias)?
        .relu()?
        .reshape((n, c, s))?
        .transpose(1, 2)?
        .contiguous()?
        .broadcast_matmul(&a.t()?)?
        .transpose(1, 2)?
        .reshape((n, o * s))
}

struct SubpixelContract {
    s: usize,
}

impl CustomOp3 for SubpixelContract {
    fn name(&self) -> &'static str {
        "subpixel-contract"
    }

    fn cpu_fwd(
        &self,
        rs: &CpuStorage,
        rl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
        as_: &CpuStorage,
        al: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, cs) = rl.shape().dims2()?;
        let (o, c) = al.shape().dims2()?;
        let s = self.s;
        let r = contiguous_slice(rs, rl, "subpixel input")?;
        let bias = contiguous_slice(bs, bl, "subpixel bias")?;
        let a = contiguous_slice(as_, al, "subpixel map")?;
        let out = par_output(n * o * s, o * s * 64, |i, y| {
            subpixel_rows(
                y,
                &r[i * cs * 64..][..y.len() / (o * s) * cs],
                bias,
                a,
                c,
                s,
            )
        });
        Ok((CpuStorage::F32(out), Shape::from((n, o * s))))
    }
}

multiversion! {
    /// [`subpixel_contract`] for consecutive pixel rows (`y` zeroed).
    fn subpixel_rows(y: &mut [f32], rows: &[f32], bias: &[f32], a: &[f32], c: usize, s: usize) {
        let o = a.len() / c;
        let mut v = vec![0f32; s];
        for (y, row) in y.chunks_exact_mut(o * s).zip(rows.chunks_exact(c * s)) {
            for (ci, (rc, bc)) in row.chunks_exact(s).zip(bias.chunks_exact(s)).enumerate() {
                // the channel's S sub-pixels, biased and rectified once for all O outputs
                for ((v, &x), &b) in v.iter_mut().zip(rc).zip(bc) {
                    *v = (x + b).max(0.0);
                }
                for (oi, yo) in y.chunks_exact_mut(s).enumerate() {
                    let w = a[oi * c + ci];
                    for (y, &v) in yo.iter_mut().zip(&v) {
                        *y += w * v;
                    }
                }
            }
        }
    }
}
