//! Matrix products on the CPU written straight into their output, with what follows them per
//! channel (bias, folded BatchNorm, activation, a residual) applied to that same buffer.
//!
//! candle's CPU matmul zero-fills its output on the calling thread before gemm overwrites it,
//! and each bias or activation after it allocates, zero-fills and writes one more tensor of the
//! same size. Here gemm writes into uninitialised memory, the epilogue runs in place in one
//! parallel pass, and a residual is loaded into the output first so that gemm accumulates onto
//! it. Other devices and dtypes get the same arithmetic from candle's ops.
//!
//! A weight can also be held in bf16 ([`Weight`]), laid out once for the side of the product
//! it is on; the product then runs in [`super::bf16`] with f32 accumulation, the activations
//! rounded to bf16 as they are read, the output and epilogue in f32.
use std::sync::Arc;

use candle_core::{CpuStorage, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::activation::Act;
use super::bf16;
use super::common::contiguous_slice;
use super::epilogue::{channel_op, channel_row, Channels, CpuEpilogue, Epilogue};

/// `a x b` for `a` `[M, K]` or `[B, M, K]` and `b` `[K, N]` or `[B, K, N]` (a rank-2 side, or a
/// batch of one, is shared by every batch); any strides in the last two dimensions.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    product(a, b, None, None)
}

/// `epi(a x b)`, the epilogue's channels along `ch`.
pub fn matmul_epilogue(a: &Tensor, b: &Tensor, ch: Channels, epi: &Epilogue) -> Result<Tensor> {
    product(a, b, Some((ch, epi)), None)
}

/// `res + a x b + bias`, `bias` along the columns, `res` of the product's shape.
pub fn matmul_bias_residual(a: &Tensor, b: &Tensor, bias: &Tensor, res: &Tensor) -> Result<Tensor> {
    product(
        a,
        b,
        Some((Channels::Columns, &Epilogue::bias(bias, Act::Identity))),
        Some(res),
    )
}

/// A weight matrix as the products read it: a tensor (any device and dtype), or bf16 laid out
/// for the CPU kernel on its side of the product.
#[derive(Debug, Clone)]
pub enum Weight {
    Tensor(Tensor),
    /// `[K, N]`, on the right: `x W`.
    Right(Arc<bf16::Panels>),
    /// `[M, K]` or `[B, M, K]`, on the left: `W x`.
    Left(Arc<bf16::Rows>),
}

impl Weight {
    /// `w` (`[K, N]`) for the right side of products; in bf16 when `bf16` (an f32 CPU tensor).
    pub fn right(w: Tensor, bf16: bool) -> Result<Weight> {
        if !bf16 {
            return Ok(Weight::Tensor(w));
        }
        let (k, n) = w.dims2()?;
        let v = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Weight::Right(Arc::new(bf16::Panels::new(bf16::Strided {
            data: &v,
            batch: 1,
            rows: k,
            cols: n,
            bs: 0,
            rs: n,
            cs: 1,
        }))))
    }

    /// `w` (`[M, K]` or `[B, M, K]`) for the left side of products; in bf16 when `bf16`.
    pub fn left(w: Tensor, bf16: bool) -> Result<Weight> {
        if !bf16 {
            return Ok(Weight::Tensor(w));
        }
        let (batch, m, k) = match *w.dims() {
            [m, k] => (1, m, k),
            [b, m, k] => (b, m, k),
            ref d => candle_core::bail!("a left weight is of rank 2 or 3, got {d:?}"),
        };
        let v = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Weight::Left(Arc::new(bf16::Rows::new(bf16::Strided {
            data: &v,
            batch,
            rows: m,
            cols: k,
            bs: m * k,
            rs: k,
            cs: 1,
        }))))
    }

    /// The dimensions of the matrix it holds (as the tensor's would be).
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Weight::Tensor(t) => t.dims().to_vec(),
            Weight::Right(p) => vec![p.k, p.n],
            Weight::Left(r) if r.batch == 1 => vec![r.m, r.k],
            Weight::Left(r) => vec![r.batch, r.m, r.k],
        }
    }

    /// Whether the products with it run in bf16.
    pub fn is_bf16(&self) -> bool {
        !matches!(self, Weight::Tensor(_))
    }
}

/// `epi(x W)` for a right-side weight.
pub fn matmul_right(
    x: &Tensor,
    w: &Weight,
    ch: Channels,
    epi: Option<&Epilogue>,
) -> Result<Tensor> {
    match w {
        Weight::Tensor(t) => product(x, t, epi.map(|e| (ch, e)), None),
        Weight::Right(p) => packed(x, Packed::Right(p), epi.map(|e| (ch, e)), None),
        Weight::Left(_) => candle_core::bail!("gemm: a left weight on the right"),
    }
}

/// `res + x W + bias` for a right-side weight, `bias` along the columns.
pub fn matmul_right_bias_residual(
    x: &Tensor,
    w: &Weight,
    bias: &Tensor,
    res: &Tensor,
) -> Result<Tensor> {
    match w {
        Weight::Tensor(t) => matmul_bias_residual(x, t, bias, res),
        Weight::Right(p) => packed(
            x,
            Packed::Right(p),
            Some((Channels::Columns, &Epilogue::bias(bias, Act::Identity))),
            Some(res),
        ),
        Weight::Left(_) => candle_core::bail!("gemm: a left weight on the right"),
    }
}

/// `epi(W x)` for a left-side weight.
pub fn matmul_left(w: &Weight, x: &Tensor, ch: Channels, epi: Option<&Epilogue>) -> Result<Tensor> {
    match w {
        Weight::Tensor(t) => product(t, x, epi.map(|e| (ch, e)), None),
        Weight::Left(r) => packed(x, Packed::Left(r), epi.map(|e| (ch, e)), None),
        Weight::Right(_) => candle_core::bail!("gemm: a right weight on the left"),
    }
}

/// [`matmul_left`] that takes the activations by value: with a bf16 weight, `x` is rounded to
/// bf16 panels and freed before the product's output is allocated, so that the f32
/// activations, their bf16 copy and the output are never all held at once (the Winograd
/// input of the large model's widest 3x3 convolution at 512 is 200 MB in f32). Without
/// batches of one: `x` is `[B, K, N]`, the result `[B', M, N]`.
pub fn matmul_left_owned(
    w: &Weight,
    x: Tensor,
    ch: Channels,
    epi: Option<&Epilogue>,
) -> Result<Tensor> {
    let Weight::Left(r) = w else {
        return matmul_left(w, &x, ch, epi);
    };
    let vectors: Vec<&Tensor> = [&x].into_iter().chain(epi.map(|e| e.shift)).collect();
    if !super::common::is_cpu_f32(&vectors) || x.rank() != 3 {
        return matmul_left(w, &x, ch, epi);
    }
    let panels = {
        let (s, l) = x.storage_and_layout();
        let candle_core::Storage::Cpu(s) = &*s else {
            unreachable!("checked: a CPU tensor")
        };
        bf16::Panels::new(View::new(s, l, "right side")?.strided())
    };
    drop(x);
    let op = Gemm {
        epi: epi.map(|e| CpuEpilogue::of(ch, e)).transpose()?,
        weight: None,
    };
    let (out, shape) = op.run(Operands::Packed(r, &panels), None)?;
    drop(panels);
    let CpuStorage::F32(out) = out else {
        unreachable!("the product is f32")
    };
    Tensor::from_vec(out, shape, &Device::Cpu)
}

/// A bf16 weight and the side it is on.
#[derive(Clone, Copy)]
enum Packed<'a> {
    Right(&'a Arc<bf16::Panels>),
    Left(&'a Arc<bf16::Rows>),
}

/// The product of the activations `x` (f32, CPU) with a bf16 weight.
fn packed(
    x: &Tensor,
    w: Packed,
    epi: Option<(Channels, &Epilogue)>,
    res: Option<&Tensor>,
) -> Result<Tensor> {
    let mut vectors = vec![x];
    if let Some((_, e)) = epi {
        vectors.push(e.shift);
        vectors.extend(e.scale);
    }
    vectors.extend(res);
    if !super::common::is_cpu_f32(&vectors) {
        candle_core::bail!("gemm: a bf16 weight takes f32 activations on the CPU")
    }
    let op = Gemm {
        epi: epi.map(|(ch, e)| CpuEpilogue::of(ch, e)).transpose()?,
        weight: Some(match w {
            Packed::Right(p) => PackedWeight::Right(p.clone()),
            Packed::Left(r) => PackedWeight::Left(r.clone()),
        }),
    };
    match res {
        None => x.apply_op1_no_bwd(&op),
        Some(r) => x.apply_op2_no_bwd(&r.contiguous()?, &op),
    }
}

fn product(
    a: &Tensor,
    b: &Tensor,
    epi: Option<(Channels, &Epilogue)>,
    res: Option<&Tensor>,
) -> Result<Tensor> {
    let mut vectors = vec![a, b];
    if let Some((_, e)) = epi {
        vectors.push(e.shift);
        vectors.extend(e.scale);
    }
    vectors.extend(res);
    let cpu_f32 = vectors
        .iter()
        .all(|t| matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32);
    if !cpu_f32 {
        let y = match (a.rank(), b.rank()) {
            (3, 2) => {
                let (bn, m, k) = a.dims3()?;
                a.reshape((bn * m, k))?.matmul(b)?.reshape((bn, m, ()))?
            }
            (2, 3) if b.dim(0)? == 1 => a.matmul(&b.squeeze(0)?)?.unsqueeze(0)?,
            (2, 3) => a.broadcast_left(b.dim(0)?)?.matmul(b)?,
            _ => a.matmul(b)?,
        };
        let y = match epi {
            None => y,
            Some((ch, e)) => {
                let axis = match ch {
                    Channels::Columns => y.rank() - 1,
                    Channels::Rows => y.rank() - 2,
                };
                channel_op(&y, e.scale, e.shift, axis, e.pre, e.post)?
            }
        };
        return match res {
            Some(r) => y + r,
            None => Ok(y),
        };
    }
    let op = Gemm {
        epi: epi.map(|(ch, e)| CpuEpilogue::of(ch, e)).transpose()?,
        weight: None,
    };
    match res {
        None => a.apply_op2_no_bwd(b, &op),
        Some(r) => a.apply_op3_no_bwd(b, &r.contiguous()?, &op),
    }
}

struct Gemm {
    epi: Option<CpuEpilogue>,
    /// A bf16 weight: the op's first input is then the activations, its second the residual.
    weight: Option<PackedWeight>,
}

enum PackedWeight {
    Right(Arc<bf16::Panels>),
    Left(Arc<bf16::Rows>),
}

/// The two sides of one product.
enum Operands<'a> {
    F32(View<'a>, View<'a>),
    /// Activations times a bf16 weight.
    Right(View<'a>, &'a bf16::Panels),
    /// A bf16 weight times activations.
    Left(&'a bf16::Rows, View<'a>),
    /// A bf16 weight times activations already in bf16 (batched).
    Packed(&'a bf16::Rows, &'a bf16::Panels),
}

impl Operands<'_> {
    /// `(batched, a's batch, b's batch, m, k, b's rows, n)`.
    fn dims(&self) -> (bool, usize, usize, usize, usize, usize, usize) {
        match self {
            Operands::F32(a, b) => (
                a.batched || b.batched,
                a.batch,
                b.batch,
                a.rows,
                a.cols,
                b.rows,
                b.cols,
            ),
            Operands::Right(a, w) => (a.batched, a.batch, 1, a.rows, a.cols, w.k, w.n),
            Operands::Left(w, b) => (
                w.batch > 1 || b.batched,
                w.batch,
                b.batch,
                w.m,
                w.k,
                b.rows,
                b.cols,
            ),
            Operands::Packed(w, b) => (true, w.batch, b.batch, w.m, w.k, b.k, b.n),
        }
    }
}

impl View<'_> {
    fn strided(&self) -> bf16::Strided<'_> {
        bf16::Strided {
            data: self.data,
            batch: self.batch,
            rows: self.rows,
            cols: self.cols,
            bs: self.batch_stride,
            rs: self.rs,
            cs: self.cs,
        }
    }
}

/// A raw pointer handed to the threads of one product, which touch disjoint parts of it.
#[derive(Clone, Copy)]
struct Ptr(*mut f32);

// SAFETY: only used for the duration of one product whose threads read shared inputs and
// write disjoint output ranges.
unsafe impl Send for Ptr {}
unsafe impl Sync for Ptr {}

impl Ptr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// One side of a batched product: `batch` matrices of `rows x cols` at `batch_stride` apart.
struct View<'a> {
    data: &'a [f32],
    /// Rank 3 (a batch dimension, possibly of one).
    batched: bool,
    batch: usize,
    batch_stride: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    fn new(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<Self> {
        let data = &s.as_slice::<f32>()?[l.start_offset()..];
        let (d, st) = (l.dims(), l.stride());
        let (batch, batch_stride, rows, cols, rs, cs) = match *d {
            [r, c] => (1, 0, r, c, st[0], st[1]),
            [b, r, c] => (b, if b == 1 { 0 } else { st[0] }, r, c, st[1], st[2]),
            _ => candle_core::bail!("gemm: {what} must be of rank 2 or 3, got {d:?}"),
        };
        let v = Self {
            data,
            batched: d.len() == 3,
            batch,
            batch_stride,
            rows,
            cols,
            rs,
            cs,
        };
        // gemm reads through raw pointers: every element it may touch must be in `data`
        if v.rows > 0 && v.cols > 0 && v.batch > 0 {
            let last = (v.batch - 1) * v.batch_stride + (v.rows - 1) * v.rs + (v.cols - 1) * v.cs;
            if last >= data.len() {
                candle_core::bail!("gemm: {what} layout reaches past its storage")
            }
        }
        Ok(v)
    }
}

impl Gemm {
    fn run(
        &self,
        ops: Operands,
        res: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (batched, a_batch, b_batch, m, k, b_rows, n) = ops.dims();
        if b_rows != k {
            candle_core::bail!("gemm: inner dimensions {k} and {b_rows} differ")
        }
        let batch = a_batch.max(b_batch);
        if (a_batch != 1 && a_batch != batch) || (b_batch != 1 && b_batch != batch) {
            candle_core::bail!("gemm: batches {a_batch} and {b_batch} differ")
        }
        let shape: Shape = if batched {
            (batch, m, n).into()
        } else {
            (m, n).into()
        };
        let len = batch * m * n;
        let mut out: Vec<f32> = Vec::with_capacity(len);
        let read_dst = match res {
            Some((rs, rl)) => {
                let r = contiguous_slice(rs, rl, "residual")?;
                if r.len() != len {
                    candle_core::bail!("gemm: residual of {} values for {len}", r.len())
                }
                let shift = match &self.epi {
                    Some(e)
                        if e.ch == Channels::Columns
                            && e.shift.len() == n
                            && e.scale.is_none()
                            && (e.pre, e.post) == (Act::Identity, Act::Identity) =>
                    {
                        &e.shift
                    }
                    _ => candle_core::bail!("gemm: a residual needs a bias along the columns"),
                };
                let rows = (16_384 / n.max(1)).max(1);
                out.spare_capacity_mut()[..len]
                    .par_chunks_mut(rows * n.max(1))
                    .zip(r.par_chunks(rows * n.max(1)))
                    .for_each(|(o, r)| {
                        for (o, r) in o.chunks_mut(n).zip(r.chunks(n)) {
                            for ((o, &r), &b) in o.iter_mut().zip(r).zip(shift) {
                                o.write(r + b);
                            }
                        }
                    });
                true
            }
            None => false,
        };
        if m > 0 && n > 0 {
            if k == 0 && !read_dst {
                out.resize(len, 0.0);
            } else {
                let dst = out.as_mut_ptr();
                // SAFETY (bf16): `dst` holds `batch * m * n` floats, initialised when read.
                match &ops {
                    Operands::F32(a, b) => self.gemm(a, b, dst, batch, read_dst),
                    Operands::Right(a, w) => unsafe {
                        let a = bf16::Rows::new(a.strided());
                        bf16::gemm_raw(bf16::Kernel::current(), &a, w, dst, read_dst)
                    },
                    Operands::Left(w, b) => unsafe {
                        let b = bf16::Panels::new(b.strided());
                        bf16::gemm_raw(bf16::Kernel::current(), w, &b, dst, read_dst)
                    },
                    Operands::Packed(w, b) => unsafe {
                        bf16::gemm_raw(bf16::Kernel::current(), w, b, dst, read_dst)
                    },
                }
                // SAFETY: gemm wrote all `batch * m * n` values (or accumulated onto the
                // residual, which initialised them).
                unsafe { out.set_len(len) };
            }
        }
        if !read_dst {
            if let Some(e) = &self.epi {
                self.apply(e, &mut out, m, n)?;
            }
        }
        Ok((CpuStorage::F32(out), shape))
    }

    /// `dst[bi] (=|+=) a[bi] b[bi]` for every batch, into `batch` contiguous `m x n` blocks.
    fn gemm(&self, a: &View, b: &View, dst: *mut f32, batch: usize, read_dst: bool) {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        let threads = super::common::threads();
        let par = if threads > 1 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        // a shared right side and left rows that run on across batches: one product of
        // batch * m rows (the destination is contiguous, so its rows line up)
        let (batch, m) = if batch > 1 && b.batch_stride == 0 && a.batch_stride == m * a.rs {
            (1, batch * m)
        } else {
            (batch, m)
        };
        // gemm parallelises over blocks of rows; a product of few rows (ConvNeXt's last stage:
        // 64-256 pixels against a 1536x6144 weight) then runs on one thread. Such products are
        // split by columns instead, one gemm per thread on its own slice of the right side.
        let parts = if threads > 1 && m <= 128 * threads && n >= 128 * threads {
            threads
        } else {
            1
        };
        let cols = n.div_ceil(parts).next_multiple_of(16).min(n);
        let (dst, lhs, rhs) = (
            Ptr(dst),
            Ptr(a.data.as_ptr() as *mut f32),
            Ptr(b.data.as_ptr() as *mut f32),
        );
        for bi in 0..batch {
            let run = |c0: usize, nc: usize, par: gemm::Parallelism| {
                // SAFETY: View::new checked that every (batch, row, column) of `a` and `b` lies
                // in its storage; `dst` holds `batch * m * n` floats with rows `n` apart, and
                // concurrent calls write disjoint column ranges `c0..c0 + nc`.
                unsafe {
                    gemm::gemm(
                        m,
                        nc,
                        k,
                        dst.get().add(bi * m * n + c0),
                        1,
                        n as isize,
                        read_dst,
                        lhs.get().add(bi * a.batch_stride),
                        a.cs as isize,
                        a.rs as isize,
                        rhs.get().add(bi * b.batch_stride + c0 * b.cs),
                        b.cs as isize,
                        b.rs as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        par,
                    )
                }
            };
            if parts == 1 {
                run(0, n, par);
            } else {
                (0..n.div_ceil(cols)).into_par_iter().for_each(|p| {
                    let c0 = p * cols;
                    run(c0, cols.min(n - c0), gemm::Parallelism::None)
                });
            }
        }
    }

    fn apply(&self, e: &CpuEpilogue, out: &mut [f32], m: usize, n: usize) -> Result<()> {
        let c = match e.ch {
            Channels::Columns => n,
            Channels::Rows => m,
        };
        e.check(c)?;
        let ones;
        let scale = match &e.scale {
            Some(s) => s.as_slice(),
            None => {
                ones = vec![1f32; c];
                &ones
            }
        };
        let (shift, pre, post) = (e.shift.as_slice(), e.pre, e.post);
        if n == 0 {
            return Ok(());
        }
        match e.ch {
            Channels::Columns => {
                let rows = (16_384 / n).max(1);
                out.par_chunks_mut(rows * n).for_each(|o| {
                    for o in o.chunks_exact_mut(n) {
                        channel_row(o, scale, shift, pre, post);
                    }
                });
            }
            Channels::Rows => {
                out.par_chunks_mut(n)
                    .enumerate()
                    .for_each(|(row, o)| e.plane(row % m, o));
            }
        }
        Ok(())
    }
}

impl Gemm {
    /// The bf16 weight's product with the activations `x`.
    fn with_weight<'a>(&'a self, x: View<'a>) -> Result<Operands<'a>> {
        Ok(match &self.weight {
            Some(PackedWeight::Right(p)) => Operands::Right(x, p),
            Some(PackedWeight::Left(r)) => Operands::Left(r, x),
            None => candle_core::bail!("gemm: no weight for a one-input product"),
        })
    }
}

impl candle_core::CustomOp1 for Gemm {
    fn name(&self) -> &'static str {
        "gemm-bf16"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        self.run(self.with_weight(View::new(x, xl, "activations")?)?, None)
    }
}

impl candle_core::CustomOp2 for Gemm {
    fn name(&self) -> &'static str {
        "gemm-epilogue"
    }

    fn cpu_fwd(
        &self,
        a: &CpuStorage,
        al: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if self.weight.is_some() {
            // activations and residual
            let ops = self.with_weight(View::new(a, al, "activations")?)?;
            return self.run(ops, Some((b, bl)));
        }
        let ops = Operands::F32(View::new(a, al, "lhs")?, View::new(b, bl, "rhs")?);
        self.run(ops, None)
    }
}

impl candle_core::CustomOp3 for Gemm {
    fn name(&self) -> &'static str {
        "gemm-residual"
    }

    fn cpu_fwd(
        &self,
        a: &CpuStorage,
        al: &Layout,
        b: &CpuStorage,
        bl: &Layout,
        r: &CpuStorage,
        rl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let ops = Operands::F32(View::new(a, al, "lhs")?, View::new(b, bl, "rhs")?);
        self.run(ops, Some((r, rl)))
    }
}
