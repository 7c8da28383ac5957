//! Criterion benchmarks: the DDColor forward pass (golden test model, and the released tiny
//! architecture with random weights) and the pre/post-processing of a large scan.
//!
//! `cargo bench --bench forward` (filter with e.g. `-- tiny`).
#![allow(clippy::disallowed_macros)] // a tool of our own: printing that panics is fine
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use ddcolor::model::{Config, DDColor};
use ddcolor::pipeline::{self, ResizeMode};

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/golden")
        .join(name)
}

fn forward(c: &mut Criterion) {
    let dev = Device::Cpu;
    let test = DDColor::load(golden("ddcolor-test.safetensors"), &dev).expect("golden model");
    let x = Tensor::rand(0f32, 1.0, (1, 3, 256, 256), &dev).unwrap();
    c.bench_function("forward/test-model/256", |b| {
        b.iter(|| test.forward(&x).unwrap())
    });

    let tiny = DDColor::random(Config::paper_tiny(), &dev).unwrap();
    let mut g = c.benchmark_group("forward/tiny");
    g.sample_size(10);
    for size in [256usize, 512] {
        let x = Tensor::rand(0f32, 1.0, (1, 3, size, size), &dev).unwrap();
        g.bench_function(size.to_string(), |b| b.iter(|| tiny.forward(&x).unwrap()));
    }
    g.finish();
}

fn pre_post(c: &mut Criterion) {
    // as the ddcolor binary runs: freed buffers are reused, not returned and faulted in again
    ddcolor::alloc::keep_freed_memory();
    // a 6000x4000 gray scan, as 8-bit RGB floats
    let (w, h) = (6000usize, 4000usize);
    let rgb: Vec<f32> = (0..w * h)
        .flat_map(|i| {
            let v = ((i % w) ^ (i / w)) as f32 % 256.0 / 255.0;
            [v, v, v]
        })
        .collect();
    let size = 512;
    let ab = vec![10f32; 2 * size * size];
    let mut g = c.benchmark_group("pipeline/6000x4000");
    g.sample_size(10);
    g.bench_function("prepare", |b| {
        b.iter(|| pipeline::prepare(&rgb, w, h, size))
    });
    let prepared = pipeline::prepare(&rgb, w, h, size);
    for mode in [ResizeMode::Nearest, ResizeMode::Bilinear] {
        g.bench_function(format!("compose/{mode}"), |b| {
            b.iter(|| pipeline::compose(&prepared.l, w, h, &ab, size, mode))
        });
    }
    // what the batch writer runs: straight to an 8-bit RGB image
    let gray = image::DynamicImage::ImageLuma8(
        image::GrayImage::from_raw(
            w as u32,
            h as u32,
            rgb.iter().step_by(3).map(|v| (v * 255.0) as u8).collect(),
        )
        .unwrap(),
    );
    let keep = pipeline::Keep::of(&gray);
    g.bench_function("prepare_image/8-bit gray", |b| {
        b.iter(|| pipeline::prepare_image(&gray, size))
    });
    g.bench_function("compose_image/8-bit/bilinear", |b| {
        b.iter(|| {
            pipeline::compose_image(
                &prepared,
                &ab,
                size,
                ResizeMode::Bilinear,
                pipeline::Gamut::Auto,
                &keep,
            )
        })
    });
    // an archival master: 16-bit gray, written at 16 bits under the fit rule (Auto)
    let gray16 = image::DynamicImage::ImageLuma16(
        image::ImageBuffer::from_raw(
            w as u32,
            h as u32,
            rgb.iter()
                .step_by(3)
                .map(|v| (v * 65535.0) as u16)
                .collect(),
        )
        .unwrap(),
    );
    let keep16 = pipeline::Keep::of(&gray16);
    let prepared16 = pipeline::prepare_image(&gray16, size);
    let ab_sweep: Vec<f32> = (0..2 * size * size)
        .map(|i| {
            let (c, p) = (i / (size * size), i % (size * size));
            let t = p as f32 / (size * size) as f32 * std::f32::consts::TAU * 7.0;
            if c == 0 {
                70.0 * t.sin()
            } else {
                90.0 * t.cos()
            }
        })
        .collect();
    g.bench_function("prepare_image/16-bit gray", |b| {
        b.iter(|| pipeline::prepare_image(&gray16, size))
    });
    // the same ab as the 8-bit case (the fit search runs only where L is near black or white)
    // and the hue sweep: chroma 70-90 over all L, 88% of the pixels outside sRGB (a stress
    // case; real predictions are far less saturated)
    for (name, ab) in [("fit", &ab), ("fit/88%-outside", &ab_sweep)] {
        g.bench_function(format!("compose_image/16-bit/bilinear/{name}"), |b| {
            b.iter(|| {
                pipeline::compose_image(
                    &prepared16,
                    ab,
                    size,
                    ResizeMode::Bilinear,
                    pipeline::Gamut::Auto,
                    &keep16,
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, forward, pre_post);
criterion_main!(benches);
