//! Allocator tuning for the forward pass, and full-resolution image buffers kept for reuse.
//!
//! Every layer allocates fresh tensors of tens to hundreds of megabytes. glibc serves blocks
//! over its mmap threshold (at most 32 MiB) with a fresh `mmap` and returns them with `munmap`
//! on free, so each such tensor costs page faults and the kernel zeroing every page again:
//! about a tenth of the CPU forward pass. Raising the threshold (and the trim threshold) keeps
//! freed blocks in the heap for the next layer to reuse. Peak memory is unchanged: it is the
//! same blocks, kept rather than returned and faulted in again.

/// Keep freed memory for reuse instead of returning large blocks to the OS (glibc only; a
/// no-op elsewhere). Call once, early, from a program that runs the model.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: mallopt only changes allocator tuning parameters; it is called before the
        // program allocates large blocks and takes plain integers.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 1 << 30);
            mallopt(M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}

/// Return the freed heap memory to the OS (glibc's `malloc_trim`; a no-op elsewhere): for after
/// a load whose temporaries (checkpoint tensors in f32, converted and laid out into the
/// weights the layers keep) would otherwise stay in the heap under [`keep_freed_memory`].
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only releases free heap pages; it takes a plain integer.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Full-resolution buffers of one image (the composed output: 72 MB for a 24-megapixel RGB
/// scan, 144 MB at 16 bits), kept for the next image instead of freed.
///
/// glibc serves a request over 64 MiB from a thread other than the main one with a fresh
/// `mmap` whatever [`keep_freed_memory`] says (a thread's arena cannot grow that far), so
/// every such buffer was faulted in and zeroed by the kernel again: on a virtual machine a
/// third of the CPU time of a warm run on 24 MP JPEGs. A kept buffer's pages stay mapped.
/// At most [`Pool::KEEP`] buffers are kept, the largest ones, so memory between images is
/// what the largest recent image needed, not more.
pub struct Pool<T> {
    free: std::sync::Mutex<Vec<Vec<T>>>,
}

impl<T> Pool<T> {
    /// How many buffers are kept (one per writer thread, as the engine runs two).
    pub const KEEP: usize = 2;

    pub const fn new() -> Self {
        Self {
            free: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// An empty vector with room for `len` elements: the smallest kept buffer that is large
    /// enough, else a new allocation. Its spare capacity holds whatever was there before.
    pub fn take(&self, len: usize) -> Vec<T> {
        let mut free = crate::sync::lock(&self.free);
        let fit = (0..free.len())
            .filter(|&i| free[i].capacity() >= len)
            .min_by_key(|&i| free[i].capacity());
        match fit {
            Some(i) => free.swap_remove(i),
            None => {
                drop(free);
                Vec::with_capacity(len)
            }
        }
    }

    /// Keep `buf`'s memory for a later [`Pool::take`] (its contents are dropped).
    pub fn give(&self, mut buf: Vec<T>) {
        buf.clear();
        if buf.capacity() == 0 {
            return;
        }
        let mut free = crate::sync::lock(&self.free);
        free.push(buf);
        if free.len() > Self::KEEP {
            // drop the smallest: the largest serve every image the smaller ones would
            let small = (0..free.len()).min_by_key(|&i| free[i].capacity());
            if let Some(i) = small {
                let dropped = free.swap_remove(i);
                drop(free);
                drop(dropped);
            }
        }
    }
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Element types whose full-resolution buffers are pooled ([`Pool`]).
pub trait Pooled: Sized + 'static {
    fn pool() -> &'static Pool<Self>;
}

macro_rules! pooled {
    ($($t:ty),*) => {$(
        impl Pooled for $t {
            fn pool() -> &'static Pool<$t> {
                static POOL: Pool<$t> = Pool::new();
                &POOL
            }
        }
    )*};
}
pooled!(u8, u16, f32);

/// Return a composed image's buffer to its [`Pool`] once it has been written.
pub fn recycle(img: image::DynamicImage) {
    use image::DynamicImage as D;
    match img {
        D::ImageLuma8(b) => u8::pool().give(b.into_raw()),
        D::ImageLumaA8(b) => u8::pool().give(b.into_raw()),
        D::ImageRgb8(b) => u8::pool().give(b.into_raw()),
        D::ImageRgba8(b) => u8::pool().give(b.into_raw()),
        D::ImageLuma16(b) => u16::pool().give(b.into_raw()),
        D::ImageLumaA16(b) => u16::pool().give(b.into_raw()),
        D::ImageRgb16(b) => u16::pool().give(b.into_raw()),
        D::ImageRgba16(b) => u16::pool().give(b.into_raw()),
        D::ImageRgb32F(b) => f32::pool().give(b.into_raw()),
        D::ImageRgba32F(b) => f32::pool().give(b.into_raw()),
        other => drop(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_buffer_is_reused_and_only_the_largest_are_kept() {
        let pool = Pool::<u8>::new();
        let a = pool.take(1000);
        let a_ptr = a.as_ptr();
        pool.give(a);
        // smaller requests are served from the kept buffer, without copying
        let b = pool.take(10);
        assert_eq!(b.as_ptr(), a_ptr);
        assert!(b.is_empty() && b.capacity() >= 1000);
        // a larger one is a new allocation
        let c = pool.take(5000);
        assert!(c.capacity() >= 5000 && c.as_ptr() != a_ptr);
        pool.give(b);
        pool.give(c);
        pool.give(Vec::with_capacity(3000));
        let kept: Vec<usize> = crate::sync::lock(&pool.free)
            .iter()
            .map(Vec::capacity)
            .collect();
        assert_eq!(kept.len(), Pool::<u8>::KEEP);
        assert!(kept.iter().all(|&c| c >= 3000), "{kept:?}");
    }
}
