//! What every CPU kernel of this module shares: the test for the f32 CPU path, the contiguous
//! slice of a storage, an output buffer zeroed chunk by chunk by the threads that fill it, and
//! a batch run one image at a time.
use candle_core::{CpuStorage, DType, Device, Layout, Result, Tensor};
use rayon::prelude::*;

pub(crate) fn is_cpu_f32(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32)
}

pub(crate) fn contiguous_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

/// `n` floats computed in parallel, `chunk` at a time, by `f(chunk index, chunk)`. Each chunk is
/// zeroed right before `f` gets it, by the thread that computes it, while it is in cache.
/// `vec![0.0; n]` zeroes all of it on the calling thread first: a serial pass over memory
/// (8% of the tiny model's forward pass on two threads) while the pool waits.
pub(crate) fn par_output<F>(n: usize, chunk: usize, f: F) -> Vec<f32>
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    let mut v: Vec<f32> = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| {
            c.fill(std::mem::MaybeUninit::new(0.0));
            // SAFETY: every element of `c` was initialised just above, and `MaybeUninit<f32>`
            // has the layout of `f32`.
            let c = unsafe { &mut *(c as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) };
            f(i, c);
        });
    // SAFETY: the chunks cover `0..n` and each was initialised above.
    unsafe { v.set_len(n) };
    v
}

/// `f` of each image of the batch `x` (`[B, ...]`), given as a contiguous batch of one and
/// returning one: the convolutions' scratch (column matrix, Winograd transforms) then follows
/// one image, not the batch.
pub(crate) fn per_image(x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let b = x.dim(0)?;
    if b == 1 {
        return f(&x.contiguous()?);
    }
    let images = (0..b)
        .map(|i| f(&x.narrow(0, i, 1)?.contiguous()?))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&images, 0)
}

/// `f` run with a pool of one thread, the calling one: every parallel loop inside it runs in
/// turn here, and no other thread is woken (nor is this one put to sleep waiting for one).
/// For work too small to share: a forward pass at 32 px wakes the pool some 170 times (futex,
/// sched_yield) for microseconds of work each, and composing a thumbnail a dozen times more,
/// so that on thumbnails the kernel's scheduler cost more time than the work. Each calling
/// thread builds its pool once (rayon's `use_current_thread`); on a thread that is already a
/// rayon worker, `f` runs as it is.
pub fn on_one_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    thread_local! {
        static POOL: Option<rayon::ThreadPool> = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .use_current_thread()
            .build()
            .ok();
    }
    // the pool is this thread's own: `install` runs `f` right here
    POOL.with(|pool| match pool {
        Some(p) => p.install(f),
        None => f(),
    })
}

/// Threads for the matrix products: candle's choice (`RAYON_NUM_THREADS`, else the physical
/// cores), decided once per process. candle answers through `num_cpus::get_physical()`, which
/// parses `/proc/cpuinfo` on every call: per product that was 77 reads an image, and on a
/// many-core host (a larger file) milliseconds each.
pub(crate) fn threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(candle_core::utils::get_num_threads)
}
