//! Colorize one image through the library API (no CLI):
//!
//! ```sh
//! cargo run --release --example colorize_one -- WEIGHTS INPUT OUTPUT [SIZE]
//! cargo run --release --example colorize_one -- \
//!     ../shared/golden/ddcolor-test.safetensors examples/photos/cameraman.png /tmp/cameraman.png 64
//! ```
#![allow(clippy::disallowed_macros)] // a tool of our own: printing that panics is fine
use candle_core::Device;
use ddcolor::pipeline::ResizeMode;
use ddcolor::{imageio, model::DDColor, Colorizer};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [weights, input, output, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: colorize_one WEIGHTS INPUT OUTPUT [SIZE]");
    };
    let size = rest.first().map(|s| s.parse()).transpose()?.unwrap_or(512);
    let model = DDColor::load(weights, &Device::Cpu)?;
    let colorizer = Colorizer::new(model, size, ResizeMode::Bilinear)?;
    let img = imageio::decode(input.as_ref(), imageio::DEFAULT_MAX_PIXELS)?;
    let rgb = colorizer.colorize(&img)?;
    imageio::save(&image::DynamicImage::ImageRgb8(rgb), output.as_ref())?;
    println!("{input} -> {output}");
    Ok(())
}
