//! A lookup table indexed by a float's bits: exponent and leading mantissa bits, for curves
//! (cube root, the sRGB decode) evaluated many times per pixel.

/// A smooth function on `[2^lo, 1]` read from a table indexed by the argument's own float
/// bits: `2^per_octave_log2` points per octave (within an octave a float is linear in its
/// bits), interpolated linearly. A few loads and a multiply instead of `powf`/`cbrt`, which
/// were most of the cost of converting a large scan. `N` (the table's length, fixed by
/// `lo` and the density) is a constant so that the index needs no bounds check and a loop of
/// lookups vectorises (gathers).
pub(super) struct BitTable<const N: usize> {
    lo_bits: u32,
    shift: u32,
    values: Box<[f32; N]>,
}

impl<const N: usize> BitTable<N> {
    pub(super) fn new(lo_exp: i32, per_octave_log2: u32, f: impl Fn(f64) -> f64) -> Self {
        let lo_bits = ((127 + lo_exp) as u32) << 23;
        let shift = 23 - per_octave_log2;
        let n = (((1.0f32.to_bits() - lo_bits) >> shift) + 2) as usize;
        assert_eq!(
            n, N,
            "table length for 2^{lo_exp}..1 at 2^{per_octave_log2}/octave"
        );
        let values: Vec<f32> = (0..n)
            .map(|i| f(f32::from_bits(lo_bits + ((i as u32) << shift)) as f64) as f32)
            .collect();
        Self {
            lo_bits,
            shift,
            values: values
                .into_boxed_slice()
                .try_into()
                .expect("length checked"),
        }
    }

    /// `f(v)` for `v` in `[2^lo, 1]` (the caller keeps it there; outside, a finite value of
    /// no meaning).
    #[inline(always)]
    pub(super) fn eval(&self, v: f32) -> f32 {
        let rel = v.to_bits().wrapping_sub(self.lo_bits);
        let i = ((rel >> self.shift) as usize).min(N - 2);
        let frac = (rel & ((1 << self.shift) - 1)) as f32 * (1.0 / (1u32 << self.shift) as f32);
        let (t0, t1) = (self.values[i], self.values[i + 1]);
        t0 + (t1 - t0) * frac
    }
}
