//! With the `cuda` feature: compile `src/kernels/depthwise.cu` to PTX with nvcc (for
//! `CUDA_COMPUTE_CAP`, as candle's own kernels), embedded by `src/kernels/depthwise.rs`. Without it:
//! nothing. `scripts/cuda-toolchain.sh` provides nvcc on machines without a CUDA install.
#![allow(clippy::disallowed_macros)] // a tool of our own: printing that panics is fine
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let src = "src/kernels/depthwise.cu";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("depthwise.ptx");
    // the GPU generation, as candle-kernels picks it: CUDA_COMPUTE_CAP, else nvidia-smi's
    // answer, else Hopper (90)
    let cap = env::var("CUDA_COMPUTE_CAP")
        .ok()
        .or_else(smi_cap)
        .unwrap_or_else(|| {
            println!("cargo:warning=CUDA_COMPUTE_CAP unset and no nvidia-smi: building for sm_90");
            "90".into()
        });
    let cap: String = cap.chars().filter(char::is_ascii_digit).collect();
    let nvcc = env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17"])
        .arg(format!("--gpu-architecture=sm_{cap}"))
        .arg("-o")
        .arg(&out)
        .arg(src)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("nvcc failed on {src} ({s})"),
        Err(e) => panic!(
            "cannot run {nvcc} ({e}): the cuda feature needs nvcc; \
             `eval \"$(scripts/cuda-toolchain.sh)\"` installs one (GUIDE.md, section \"CUDA\")"
        ),
    }
}

fn smi_cap() -> Option<String> {
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=compute_cap", "--format=csv,noheader"])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let cap: String = text
        .lines()
        .next()?
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    (out.status.success() && !cap.is_empty()).then_some(cap)
}
