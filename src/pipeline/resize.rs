//! Separable 2-tap resampling that reproduces, index for index and weight for weight, OpenCV's
//! `INTER_LINEAR` (float images) and PyTorch's `F.interpolate` `nearest` and `bilinear`
//! (`align_corners=False`, no antialiasing).
//!
//! An [`Axis`] holds, for each output position along one dimension, two source indices and their
//! weights; a 2-D resize is one `Axis` per dimension, evaluated row by row as
//! `wy0 * (wx0 * s[y0][x0] + wx1 * s[y0][x1]) + wy1 * (wx0 * s[y1][x0] + wx1 * s[y1][x1])`,
//! the same order of operations as both libraries (horizontal first, then vertical).

use rayon::prelude::*;

use super::ResizeMode;
use crate::simd::multiversion;

multiversion! {
    fn resample_line(
        src: &[f32],
        lo: &[usize],
        hi: &[usize],
        w_lo: &[f32],
        w_hi: &[f32],
        dst: &mut [f32],
    ) {
        assert!(!src.is_empty());
        // taps are in range by construction; `min` lets the compiler see it (no bounds
        // check per tap, so the loop vectorises)
        let last = src.len() - 1;
        let taps = lo.iter().zip(hi).zip(w_lo).zip(w_hi);
        for (d, (((&l, &h), &wl), &wh)) in dst.iter_mut().zip(taps) {
            *d = src[l.min(last)] * wl + src[h.min(last)] * wh;
        }
    }
}

/// Source taps and weights for every output index along one dimension.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    n_in: usize,
    lo: Vec<usize>,
    hi: Vec<usize>,
    w_lo: Vec<f32>,
    w_hi: Vec<f32>,
}

impl Axis {
    fn with_capacity(n_in: usize, n_out: usize) -> Self {
        assert!(n_in > 0, "cannot resample from an empty dimension");
        Self {
            n_in,
            lo: Vec::with_capacity(n_out),
            hi: Vec::with_capacity(n_out),
            w_lo: Vec::with_capacity(n_out),
            w_hi: Vec::with_capacity(n_out),
        }
    }

    fn push(&mut self, lo: usize, hi: usize, w_lo: f32, w_hi: f32) {
        self.lo.push(lo);
        self.hi.push(hi);
        self.w_lo.push(w_lo);
        self.w_hi.push(w_hi);
    }

    /// OpenCV `INTER_LINEAR`: `src = (dst + 0.5) * scale - 0.5` with `scale = 1 / (out / in)` in
    /// double precision, `sx = floor(src)`, `fx = src - sx` in float; positions left of the first
    /// pixel or at/after the last one take that edge pixel alone (`fx = 0`).
    pub fn opencv_linear(n_in: usize, n_out: usize) -> Self {
        let mut axis = Self::with_capacity(n_in, n_out);
        let scale = 1.0 / (n_out as f64 / n_in as f64);
        for d in 0..n_out {
            let src = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let floor = src.floor();
            let mut frac = src - floor;
            let mut s = floor as i64;
            if s < 0 {
                s = 0;
                frac = 0.0;
            }
            if s >= n_in as i64 - 1 {
                s = n_in as i64 - 1;
                frac = 0.0;
            }
            let s = s as usize;
            axis.push(s, (s + 1).min(n_in - 1), 1.0 - frac, frac);
        }
        axis
    }

    /// PyTorch `nearest` (the legacy mode, not `nearest-exact`): `scale = in / out` in float,
    /// `src = min(floor(dst * scale), in - 1)`.
    pub fn torch_nearest(n_in: usize, n_out: usize) -> Self {
        let mut axis = Self::with_capacity(n_in, n_out);
        let scale = n_in as f32 / n_out as f32;
        for d in 0..n_out {
            let s = if n_out == n_in {
                d
            } else if n_out == 2 * n_in {
                d >> 1
            } else {
                ((d as f32 * scale).floor() as usize).min(n_in - 1)
            };
            axis.push(s, s, 1.0, 0.0);
        }
        axis
    }

    /// PyTorch `bilinear`, `align_corners=False`: `src = max((dst + 0.5) * in / out - 0.5, 0)` in
    /// float, `i = floor(src)`, `lambda = src - i`, second tap `min(i + 1, in - 1)`.
    pub fn torch_bilinear(n_in: usize, n_out: usize) -> Self {
        let mut axis = Self::with_capacity(n_in, n_out);
        let scale = n_in as f32 / n_out as f32;
        for d in 0..n_out {
            let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
            let i = (src as usize).min(n_in - 1);
            let lambda = (src - i as f32).clamp(0.0, 1.0);
            let hi = if i < n_in - 1 { i + 1 } else { i };
            axis.push(i, hi, 1.0 - lambda, lambda);
        }
        axis
    }

    /// The PyTorch axis for a [`ResizeMode`] (what upstream uses to bring ab back to full size).
    pub fn for_mode(mode: ResizeMode, n_in: usize, n_out: usize) -> Self {
        match mode {
            ResizeMode::Nearest => Self::torch_nearest(n_in, n_out),
            ResizeMode::Bilinear => Self::torch_bilinear(n_in, n_out),
        }
    }

    /// Number of source positions this axis reads from.
    pub fn input_len(&self) -> usize {
        self.n_in
    }

    /// Number of output positions.
    pub fn len(&self) -> usize {
        self.lo.len()
    }

    /// True when the axis has no output positions.
    pub fn is_empty(&self) -> bool {
        self.lo.is_empty()
    }

    /// Taps of output index `i`: `(lo, hi, w_lo, w_hi)`.
    #[inline]
    pub fn tap(&self, i: usize) -> (usize, usize, f32, f32) {
        (self.lo[i], self.hi[i], self.w_lo[i], self.w_hi[i])
    }

    /// Resamples one line: `dst[i] = src[lo] * w_lo + src[hi] * w_hi` for every output index
    /// (vectorised: the taps are gathered).
    ///
    /// # Panics
    /// If `src` is not `input_len()` long or `dst` not `len()`.
    pub fn resample_line(&self, src: &[f32], dst: &mut [f32]) {
        assert_eq!(src.len(), self.n_in, "source line does not match the axis");
        assert_eq!(dst.len(), self.len(), "output line does not match the axis");
        resample_line(src, &self.lo, &self.hi, &self.w_lo, &self.w_hi, dst);
    }

    /// Interpolates one value along this axis at output index `i` from `row`, a line of
    /// `input_len()` pixels of `stride` values each, component `c`.
    #[inline]
    fn sample(&self, row: &[f32], stride: usize, c: usize, i: usize) -> f32 {
        row[self.lo[i] * stride + c] * self.w_lo[i] + row[self.hi[i] * stride + c] * self.w_hi[i]
    }
}

/// Value at output `(x, y)` of a single plane `width` pixels wide, resampled with `ax` and `ay`.
#[inline]
pub fn sample_plane(plane: &[f32], width: usize, ax: &Axis, ay: &Axis, x: usize, y: usize) -> f32 {
    let (y0, y1, wy0, wy1) = ay.tap(y);
    let r0 = &plane[y0 * width..(y0 + 1) * width];
    let r1 = &plane[y1 * width..(y1 + 1) * width];
    ax.sample(r0, 1, 0, x) * wy0 + ax.sample(r1, 1, 0, x) * wy1
}

/// Resizes an interleaved image (`channels` values per pixel) of `ax.input_len()` x
/// `ay.input_len()` pixels to `ax.len()` x `ay.len()`; rows are computed in parallel.
pub fn resize_interleaved(src: &[f32], channels: usize, ax: &Axis, ay: &Axis) -> Vec<f32> {
    let (in_w, in_h) = (ax.input_len(), ay.input_len());
    assert_eq!(
        src.len(),
        channels * in_w * in_h,
        "source size does not match the axes"
    );
    let (out_w, out_h) = (ax.len(), ay.len());
    let mut out = vec![0.0f32; channels * out_w * out_h];
    if out.is_empty() {
        return out;
    }
    let in_row = channels * in_w;
    out.par_chunks_mut(channels * out_w)
        .enumerate()
        .for_each(|(y, dst)| {
            let (y0, y1, wy0, wy1) = ay.tap(y);
            let r0 = &src[y0 * in_row..(y0 + 1) * in_row];
            let r1 = &src[y1 * in_row..(y1 + 1) * in_row];
            for (x, px) in dst.chunks_exact_mut(channels).enumerate() {
                for (c, v) in px.iter_mut().enumerate() {
                    let h0 = ax.sample(r0, channels, c, x);
                    let h1 = ax.sample(r1, channels, c, x);
                    *v = h0 * wy0 + h1 * wy1;
                }
            }
        });
    out
}

/// One tap pair the way OpenCV's IPP backend interpolates float images: `a + (b - a) * t`
/// with one rounding (a fused multiply-add), `t` the weight of `b`.
#[inline]
pub fn lerp_fma(a: f32, b: f32, t: f32) -> f32 {
    (b - a).mul_add(t, a)
}

/// [`resize_interleaved`] as `cv2.resize(..., INTER_LINEAR)` computes it for float images in
/// the opencv-python wheels, whose resize runs on Intel IPP: the same taps and weights
/// ([`Axis::opencv_linear`]), but each axis as [`lerp_fma`] (rows first, then columns). OpenCV's
/// own code (`a * wa + b * wb`) differs from it in the last bit of ~1/3 of the samples, and a
/// sample near a step of `BGR2Lab`'s table then moves L by a whole step (`--compat upstream`).
pub fn resize_interleaved_ipp(src: &[f32], channels: usize, ax: &Axis, ay: &Axis) -> Vec<f32> {
    let (in_w, in_h) = (ax.input_len(), ay.input_len());
    assert_eq!(
        src.len(),
        channels * in_w * in_h,
        "source size does not match the axes"
    );
    let (out_w, out_h) = (ax.len(), ay.len());
    let mut out = vec![0.0f32; channels * out_w * out_h];
    if out.is_empty() {
        return out;
    }
    let in_row = channels * in_w;
    out.par_chunks_mut(channels * out_w)
        .enumerate()
        .for_each(|(y, dst)| {
            let (y0, y1, _, wy1) = ay.tap(y);
            let r0 = &src[y0 * in_row..(y0 + 1) * in_row];
            let r1 = &src[y1 * in_row..(y1 + 1) * in_row];
            for (x, px) in dst.chunks_exact_mut(channels).enumerate() {
                let (x0, x1, _, wx1) = ax.tap(x);
                for (c, v) in px.iter_mut().enumerate() {
                    let h0 = lerp_fma(r0[x0 * channels + c], r0[x1 * channels + c], wx1);
                    let h1 = lerp_fma(r1[x0 * channels + c], r1[x1 * channels + c], wx1);
                    *v = lerp_fma(h0, h1, wy1);
                }
            }
        });
    out
}

/// Resizes a planar image (`channels` planes of `ax.input_len()` x `ay.input_len()`) to
/// `channels` planes of `ax.len()` x `ay.len()`.
pub fn resize_planar(src: &[f32], channels: usize, ax: &Axis, ay: &Axis) -> Vec<f32> {
    let (in_w, in_h) = (ax.input_len(), ay.input_len());
    assert_eq!(
        src.len(),
        channels * in_w * in_h,
        "source size does not match the axes"
    );
    let (out_w, out_h) = (ax.len(), ay.len());
    let mut out = vec![0.0f32; channels * out_w * out_h];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(out_w)
        .enumerate()
        .for_each(|(row, dst)| {
            let (c, y) = (row / out_h, row % out_h);
            let plane = &src[c * in_w * in_h..(c + 1) * in_w * in_h];
            for (x, v) in dst.iter_mut().enumerate() {
                *v = sample_plane(plane, in_w, ax, ay, x, y);
            }
        });
    out
}
