//! Where the forward pass spends its time, for a released architecture with random weights:
//! the parts of `forward` (`forward_staged`), then the wall time between the intermediates
//! that `forward_traced` reports (the upstream order, whose tail forms the full-resolution
//! feature and query maps that `forward` never does).
//!
//! `cargo run --release --example stage_times -- [tiny|large] [SIZE] [f32|bf16]`
//!
//! Each part also prints the process's peak RSS so far; with `NO_WARMUP=1` the first pass is
//! the timed one, so that the peaks say which part reaches them.
#![allow(clippy::disallowed_macros)] // a tool of our own: printing that panics is fine
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use ddcolor::model::{Config, DDColor};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match args.first().map(String::as_str) {
        Some("large") => Config::large(),
        _ => Config::paper_tiny(),
    };
    let size: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(512);
    let dtype = match args.get(2).map(String::as_str) {
        Some("bf16") => DType::BF16,
        _ => DType::F32,
    };
    ddcolor::alloc::keep_freed_memory();
    let model = DDColor::random_as(cfg, &Device::Cpu, dtype)?;
    let x = Tensor::rand(0f32, 1.0, (1, 3, size, size), &Device::Cpu)?;
    if std::env::var_os("NO_WARMUP").is_none() {
        model.forward(&x)?; // warm-up
    }
    for _ in 0..2 {
        let mut last = Instant::now();
        model.forward_staged(&x, &mut |name| {
            let now = Instant::now();
            let hwm = std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| {
                    let l = s.lines().find(|l| l.starts_with("VmHWM"))?.to_owned();
                    Some(l.split_whitespace().nth(1)?.parse::<u64>().ok()? / 1024)
                })
                .unwrap_or(0);
            println!(
                "{name:>24}: {:7.1} ms (peak RSS so far {hwm} MB)",
                (now - last).as_secs_f64() * 1e3
            );
            last = now;
        })?;
        println!();
    }
    for _ in 0..2 {
        let t0 = Instant::now();
        let mut last = t0;
        model.forward_traced(&x, &mut |name, _| {
            let now = Instant::now();
            println!("{name:>24}: {:7.1} ms", (now - last).as_secs_f64() * 1e3);
            last = now;
            Ok(())
        })?;
        println!(
            "{:>24}: {:7.1} ms",
            "refine (upstream order)",
            last.elapsed().as_secs_f64() * 1e3
        );
        let t = Instant::now();
        model.forward(&x)?;
        println!(
            "traced total {:.1} ms; forward() {:.1} ms\n",
            t0.elapsed().as_secs_f64() * 1e3 - t.elapsed().as_secs_f64() * 1e3,
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}
