//! Kernels compiled for several x86-64 levels and chosen at run time.
//!
//! The release build targets baseline x86-64 (SSE2); a hand-written loop compiled only for that
//! runs at 4 lanes on CPUs with 16. [`multiversion!`] compiles a loop for AVX-512, AVX2+FMA and
//! the baseline and dispatches on what the CPU has, so the model's kernels (`kernels`) and
//! the colour loops (`pipeline`) are vectorised for the machine they run on.

/// Compile a kernel three times (AVX-512, AVX2+FMA, baseline) and pick the best the CPU has at
/// run time. The release build targets baseline x86-64 (SSE2), which would leave every
/// hand-written loop at 4 lanes; the kernel body is `#[inline(always)]` so each copy is
/// vectorised for its own target.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident : $t:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) {
            #[inline(always)]
            fn inner($($a: $t),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx2,fma")]
                unsafe fn v4($($a: $t),*) {
                    inner($($a),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($a: $t),*) {
                    inner($($a),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                {
                    // SAFETY: the CPU has the features v4 was compiled for.
                    return unsafe { v4($($a),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features v3 was compiled for.
                    return unsafe { v3($($a),*) };
                }
            }
            inner($($a),*)
        }
    };
}

pub(crate) use multiversion;
