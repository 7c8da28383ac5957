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
