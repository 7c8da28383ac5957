//! AMX tiles (Intel Sapphire Rapids and later): 32 x 32 blocks of the bf16 products through
//! `tdpbf16ps`, for [`super::bf16`]. Rust has no stable AMX intrinsics, so the tile
//! instructions are inline assembly; the compiler never uses the tile registers itself, so they
//! keep their contents between the `asm!` statements of one block.
//!
//! The tiles are all 16 rows of 64 bytes (palette 1): `tmm0..3` the 2 x 2 accumulators (16 x 16
//! f32 each), `tmm4`/`tmm5` the two 16-row halves of 32 `k` of the left rows, `tmm6`/`tmm7` the
//! two 16-column halves of 16 pairs of `k` of a right panel, which [`super::bf16::Panels`] lays
//! out exactly as the instruction reads it (a pair of `k` per column, 128 bytes per pair row).
//! Linux hands out the tile state only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), once
//! per process.
use std::sync::OnceLock;

/// `arch_prctl` request for permission to use an extended state component.
const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
/// The AMX tile data state component.
const XFEATURE_XTILEDATA: i64 = 18;

/// Whether this CPU has AMX-BF16 and the kernel granted the tile state (asked once).
pub fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            // CPUID.(EAX=7, ECX=0):EDX bit 22 AMX-BF16, bit 24 AMX-TILE
            // SAFETY: CPUID leaf 7 exists on every x86-64 CPU this code runs on (it reports
            // zeros where it is not implemented); the intrinsic is safe from Rust 1.94.
            #[allow(unused_unsafe)]
            let id = unsafe { std::arch::x86_64::__cpuid_count(7, 0) };
            if id.edx & (1 << 22) == 0 || id.edx & (1 << 24) == 0 {
                return false;
            }
            // SAFETY: a plain system call with integer arguments.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_arch_prctl,
                    ARCH_REQ_XCOMP_PERM,
                    XFEATURE_XTILEDATA,
                )
            };
            r == 0
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        {
            false
        }
    })
}

/// The tile configuration: palette 1, eight tiles of 16 rows x 64 bytes.
#[repr(C, align(64))]
struct Config([u8; 64]);

const CONFIG: Config = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64; // bytes per row (u16, little end)
        c[48 + t] = 16; // rows
        t += 1;
    }
    Config(c)
};

/// Load the tile configuration on this thread.
///
/// # Safety
/// [`available`] returned true.
#[cfg(target_arch = "x86_64")]
pub unsafe fn configure() {
    std::arch::asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
}

/// Release the tile state of this thread.
///
/// # Safety
/// [`available`] returned true.
#[cfg(target_arch = "x86_64")]
pub unsafe fn release() {
    std::arch::asm!("tilerelease", options(nostack, nomem));
}

/// `c[32 x 32] (=|+=) a[32 x 32 steps] b[32 steps x 32]`: `a` the first of 32 bf16 rows `lda`
/// values apart, `b` a panel of [`super::bf16::NR`] = 32 columns (128 bytes per pair of `k`),
/// `c` f32 rows `ldc` values apart.
///
/// # Safety
/// [`configure`] ran on this thread; the 32 rows of `32 steps` values from `a`, the
/// `16 steps` pair rows from `b` and the 32 x 32 block of `c` are in bounds.
#[cfg(target_arch = "x86_64")]
pub unsafe fn block(
    a: *const u16,
    lda: usize,
    b: *const u16,
    steps: usize,
    c: *mut f32,
    ldc: usize,
    load: bool,
) {
    use std::arch::asm;
    let (sa, sc) = (lda * 2, ldc * 4);
    let c1 = c.add(16 * ldc);
    if load {
        asm!(
            "tileloadd tmm0, [{c0} + {sc}]",
            "tileloadd tmm1, [{c0} + {sc} + 64]",
            "tileloadd tmm2, [{c1} + {sc}]",
            "tileloadd tmm3, [{c1} + {sc} + 64]",
            c0 = in(reg) c, c1 = in(reg) c1, sc = in(reg) sc,
            options(nostack, readonly)
        );
    } else {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
    }
    let a1 = a.add(16 * lda);
    for s in 0..steps {
        asm!(
            "tileloadd tmm4, [{a0} + {sa}]",
            "tileloadd tmm5, [{a1} + {sa}]",
            "tileloadd tmm6, [{b} + {sb}]",
            "tileloadd tmm7, [{b} + {sb} + 64]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            a0 = in(reg) a.add(32 * s),
            a1 = in(reg) a1.add(32 * s),
            b = in(reg) b.add(32 * 32 * s),
            sa = in(reg) sa,
            sb = in(reg) 128usize,
            options(nostack, readonly)
        );
    }
    asm!(
        "tilestored [{c0} + {sc}], tmm0",
        "tilestored [{c0} + {sc} + 64], tmm1",
        "tilestored [{c1} + {sc}], tmm2",
        "tilestored [{c1} + {sc} + 64], tmm3",
        c0 = in(reg) c, c1 = in(reg) c1, sc = in(reg) sc,
        options(nostack)
    );
}
