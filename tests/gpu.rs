//! The CUDA path (built with `--features cuda`): the depthwise kernel against the CPU one, the
//! golden forward passes in f32 (TF32 off), bf16 and f16, and the whole pipeline through the
//! CLI. Without a GPU each test says so and returns, unless `DDCOLOR_REQUIRE_GPU=1`
//! (`scripts/gpu-check.sh` sets it), which turns a missing GPU into a failure.
use candle_core::{DType, Device, Tensor};
use ddcolor::device::DeviceSpec;
use ddcolor::kernels::depthwise;
use ddcolor::model::DDColor;

use crate::util::{golden, max_abs, max_abs_diff};

/// CUDA device 0, or `None` (after saying why) when there is none and none is required.
fn gpu() -> Option<Device> {
    match DeviceSpec::Cuda(0).open() {
        Ok((d, _)) => Some(d),
        Err(e) if std::env::var_os("DDCOLOR_REQUIRE_GPU").is_some() => {
            panic!("DDCOLOR_REQUIRE_GPU is set but no GPU opened: {e}")
        }
        Err(e) => {
            eprintln!("no GPU, CUDA test skipped: {e}");
            None
        }
    }
}

#[test]
fn depthwise_kernel_matches_the_cpu_kernel() {
    let Some(dev) = gpu() else { return };
    // odd sizes, channel counts off the warp width, both kernel sizes, batch > 1
    for (n, h, w, c, k) in [(1, 13, 17, 96, 7), (2, 8, 5, 33, 7), (1, 9, 9, 7, 3)] {
        let x = Tensor::randn(0f32, 1.0, (n, h, w, c), &Device::Cpu).unwrap();
        let wt = Tensor::randn(0f32, 0.2, (k, k, c), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 1.0, c, &Device::Cpu).unwrap();
        let want = depthwise::depthwise_conv_nhwc(&x, &wt, &b).unwrap();
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 3e-2), (DType::F16, 4e-3)] {
            let on = |t: &Tensor| t.to_dtype(dtype).unwrap().to_device(&dev).unwrap();
            let back = |t: Tensor| {
                t.to_dtype(DType::F32)
                    .unwrap()
                    .to_device(&Device::Cpu)
                    .unwrap()
            };
            let got = back(depthwise::depthwise_conv_nhwc(&on(&x), &on(&wt), &on(&b)).unwrap());
            let d = max_abs_diff(&got, &want);
            let scale = max_abs(&want);
            assert!(
                d <= tol * scale,
                "{dtype:?} {n}x{h}x{w}x{c} k{k}: max |diff| {d} (scale {scale})"
            );
            // and the kernel is what ran: the tensor-op version agrees too
            let shifted =
                back(depthwise::depthwise_conv_nhwc_shifted(&on(&x), &on(&wt), &on(&b)).unwrap());
            assert!(max_abs_diff(&shifted, &want) <= tol * scale);
        }
    }
}

#[test]
fn golden_outputs_on_cuda_in_every_dtype() {
    let Some(dev) = gpu() else { return };
    candle_core::cuda::set_gemm_reduced_precision_f32(false);
    let io = candle_core::safetensors::load(golden("ddcolor-test-io.safetensors"), &Device::Cpu)
        .unwrap();
    // f32: the parity bar of the CPU port; bf16 (8 significant bits) and f16 (11): what the
    // rounding of each grows to through the network, measured on the CPU for f16 (2.5e-3 of
    // the output range) and scaled by the 8x coarser bf16 step
    for (dtype, rel) in [
        (DType::F32, None),
        (DType::F16, Some(6e-3)),
        (DType::BF16, Some(4e-2)),
    ] {
        let model = DDColor::load_as(golden("ddcolor-test.safetensors"), &dev, dtype).unwrap();
        for case in ["sq", "wide", "batch"] {
            let want = &io[&format!("{case}.output")];
            let x = io[&format!("{case}.input")].to_device(&dev).unwrap();
            let out = model.forward(&x).unwrap().to_device(&Device::Cpu).unwrap();
            let d = max_abs_diff(&out, want);
            let tol = rel.map_or(1e-3, |r| r * max_abs(want));
            eprintln!("cuda {dtype:?} {case}: max |diff| {d} (tol {tol})");
            assert!(d <= tol, "cuda {dtype:?} {case}: max |diff| {d} > {tol}");
        }
    }
}

#[test]
fn whole_pipeline_on_cuda_stays_within_a_level() {
    if gpu().is_none() {
        return;
    }
    for (dtype, min_within1, max_level, max_mean) in [
        // f32: the CPU parity bar (tests/cli.rs)
        ("f32", 0.995, 4, 0.3),
        ("f16", 0.99, 6, 0.4),
        // bf16: the bar for making it the GPU default (device::Precision)
        ("bf16", 0.97, 12, 0.8),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let o = crate::cli::colorize_e2e(
            &out,
            "ddcolor-test.safetensors",
            &[
                "--resize", "bilinear", "--device", "cuda", "--dtype", dtype, "--cache", "none",
            ],
        );
        assert!(
            o.status.success(),
            "{dtype}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let (within1, max, mean) = crate::cli::agreement(
            &out.join("e2e-gray.png"),
            &golden("e2e-expected-bilinear.png"),
        );
        eprintln!("cuda {dtype}: {within1:.5} within 1, max {max}, mean {mean:.4}");
        assert!(
            within1 >= min_within1 && max <= max_level && mean <= max_mean,
            "cuda {dtype}: {:.4}% within 1 level, max {max}, mean {mean:.3}",
            within1 * 100.0
        );
    }
}
