//! The bf16 product kernel against the f32 one on DDColor's shapes (x W with the weight on the
//! right, as the ConvNeXt MLPs; W x on the left, as the 1x1 and Winograd convolutions):
//! medians of 7 runs, interleaved, GFLOP/s.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release --example bf16_gemm`
#![allow(clippy::disallowed_macros)] // a tool of our own: printing that panics is fine
use std::time::Instant;

use candle_core::{Device, Tensor};
use ddcolor::kernels::epilogue::Channels;
use ddcolor::kernels::gemm::{self, Weight};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    println!(
        "{:>26} {:>9} {:>9} {:>6}",
        "shape", "f32 GF/s", "bf16 GF/s", "ratio"
    );
    // (m, k, n, weight on the right)
    for (m, k, n, right) in [
        (16384, 96, 384, true),   // tiny stage 1 pwconv1 @512
        (16384, 384, 96, true),   // tiny stage 1 pwconv2
        (1024, 384, 1536, true),  // tiny stage 3 pwconv1
        (1024, 1536, 384, true),  // tiny stage 3 pwconv2
        (256, 768, 3072, true),   // tiny stage 4
        (256, 1536, 6144, true),  // large stage 4
        (4096, 768, 3072, true),  // large stage 3 @512 (1024 rows) x4
        (512, 1280, 4096, false), // Winograd: O x C x tiles
        (256, 512, 16384, false), // 1x1 on a 128x128 plane
    ] {
        let x = if right {
            Tensor::randn(0f32, 1.0, (m, k), &dev)?
        } else {
            Tensor::randn(0f32, 1.0, (k, n), &dev)?
        };
        let w = if right {
            Tensor::randn(0f32, 1.0, (k, n), &dev)?
        } else {
            Tensor::randn(0f32, 1.0, (m, k), &dev)?
        };
        let (wf, wb) = if right {
            (Weight::right(w.clone(), false)?, Weight::right(w, true)?)
        } else {
            (Weight::left(w.clone(), false)?, Weight::left(w, true)?)
        };
        let run = |w: &Weight| -> anyhow::Result<f64> {
            let t = Instant::now();
            if right {
                gemm::matmul_right(&x, w, Channels::Columns, None)?;
            } else {
                gemm::matmul_left(w, &x, Channels::Rows, None)?;
            }
            Ok(t.elapsed().as_secs_f64())
        };
        run(&wf)?;
        run(&wb)?;
        let (mut tf, mut tb) = (vec![], vec![]);
        for _ in 0..7 {
            tf.push(run(&wf)?);
            tb.push(run(&wb)?);
        }
        let flop = 2.0 * (m * k * n) as f64;
        let (gf, gb) = (flop / median(tf) / 1e9, flop / median(tb) / 1e9);
        let side = if right { "xW" } else { "Wx" };
        println!(
            "{:>26} {gf:9.1} {gb:9.1} {:6.2}",
            format!("{side} {m}x{k}x{n}"),
            gb / gf
        );
    }
    Ok(())
}
