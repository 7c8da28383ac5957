//! How long a checkpoint takes from the file (in the page cache after the first round) to the
//! end of the first forward pass: `DDColor::load_known` with the identity known (what a run
//! does when the hash index already knows the file), then `DDColor::load` (the digest of the
//! weights computed beside the load), each followed by one forward pass at SIZE.
//!
//! `cargo run --release --example load_time -- CHECKPOINT [SIZE] [ROUNDS]`
#![allow(clippy::disallowed_macros)] // a tool of our own: printing that panics is fine
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use ddcolor::model::DDColor;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().expect("a checkpoint path");
    let size: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let rounds: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let dev = Device::Cpu;
    let x = Tensor::rand(0f32, 1.0, (1, 3, size, size), &dev)?;
    let identity = DDColor::load(path, &dev)?.identity().to_owned();
    for round in 0..rounds {
        for known in [true, false] {
            let t = Instant::now();
            let model = if known {
                DDColor::load_known(path, &dev, DType::F32, Some(identity.clone()))?
            } else {
                DDColor::load(path, &dev)?
            };
            let loaded = t.elapsed();
            model.forward(&x)?;
            println!(
                "round {round} identity {}: load {:6.0} ms, first forward at {size} done {:6.0} ms",
                if known { "known   " } else { "computed" },
                loaded.as_secs_f64() * 1e3,
                t.elapsed().as_secs_f64() * 1e3
            );
        }
    }
    Ok(())
}
