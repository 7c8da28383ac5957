//! CIE L*a*b* <-> sRGB conversion with the exact formulas behind OpenCV's float `BGR2Lab` /
//! `Lab2BGR` (sRGB companding, OpenCV's sRGB<->XYZ matrices, D65 white 0.950456 / 1 / 1.088754,
//! CIE f(t) with 0.008856 and 7.787): single pixels and planar row kernels.
//!
//! All values are `f32`, RGB in [0, 1], L in 0..100. Input RGB is clipped to [0, 1] before
//! linearisation and linear RGB is clipped to [0, 1] before encoding, as OpenCV does.
//!
//! By job: `lab.rs` (Lab <-> linear RGB), `srgb.rs` (the sRGB transfer curve, decode and
//! encode), `gamut.rs` (what becomes of colours outside sRGB: the clip rule's ab clamp and the
//! fit rule's chroma search).

mod gamut;
mod lab;
mod opencv;
mod srgb;
mod table;

pub use gamut::{clamp_ab, fit_gamut_row, lab_to_rgb_in_gamut, AB_LIMIT, MAX_CHROMA};
pub use lab::{lab_to_linear, lab_to_linear_row, lab_to_rgb, rgb_to_l, rgb_to_lab};
pub use opencv::{lab_to_rgb_opencv, rgb_to_l_opencv, rgb_to_lab_opencv};
pub use srgb::{
    linear_to_srgb, linear_to_srgb_exact, linear_to_srgb_row, srgb_to_linear, srgb_to_linear_exact,
};
