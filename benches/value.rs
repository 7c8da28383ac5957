//! Cache values: bytes per value and encode/decode time, beside the compose time of the same
//! image, for predictions of a real-architecture model (BENCHMARKS.md, "Cache values").
//!
//! ```sh
//! ~/refenv/bin/python ../shared/reference/random_checkpoint.py /tmp/tiny.pth --encoder convnext-t --seed 1 --ab 25
//! DDCOLOR_BENCH_WEIGHTS=/tmp/tiny.pth cargo bench --bench value
//! ```
//!
//! Without `DDCOLOR_BENCH_WEIGHTS` it uses the golden test model, whose random predictions are
//! noise, not what a trained (or `random_checkpoint.py`) model predicts: its figures say
//! nothing about real values. `DDCOLOR_BENCH_SIZES` (default `512 1024`), `DDCOLOR_BENCH_RUNS`
//! (default 15).
#![allow(clippy::disallowed_macros)] // a tool of our own: printing that panics is fine
use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use ddcolor::cache::value;
use ddcolor::pipeline::{Keep, ResizeMode};
use ddcolor::{imageio, model::DDColor, Colorizer};

fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(rel)
}

/// Schema 1 (before compression), for its timings: quantised i16 planes behind a SHA-256.
fn encode_v1(ab: &[f32]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let payload: Vec<u8> = ab
        .iter()
        .flat_map(|&v| ((v / value::STEP).round().clamp(-32768.0, 32767.0) as i16).to_le_bytes())
        .collect();
    let mut out = b"DDAB".to_vec();
    out.extend_from_slice(&[0u8; 12]);
    out.extend_from_slice(&Sha256::digest(&payload));
    out.extend_from_slice(&payload);
    out
}

fn decode_v1(bytes: &[u8]) -> Option<Vec<f32>> {
    use sha2::{Digest, Sha256};
    let payload = &bytes[48..];
    (Sha256::digest(payload)[..] == bytes[16..48]).then(|| {
        payload
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32 * value::STEP)
            .collect()
    })
}

/// Median of `runs` timings of `f`, in ms.
fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes --bench; nothing else is taken
    let weights = std::env::var_os("DDCOLOR_BENCH_WEIGHTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| shared("golden/ddcolor-test.safetensors"));
    let sizes: Vec<usize> = std::env::var("DDCOLOR_BENCH_SIZES")
        .unwrap_or_else(|_| "512 1024".to_owned())
        .split_whitespace()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let runs: usize = std::env::var("DDCOLOR_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(15);
    let photos = [
        "photos/coffee.jpg",
        "photos/cameraman.png",
        "photos/1950s/cat-on-the-porch.jpg",
        "photos/rocket.jpg",
    ];
    println!("weights: {}", weights.display());
    println!(
        "times: medians in ms; compose: the output of a hit for the photo enlarged to 4000 px"
    );
    println!(
        "{:<5} {:<22} {:>9} {:>9} {:>9} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "size",
        "photo",
        "v1 bytes",
        "v1 enc",
        "v1 dec",
        "ratio",
        "v2 bytes",
        "v2 enc",
        "v2 dec",
        "compose"
    );
    for &size in &sizes {
        let model = DDColor::load(&weights, &Device::Cpu)?;
        let colorizer = Colorizer::new(model, size, ResizeMode::Bilinear)?;
        let (mut raw_sum, mut enc_sum) = (0usize, 0usize);
        for photo in photos {
            let img = imageio::decode(&shared(&format!("fixtures/{photo}")), u64::MAX)?;
            let prepared = ddcolor::pipeline::prepare_image(&img, size);
            let ab = colorizer.predict(&[&prepared.model_input])?.remove(0);
            let raw = 48 + 2 * ab.len();
            let stored = value::encode(&ab, size, 2);
            assert_eq!(
                value::decode(&stored, size, 2),
                Some(value::quantise(&ab)),
                "lossless"
            );
            let enc = median_ms(runs, || {
                std::hint::black_box(value::encode(&ab, size, 2));
            });
            let dec = median_ms(runs, || {
                std::hint::black_box(value::decode(&stored, size, 2));
            });
            // what a value costs next to the rest of a hit: composing the output of a scan (the
            // photo enlarged to 4000 px on its long side, 8-bit)
            let scale = 4000.0 / img.width().max(img.height()) as f64;
            let scan = img.resize_exact(
                (img.width() as f64 * scale).round() as u32,
                (img.height() as f64 * scale).round() as u32,
                image::imageops::FilterType::Triangle,
            );
            let scan_prepared = ddcolor::pipeline::prepare_image(&scan, size);
            let compose = median_ms(runs.min(5), || {
                std::hint::black_box(colorizer.compose_image(
                    &scan_prepared,
                    &ab,
                    &Keep::default(),
                ));
            });
            let v1 = encode_v1(&ab);
            assert_eq!(v1.len(), raw);
            let enc1 = median_ms(runs, || {
                std::hint::black_box(encode_v1(&ab));
            });
            let dec1 = median_ms(runs, || {
                std::hint::black_box(decode_v1(&v1));
            });
            println!(
                "{:<5} {:<22} {:>9} {:>9.2} {:>9.2} {:>5.2}x {:>9} {:>9.2} {:>9.2} {:>9.2}",
                size,
                photo.rsplit('/').next().unwrap(),
                raw,
                enc1,
                dec1,
                raw as f64 / stored.len() as f64,
                stored.len(),
                enc,
                dec,
                compose,
            );
            raw_sum += raw;
            enc_sum += stored.len();
        }
        println!(
            "{size}: mean {} bytes per value ({:.0} KiB), raw {} ({:.0} KiB)",
            enc_sum / photos.len(),
            enc_sum as f64 / photos.len() as f64 / 1024.0,
            raw_sum / photos.len(),
            raw_sum as f64 / photos.len() as f64 / 1024.0,
        );
    }
    Ok(())
}
