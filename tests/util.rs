//! Shared test helpers: where the golden files are, and tensor comparisons that print both sides.
#![allow(dead_code)]
use std::path::PathBuf;

use candle_core::Tensor;

/// `../shared`, beside the repository, or `$DDCOLOR_SHARED` (a test binary run on another
/// machine, as scripts/gpu-check.sh does, where the build-time path does not exist).
pub fn shared() -> PathBuf {
    std::env::var_os("DDCOLOR_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

/// `../shared/golden`.
pub fn golden(name: &str) -> PathBuf {
    shared().join("golden").join(name)
}

/// `../shared/fixtures`.
pub fn fixtures(name: &str) -> PathBuf {
    shared().join("fixtures").join(name)
}

/// Largest absolute difference of two tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Largest absolute value of a tensor.
pub fn max_abs(a: &Tensor) -> f32 {
    a.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The ddcolor binary under test: the one cargo built, or `$DDCOLOR_BIN` (see [`shared`]).
pub fn ddcolor_bin() -> PathBuf {
    std::env::var_os("DDCOLOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ddcolor")))
}

/// Run `c` under an address-space limit of `bytes` (RLIMIT_AS): an allocation past it fails,
/// as under a memory-limited job.
pub fn limit_address_space(c: &mut std::process::Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit(2) only, between fork and exec
    unsafe {
        c.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
