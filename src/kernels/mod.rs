//! Tensor kernels candle lacks or runs too slowly for DDColor, one job per file. Each op has a
//! CPU kernel (f32, contiguous, compiled for AVX-512/AVX2 with run-time dispatch) and a
//! device-independent fallback built from ordinary tensor ops, so every device computes the
//! same thing; the depthwise convolution also has a CUDA kernel (`depthwise.cu`).
//!
//! The rule: kernels know nothing of the model. They take tensors, shapes and per-channel
//! vectors, never a layer, a checkpoint or a configuration; [`crate::model`] calls them and
//! nothing here imports from it. The files depend on each other downwards only, no cycle:
//!
//! - `common`, [`activation`]: depend on nothing here;
//! - [`epilogue`] (per-channel bias/BatchNorm/activation) on those two;
//! - [`amx`] (AMX tiles) on nothing; [`bf16`] (bf16 products, f32 accumulation) on it and the
//!   epilogue; [`gemm`] on those; [`im2col`] and [`winograd`] (convolutions) on [`gemm`]; [`mlp`] on [`gemm`]
//!   and [`bf16`];
//! - [`norm`] (LayerNorm, softmax) on `exp` from [`activation`]; [`attention`] on [`norm`];
//! - [`depthwise`], [`tail`] and [`transpose`] on `common` only.
pub mod activation;
pub mod amx;
pub mod attention;
pub mod bf16;
pub(crate) mod common;
pub mod depthwise;
pub mod epilogue;
pub mod gemm;
pub mod im2col;
pub mod mlp;
pub mod norm;
pub mod tail;
pub mod transpose;
pub mod winograd;
