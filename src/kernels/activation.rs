//! The activations the kernels apply as they write (identity, ReLU, exact GELU), and the
//! vectorisable `erf` and `exp` they are built from.
use candle_core::{Result, Tensor};

/// An activation applied inside [`channel_op`](super::epilogue::channel_op).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Identity,
    Relu,
    /// Exact (erf) GELU, PyTorch's `nn.GELU()`.
    Gelu,
}

/// `erf` to within 1.5e-7 (Abramowitz & Stegun 7.1.26), branch-free apart from the sign.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    let y = 1.0 - poly * exp_neg(-a * a);
    y.copysign(x)
}

/// `e^x` for `x <= 0` to about 2e-7 relative, in plain arithmetic so that loops calling it
/// vectorise (the libm call does not): `2^(x log2 e)` split into an integer power, built in
/// the exponent bits, and a degree-6 polynomial for the fraction in [-0.5, 0.5].
#[inline(always)]
pub(crate) fn exp_neg(x: f32) -> f32 {
    let t = x.max(-87.0) * std::f32::consts::LOG2_E;
    let n = (t + 0.5).floor();
    let f = t - n;
    let p = 1.0
        + f * (std::f32::consts::LN_2
            + f * (0.240_226_5
                + f * (0.055_504_11
                    + f * (0.009_618_129 + f * (0.001_333_355_8 + f * 0.000_154_035_3)))));
    // 2^n from the exponent bits. n + 127 is a whole number in [1, 127]; adding 2^23 leaves it
    // in the low mantissa bits, read off as an integer: a float-to-int `as` cast saturates and
    // LLVM then converts lane by lane, which kept GELU loops from vectorising
    const MAGIC: f32 = 8_388_608.0; // 2^23
    let biased = (n + (127.0 + MAGIC)).to_bits() - MAGIC.to_bits();
    p * f32::from_bits(biased << 23)
}

#[inline(always)]
pub(super) fn apply(act: Act, v: f32) -> f32 {
    match act {
        Act::Identity => v,
        Act::Relu => v.max(0.0),
        Act::Gelu => 0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2)),
    }
}

impl Act {
    /// The activation with candle's (serial) element-wise ops.
    pub fn tensor(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Act::Identity => Ok(x.clone()),
            Act::Relu => x.relu(),
            Act::Gelu => x.gelu_erf(),
        }
    }
}
