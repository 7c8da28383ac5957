//! Allocator tuning for the forward pass.
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
