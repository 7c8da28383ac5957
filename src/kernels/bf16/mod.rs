//! Matrix products with bf16 operands and f32 accumulation on the CPU: `C (=|+=) A B` with `A`
//! as bf16 rows and `B` as bf16 column panels, through AVX512_BF16's `vdpbf16ps` where the CPU
//! has it and the same arithmetic emulated elsewhere.
//!
//! The arithmetic, native or emulated, bit for bit:
//! - operands are rounded from f32 to bf16 to nearest, ties to even ([`to_bf16`]); f32
//!   subnormals become zero (the native instruction treats bf16 subnormals as zero anyway);
//! - the product of two bf16 values is exact in f32 (8-bit significands: 16 bits);
//! - each f32 accumulator takes its products a pair of `k` at a time, the odd one first:
//!   `acc = (acc + a[2i+1] b[2i+1]) + a[2i] b[2i]`, each addition rounded to nearest, which is
//!   what `vdpbf16ps` does for each of its 16 lanes (outputs that would be subnormal are flushed
//!   to zero by the instruction and not by the emulation: they do not arise from the model's
//!   magnitudes);
//! - `k` runs in blocks of [`KC`], the accumulators go through the output between blocks.
//!
//! Layouts: [`Rows`] is `[batch][m][kp]` (`kp` = `k` rounded up to even, the pad zero), so the
//! pair `(a[r][2i], a[r][2i+1])` is one 32-bit word broadcast to all lanes; [`Panels`] is
//! `[batch][n / NR][kp / 2][NR][2]`: for each pair of `k`, the [`NR`] columns' two values
//! side by side, one 64-byte vector per 16 columns. Weights are laid out once at load; the
//! activation side is converted per product (`m k` or `k n` values against `m k n` products).
//!
//! What a bf16 model (`--dtype bf16 --device cpu`) runs here, and what stays f32 (the choices,
//! measured on the golden model: max |ab - ab_f32| / max |ab|; and on realistic checkpoints,
//! BENCHMARKS.md "bf16 on the CPU"):
//! - bf16 products: ConvNeXt's MLPs and downsampling layers, the UNet's 1x1 pixel-shuffle
//!   convolutions and Winograd 3x3 convolutions, and `last_shuf`'s product in the fused tail
//!   (golden model 0.97e-2 -> 0.99e-2 with it; the pipeline unchanged; 19% of the time in f32);
//! - bf16 products in the colour decoder where the rows are pixels: `input_proj` and the
//!   cross-attention's key and value projections (tiny @512: 15% faster forward; worst
//!   photo's mean ΔE76 against f32 0.113-0.130 -> 0.127-0.146, 99.9th percentile 0.98-1.27
//!   -> 1.02-1.28, PNG outputs of the sample album, realistic checkpoints);
//! - f32: the colour decoder's query side (the 100 queries' projections, self-attention, FFN,
//!   colour embedding): in bf16 it made the worst photo's mean ΔE76 0.31-0.48, over the
//!   issue's bar of 0.4;
//! - f32: the activations between layers (each product rounds its inputs as it reads them),
//!   LayerNorm statistics, softmax and the attention logits (`attention.rs`), the depthwise
//!   7x7 convolutions, biases, BatchNorm and the epilogues, the stem (K = 48: too small to
//!   matter for speed) and `refine_net` (2 outputs, the last layer).
//!
//! The micro-kernel keeps an [`MR`] x [`NR`] block of `C` in 16 registers; a task is a block of
//! `MC` rows and `NC` columns, `k` in blocks of `KC` so that the `KC x NR` panel (16 KiB)
//! stays in L1 while the rows run past it.
use std::sync::OnceLock;

use rayon::prelude::*;

/// Columns per panel (two 16-lane vectors).
pub const NR: usize = 32;
/// Rows per micro-kernel call.
pub const MR: usize = 8;
/// `k` per block (in values; an even number).
pub const KC: usize = 256;
/// Rows per task.
const MC: usize = 8 * MR;
/// Panels per task.
const NC_PANELS: usize = 8;

/// Which arithmetic runs the products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AMX tiles (`tdpbf16ps`, [`super::amx`]) for whole 32 x 32 blocks and 32 `k` at a
    /// time, `vdpbf16ps` for the edges: the same operands, f32 accumulation in another order.
    Amx,
    /// `vdpbf16ps` (AVX512_BF16).
    Native,
    /// The same arithmetic in ordinary f32 operations (any CPU; slower than f32 products).
    Emulated,
}

impl Kernel {
    /// Whether this CPU has AVX512_BF16 (and the AVX-512 loads and masks the kernel uses).
    pub fn native_available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512bf16")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Whether this CPU has AMX-BF16 (and AVX512_BF16 for the edges) and may use it.
    pub fn amx_available() -> bool {
        Self::native_available() && super::amx::available()
    }

    /// Whether this kernel runs on this CPU.
    pub fn runs_here(self) -> bool {
        match self {
            Kernel::Amx => Self::amx_available(),
            Kernel::Native => Self::native_available(),
            Kernel::Emulated => true,
        }
    }

    /// The kernel products use: the fastest this CPU has (AMX, then AVX512_BF16, then the
    /// emulation), or the one `DDCOLOR_BF16_KERNEL` names (`amx`, `avx512`, `emulated`) where
    /// it runs (the emulation is then tested on any machine). Read once.
    pub fn current() -> Kernel {
        static K: OnceLock<Kernel> = OnceLock::new();
        *K.get_or_init(|| {
            let forced = match std::env::var("DDCOLOR_BF16_KERNEL").as_deref() {
                Ok("amx") => Some(Kernel::Amx),
                Ok("avx512") => Some(Kernel::Native),
                Ok("emulated") => Some(Kernel::Emulated),
                _ => None,
            };
            forced
                .into_iter()
                .chain([Kernel::Amx, Kernel::Native])
                .find(|k| k.runs_here())
                .unwrap_or(Kernel::Emulated)
        })
    }
}

/// f32 to bf16 bits, to nearest with ties to even; NaN stays NaN, subnormals become zero.
/// Without branches, so that the conversion loops vectorise.
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    let nan = (b & 0x7fff_ffff) > 0x7f80_0000;
    let subnormal = b & 0x7f80_0000 == 0;
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
    let v = if nan {
        (b >> 16) | 0x40
    } else if subnormal {
        (b >> 16) & 0x8000
    } else {
        rounded
    };
    v as u16
}

/// bf16 bits to f32 (exact).
#[inline(always)]
pub fn to_f32(x: u16) -> f32 {
    f32::from_bits((x as u32) << 16)
}

/// `x` rounded to bf16 and back (what the products see of an operand).
pub fn round(x: f32) -> f32 {
    to_f32(to_bf16(x))
}

/// The left side: `batch` matrices of `m x k` rows in bf16, `kp` apart.
#[derive(Debug, Clone)]
pub struct Rows {
    data: Vec<u16>,
    pub batch: usize,
    pub m: usize,
    pub k: usize,
    kp: usize,
}

/// The right side: `batch` matrices of `k x n` in column panels (see the file's doc).
#[derive(Debug, Clone)]
pub struct Panels {
    data: Vec<u16>,
    pub batch: usize,
    pub k: usize,
    pub n: usize,
    kp: usize,
}

/// A strided f32 source: element `(b, r, c)` at `data[b * bs + r * rs + c * cs]`.
#[derive(Debug, Clone, Copy)]
pub struct Strided<'a> {
    pub data: &'a [f32],
    pub batch: usize,
    pub rows: usize,
    pub cols: usize,
    pub bs: usize,
    pub rs: usize,
    pub cs: usize,
}

impl Strided<'_> {
    fn check(&self) {
        if self.batch > 0 && self.rows > 0 && self.cols > 0 {
            let last =
                (self.batch - 1) * self.bs + (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
            assert!(last < self.data.len(), "bf16: source reaches past its data");
        }
    }
}

impl Rows {
    /// Round `src` (`batch x m x k`) to bf16 rows.
    pub fn new(src: Strided) -> Rows {
        src.check();
        let (m, k) = (src.rows, src.cols);
        let kp = k.next_multiple_of(2);
        // about 16 KiB of rows per task
        let per_task = 8192usize.checked_div(kp).map_or(1, |t| t.max(1));
        let data = par_zeroed(src.batch * m * kp, kp * per_task, |t, rows| {
            for (j, row) in rows.chunks_exact_mut(kp).enumerate() {
                let i = t * per_task + j;
                let (b, r) = (i / m, i % m);
                let s = &src.data[b * src.bs + r * src.rs..];
                if src.cs == 1 {
                    convert(&s[..k], &mut row[..k]);
                } else {
                    for (c, d) in row[..k].iter_mut().enumerate() {
                        *d = to_bf16(s[c * src.cs]);
                    }
                }
            }
        });
        Rows {
            data,
            batch: src.batch,
            m,
            k,
            kp,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() * 2
    }
}

impl Panels {
    /// Round `src` (`batch x k x n`) to bf16 column panels.
    pub fn new(src: Strided) -> Panels {
        src.check();
        let (k, n) = (src.rows, src.cols);
        let kp = k.next_multiple_of(2);
        let panels = n.div_ceil(NR);
        let per_panel = kp * NR;
        let total = src.batch * panels;
        let data = if src.cs == 1 {
            // a task takes a group of panels and walks the rows once for all of them: each
            // pair of source rows is read as one contiguous run of GROUP * NR values (one
            // panel at a time read 128 bytes per row, rows a whole feature map apart: the
            // loads waited on memory)
            const GROUP: usize = 8;
            let zeros = vec![0f32; n.min(GROUP * NR)];
            par_zeroed(total * per_panel, GROUP * per_panel, |t, group| {
                for pr in 0..kp / 2 {
                    let r = 2 * pr;
                    for (j, panel) in group.chunks_exact_mut(per_panel).enumerate() {
                        let i = t * GROUP + j;
                        let (b, p) = (i / panels, i % panels);
                        let c0 = p * NR;
                        let cols = NR.min(n - c0);
                        let s = &src.data[b * src.bs + c0..];
                        let even = &s[r * src.rs..][..cols];
                        let odd = if r + 1 < k {
                            &s[(r + 1) * src.rs..][..cols]
                        } else {
                            &zeros[..cols]
                        };
                        interleave(even, odd, &mut panel[pr * 2 * NR..][..2 * cols]);
                    }
                }
            })
        } else {
            par_zeroed(total * per_panel, per_panel, |i, panel| {
                let (b, p) = (i / panels, i % panels);
                let c0 = p * NR;
                let cols = NR.min(n - c0);
                let s = &src.data[b * src.bs + c0 * src.cs..];
                for r in 0..k {
                    let dst = &mut panel[(r / 2) * 2 * NR + (r % 2)..];
                    let row = &s[r * src.rs..];
                    for c in 0..cols {
                        dst[2 * c] = to_bf16(row[c * src.cs]);
                    }
                }
            })
        };
        Panels {
            data,
            batch: src.batch,
            k,
            n,
            kp,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() * 2
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }
}

/// `n` values computed in parallel, `chunk` at a time, by `f(chunk index, chunk)`, each chunk
/// zeroed by the thread that fills it (as `common::par_output`: no serial zeroing pass).
fn par_zeroed<F>(n: usize, chunk: usize, f: F) -> Vec<u16>
where
    F: Fn(usize, &mut [u16]) + Sync + Send,
{
    let mut v: Vec<u16> = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| {
            c.fill(std::mem::MaybeUninit::new(0));
            // SAFETY: every element of `c` was initialised just above, and `MaybeUninit<u16>`
            // has the layout of `u16`.
            let c = unsafe { &mut *(c as *mut [std::mem::MaybeUninit<u16>] as *mut [u16]) };
            f(i, c);
        });
    // SAFETY: the chunks cover `0..n` and each was initialised above.
    unsafe { v.set_len(n) };
    v
}

/// `dst[2 c] = even[c]`, `dst[2 c + 1] = odd[c]`, rounded to bf16.
fn interleave(even: &[f32], odd: &[f32], dst: &mut [u16]) {
    let len = dst.len();
    // SAFETY: u16 pairs reinterpreted as u32 words where `dst` is aligned for them
    let (head, words, _) = unsafe { dst.align_to_mut::<u32>() };
    if head.is_empty() && words.len() * 2 == len {
        interleave_words(even, odd, words);
    } else {
        for ((d, &e), &o) in dst.chunks_exact_mut(2).zip(even).zip(odd) {
            d[0] = to_bf16(e);
            d[1] = to_bf16(o);
        }
    }
}

crate::simd::multiversion! {
    /// `dst[c] = bf16(even[c]) | bf16(odd[c]) << 16` (little-endian pairs).
    fn interleave_words(even: &[f32], odd: &[f32], dst: &mut [u32]) {
        for ((d, &e), &o) in dst.iter_mut().zip(even).zip(odd) {
            *d = to_bf16(e) as u32 | (to_bf16(o) as u32) << 16;
        }
    }
}

crate::simd::multiversion! {
    fn convert(src: &[f32], dst: &mut [u16]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = to_bf16(s);
        }
    }
}

/// A raw output pointer shared by the tasks of one product, which write disjoint blocks.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: used only during one product whose tasks write disjoint blocks of the output.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `c[bi] (=|+=) a[bi] b[bi]` for `bi < batch`, `c` holding `batch` contiguous `m x n` blocks
/// (accumulated onto when `read_dst`). A side with a batch of one is shared by every batch.
pub fn gemm(kernel: Kernel, a: &Rows, b: &Panels, c: &mut [f32], read_dst: bool) {
    let len = a.batch.max(b.batch) * a.m * b.n;
    assert!(
        c.len() == len,
        "bf16 gemm: output of {} values for {len}",
        c.len()
    );
    // SAFETY: `c` holds the `len` values the product writes (and reads when `read_dst`).
    unsafe { gemm_raw(kernel, a, b, c.as_mut_ptr(), read_dst) }
}

/// [`gemm`] into raw memory.
///
/// # Safety
/// `c` is valid for writing `batch * m * n` values (and reading them when `read_dst`); when
/// `read_dst` is false they may be uninitialised.
pub unsafe fn gemm_raw(kernel: Kernel, a: &Rows, b: &Panels, c: *mut f32, read_dst: bool) {
    let batch = a.batch.max(b.batch);
    assert!(
        a.k == b.k,
        "bf16 gemm: inner dimensions {} and {} differ",
        a.k,
        b.k
    );
    assert!(
        (a.batch == 1 || a.batch == batch) && (b.batch == 1 || b.batch == batch),
        "bf16 gemm: batches {} and {} differ",
        a.batch,
        b.batch
    );
    let (m, n) = (a.m, b.n);
    if m == 0 || n == 0 {
        return;
    }
    if a.k == 0 {
        if !read_dst {
            std::ptr::write_bytes(c, 0, batch * m * n);
        }
        return;
    }
    assert!(
        kernel.runs_here(),
        "bf16 gemm: {kernel:?} does not run here"
    );
    let (mb, nb) = (m.div_ceil(MC), b.panels().div_ceil(NC_PANELS));
    let out = Out(c);
    (0..batch * mb * nb).into_par_iter().for_each(|t| {
        let (bi, rest) = (t / (mb * nb), t % (mb * nb));
        let (i, j) = (rest / nb, rest % nb);
        let a_off = if a.batch == 1 { 0 } else { bi * a.m * a.kp };
        let b_off = if b.batch == 1 {
            0
        } else {
            bi * b.panels() * b.kp * NR
        };
        // SAFETY: the offsets lie in the operands (batch `bi` of each, or its only one); the
        // task's block lies in `c`, which the caller vouched for
        unsafe {
            let task = Task {
                a: a.data.as_ptr().add(a_off),
                kp: a.kp,
                b: b.data.as_ptr().add(b_off),
                n,
                c: out.get().add(bi * m * n),
                ldc: n,
                p0: 0,
                rows: i * MC..(m.min((i + 1) * MC)),
                panels: j * NC_PANELS..(b.panels().min((j + 1) * NC_PANELS)),
                read_dst,
            };
            run_task(kernel, &task)
        }
    });
}

/// One task on the kernel it names.
///
/// # Safety
/// As [`Task`]'s fields say; `kernel` runs here.
unsafe fn run_task(kernel: Kernel, task: &Task) {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Native => native::task(task),
        #[cfg(target_arch = "x86_64")]
        Kernel::Amx => native::task_amx(task),
        #[cfg(not(target_arch = "x86_64"))]
        Kernel::Native | Kernel::Amx => unreachable!("no such kernel here"),
        Kernel::Emulated => emulated::task(task),
    }
}

/// One block of a product: `rows` of `a` against the columns of `panels` of `b`, all of `k`,
/// into `c`: the output for row `r` and panel `p` starts at `c + r ldc + (p - p0) NR`.
/// Raw pointers, so that a task can also run on a caller's scratch buffers ([`mlp`]).
struct Task {
    /// Row 0 of the left side, rows `kp` values apart (`kp / 2` pairs of `k`).
    a: *const u16,
    kp: usize,
    /// Panel 0 of the right side, panels `kp * NR` values apart.
    b: *const u16,
    /// Columns of the right side (the last panel may be partial).
    n: usize,
    c: *mut f32,
    ldc: usize,
    p0: usize,
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
    /// Accumulate onto `c` (else overwrite it).
    read_dst: bool,
}

/// The loop nest around a micro-kernel `$tile::<R>(a, lda, b, pairs, c, ldc, cols, load)`,
/// shared by the native and emulated kernels so that both add in the same order.
macro_rules! task_body {
    ($t:expr, $tile:ident) => {{
        let t: &Task = $t;
        let (kp, n, ldc) = (t.kp, t.n, t.ldc);
        let pairs = kp / 2;
        let (a, b, c) = (t.a, t.b, t.c);
        let mut k0 = 0;
        while k0 < pairs {
            let np = (KC / 2).min(pairs - k0);
            let load = t.read_dst || k0 > 0;
            for p in t.panels.clone() {
                let cols = NR.min(n - p * NR);
                let bp = b.add((p * pairs + k0) * 2 * NR);
                let mut r = t.rows.start;
                while r < t.rows.end {
                    let rows = MR.min(t.rows.end - r);
                    let ap = a.add(r * kp + 2 * k0);
                    let cp = c.add(r * ldc + (p - t.p0) * NR);
                    match rows {
                        8 => $tile::<8>(ap, kp, bp, np, cp, ldc, cols, load),
                        7 => $tile::<7>(ap, kp, bp, np, cp, ldc, cols, load),
                        6 => $tile::<6>(ap, kp, bp, np, cp, ldc, cols, load),
                        5 => $tile::<5>(ap, kp, bp, np, cp, ldc, cols, load),
                        4 => $tile::<4>(ap, kp, bp, np, cp, ldc, cols, load),
                        3 => $tile::<3>(ap, kp, bp, np, cp, ldc, cols, load),
                        2 => $tile::<2>(ap, kp, bp, np, cp, ldc, cols, load),
                        _ => $tile::<1>(ap, kp, bp, np, cp, ldc, cols, load),
                    }
                    r += rows;
                }
            }
            k0 += np;
        }
    }};
}

#[cfg(target_arch = "x86_64")]
mod native;

mod emulated;
mod mlp;
pub use mlp::{mlp, Mlp};
