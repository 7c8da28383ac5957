//! How far the bf16 model is from the f32 one on the same checkpoint and input: max and mean
//! |ab_bf16 - ab_f32| over the model's output, as `benches/peers.py` reports for the other
//! runtimes (against PyTorch's f32, which ddcolor's f32 matches to 1e-3).
//!
//! `cargo run --release --example bf16_agreement -- CHECKPOINT.pth SIZE [INPUT.f32]`
//! (INPUT: raw little-endian f32 `[3, SIZE, SIZE]` in [0, 1], as `peers.py --save-input`
//! writes it; default a gray ramp).
#![allow(clippy::disallowed_macros)] // a tool of our own: printing that panics is fine
use candle_core::{DType, Device, Tensor};
use ddcolor::model::DDColor;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(ckpt), Some(size)) = (args.first(), args.get(1)) else {
        anyhow::bail!("usage: bf16_agreement CHECKPOINT SIZE [INPUT.f32]")
    };
    let size: usize = size.parse()?;
    let x: Vec<f32> = match args.get(2) {
        Some(path) => std::fs::read(path)?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        None => (0..3 * size * size)
            .map(|i| (i % (size * size)) as f32 / (size * size) as f32)
            .collect(),
    };
    let x = Tensor::from_vec(x, (1, 3, size, size), &Device::Cpu)?;
    let f32_ab = DDColor::load(ckpt, &Device::Cpu)?.forward(&x)?;
    let bf16_ab = DDColor::load_as(ckpt, &Device::Cpu, DType::BF16)?.forward(&x)?;
    let d = (bf16_ab - &f32_ab)?.abs()?.flatten_all()?;
    let max = d.max(0)?.to_scalar::<f32>()?;
    let mean = d.mean(0)?.to_scalar::<f32>()?;
    let scale = f32_ab.abs()?.flatten_all()?.mean(0)?.to_scalar::<f32>()?;
    println!(
        "{}",
        serde_json::json!({
            "impl": "ddcolor bf16",
            "kernel": format!("{:?}", ddcolor::kernels::bf16::Kernel::current()),
            "size": size,
            "max_ab_diff": (max * 1e4).round() / 1e4,
            "mean_ab_diff": (mean * 1e4).round() / 1e4,
            "mean_abs_ab_f32": (scale * 1e2).round() / 1e2,
        })
    );
    Ok(())
}
