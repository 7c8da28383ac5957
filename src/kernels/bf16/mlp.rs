//! A two-layer MLP with a residual, `out = res + b2 + act(x W1 + b1) W2`, in one pass over
//! blocks of rows: each task takes a block of rows through both products, the hidden
//! activations (4x as wide as the rows in ConvNeXt) kept in bf16 in the task's own scratch,
//! never written to memory in f32.
//!
//! Apart, the two products write the hidden layer in f32 (ConvNeXt-L's stage 3 at 512: 12 MB a
//! block), apply the bias and activation in a second pass, and read it back a third time to
//! round it to bf16 for the second product; the residual is a fourth pass. Here all of that
//! happens on a block while it is in the core's cache: the bits are the same (the same
//! micro-kernel, the same order of additions, the same epilogue and rounding; a test checks
//! it), the memory traffic of the hidden layer is gone.
use std::cell::RefCell;

use rayon::prelude::*;

use super::{convert, run_task, Kernel, Panels, Task, NC_PANELS, NR};
use crate::kernels::activation::Act;
use crate::kernels::epilogue::channel_row;

/// The weights of [`mlp`]: `W1` (`c x h`) with its bias and activation, `W2` (`h x n`) with
/// its bias.
#[derive(Debug, Clone, Copy)]
pub struct Mlp<'a> {
    pub w1: &'a Panels,
    pub b1: &'a [f32],
    pub act: Act,
    pub w2: &'a Panels,
    pub b2: &'a [f32],
}

thread_local! {
    /// A task's scratch: its rows in bf16, the hidden layer in bf16, one group of hidden
    /// columns in f32. Kept per thread so that tasks do not allocate.
    static SCRATCH: RefCell<(Vec<u16>, Vec<u16>, Vec<f32>)> = const {
        RefCell::new((Vec::new(), Vec::new(), Vec::new()))
    };
}

/// `out[r] = res[r] + b2 + act(x[r] W1 + b1) W2` for the `m` rows of `x` (`c` values each,
/// contiguous), `res` and `out` of `m x n`. The same bits as the two products apart
/// (`super::gemm` with the epilogue after the first and the residual before the second).
///
/// # Panics
/// When the shapes do not chain, or a side holds a batch of more than one.
pub fn mlp(kernel: Kernel, x: &[f32], res: &[f32], f: &Mlp, out: &mut [f32]) {
    let (c, h, n) = (f.w1.k, f.w1.n, f.w2.n);
    assert!(
        f.w1.batch == 1 && f.w2.batch == 1,
        "bf16 mlp: batched weights"
    );
    assert!(
        f.w2.k == h,
        "bf16 mlp: {h} hidden values, W2 takes {}",
        f.w2.k
    );
    assert!(
        f.b1.len() == h && f.b2.len() == n,
        "bf16 mlp: biases of {} and {} for {h} and {n}",
        f.b1.len(),
        f.b2.len()
    );
    let m = x.len().checked_div(c).unwrap_or(0);
    assert!(
        x.len() == m * c && res.len() == m * n && out.len() == m * n,
        "bf16 mlp: {} inputs, {} residuals and {} outputs for rows of {c} -> {n}",
        x.len(),
        res.len(),
        out.len()
    );
    assert!(kernel.runs_here(), "bf16 mlp: {kernel:?} does not run here");
    if m == 0 || n == 0 {
        return;
    }
    let rows = block_rows(kernel, m, h);
    let ones = vec![1f32; NC_PANELS * NR];
    out.par_chunks_mut(rows * n)
        .zip(x.par_chunks(rows * c))
        .zip(res.par_chunks(rows * n))
        .for_each(|((o, x), r)| SCRATCH.with_borrow_mut(|s| block(kernel, x, r, f, o, &ones, s)));
}

/// Rows per task: 64, fewer where the hidden layer is wide (its bf16 block stays within 256
/// KiB of L2), and enough blocks to keep every thread busy; multiples of 32 for AMX, whose
/// tiles take 32 rows (so that the rows go through the same instructions as apart).
fn block_rows(kernel: Kernel, m: usize, h: usize) -> usize {
    let unit = if kernel == Kernel::Amx { 32 } else { 8 };
    let cap = if h > 2048 { 32 } else { 64 };
    let busy = m.div_ceil(2 * rayon::current_num_threads().max(1));
    busy.next_multiple_of(unit).clamp(unit, cap.max(unit))
}

/// One block of `mb` rows through both products (see [`mlp`]).
fn block(
    kernel: Kernel,
    x: &[f32],
    res: &[f32],
    f: &Mlp,
    out: &mut [f32],
    ones: &[f32],
    (xs, hs, fs): &mut (Vec<u16>, Vec<u16>, Vec<f32>),
) {
    let (c, h, n) = (f.w1.k, f.w1.n, f.w2.n);
    let (cp, hp) = (f.w1.kp, f.w2.kp);
    let mb = x.len() / c;
    // the rows in bf16, `cp` apart, the pad zero
    xs.clear();
    xs.resize(mb * cp, 0);
    for (src, dst) in x.chunks_exact(c).zip(xs.chunks_exact_mut(cp)) {
        convert(src, &mut dst[..c]);
    }
    // the hidden layer, a group of panels at a time: the product into `fs` (f32), the bias
    // and activation, rounded into `hs`
    hs.clear();
    hs.resize(mb * hp, 0);
    let group = NC_PANELS * NR;
    fs.resize(mb * group, 0.0);
    for (g, p0) in (0..h.div_ceil(NR)).step_by(NC_PANELS).enumerate() {
        let p1 = (p0 + NC_PANELS).min(h.div_ceil(NR));
        let task = Task {
            a: xs.as_ptr(),
            kp: cp,
            b: f.w1.data.as_ptr(),
            n: h,
            c: fs.as_mut_ptr(),
            ldc: group,
            p0,
            rows: 0..mb,
            panels: p0..p1,
            read_dst: false,
        };
        // SAFETY: `xs` holds `mb` rows of `cp`; the panels are `W1`'s; the block of `mb` rows
        // and `(p1 - p0) NR` columns lies in `fs` (`mb x group`)
        unsafe { run_task(kernel, &task) };
        let (c0, cols) = (g * group, (h - g * group).min(group));
        for (r, row) in fs.chunks_exact_mut(group).take(mb).enumerate() {
            let row = &mut row[..cols];
            channel_row(
                row,
                &ones[..cols],
                &f.b1[c0..c0 + cols],
                Act::Identity,
                f.act,
            );
            convert(row, &mut hs[r * hp + c0..][..cols]);
        }
    }
    // the output: the residual and bias, then the second product accumulated onto them
    for (o, r) in out.chunks_exact_mut(n).zip(res.chunks_exact(n)) {
        for ((o, &r), &b) in o.iter_mut().zip(r).zip(f.b2) {
            *o = r + b;
        }
    }
    let task = Task {
        a: hs.as_ptr(),
        kp: hp,
        b: f.w2.data.as_ptr(),
        n,
        c: out.as_mut_ptr(),
        ldc: n,
        p0: 0,
        rows: 0..mb,
        panels: 0..n.div_ceil(NR),
        read_dst: true,
    };
    // SAFETY: `hs` holds `mb` rows of `hp`; the panels are `W2`'s; `out` is `mb x n`
    unsafe { run_task(kernel, &task) };
}
