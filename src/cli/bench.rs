//! `ddcolor bench`: time the model's forward pass; one JSON line, the same fields as the
//! PyTorch reference script's `bench`.
use std::path::PathBuf;

use clap::Args;

use super::error::CliError;
use super::exit::ExitCode;
use super::settings::resolve_weights;
use crate::colorizer::DEFAULT_SIZE;
use crate::device::{self, DeviceSpec};
use crate::error::Error;
use crate::model::DDColor;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Architecture to time when no --weights is given (random weights): tiny or large.
    #[arg(long, default_value = "tiny", value_name = "ARCH")]
    pub arch: String,
    /// Time this checkpoint instead of random weights.
    #[arg(long, short = 'w', value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// Time this released model (found locally or downloaded) instead of random weights.
    #[arg(long, short = 'm', value_enum, value_name = "NAME")]
    pub model: Option<crate::weights::ModelName>,
    /// Square size the model sees: a multiple of 32, or a preset as for colorize (portrait:
    /// 512, architecture: 1024).
    #[arg(
        long,
        default_value_t = DEFAULT_SIZE,
        value_parser = crate::pipeline::parse_model_size,
        value_name = "N|PRESET"
    )]
    pub size: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), value_name = "B")]
    pub batch: u32,
    /// Timed runs after two warm-up runs (at least 1).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..), value_name = "R")]
    pub runs: u32,
    /// auto, cpu, cuda or cuda:N, as for colorize (auto: CUDA when built with it and a GPU
    /// answers).
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: DeviceSpec,
    /// f32, bf16 or f16 (bf16 on the CPU: products in bf16 with f32 accumulation, native with
    /// AVX512_BF16, emulated otherwise).
    #[arg(long, default_value = "f32", value_name = "DTYPE")]
    pub dtype: device::Precision,
    /// Allow TF32 tensor-core math in f32 matrix products (NVIDIA GPUs; see --tf32 of colorize).
    #[arg(long)]
    pub tf32: bool,
    /// CPU threads (default: all cores).
    #[arg(long, value_name = "T")]
    pub threads: Option<usize>,
}

pub fn run(args: &BenchArgs) -> Result<ExitCode, CliError> {
    crate::error::check_model_size(args.size)?;
    args.device.check().map_err(Error::Device)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // candle's GEMM sizes its pool from RAYON_NUM_THREADS; rayon's global pool likewise.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
    let (dev, note) = args.device.open().map_err(Error::Device)?;
    if let Some(n) = note {
        crate::say!("ddcolor: {n}");
    }
    let dtype = args.dtype.dtype();
    if let Some(note) =
        super::settings::bf16_note(dev.is_cpu() && args.dtype == device::Precision::Bf16)
    {
        crate::say!("ddcolor: {note}");
    }
    candle_core::cuda::set_gemm_reduced_precision_f32(args.tf32);
    let model = match (&args.weights, args.model) {
        (None, None) => {
            let cfg = match args.arch.as_str() {
                "tiny" | "paper_tiny" | "convnext-t" => crate::model::Config::paper_tiny(),
                "large" | "paper" | "convnext-l" => crate::model::Config::large(),
                a => {
                    return Err(CliError::Usage(format!(
                        "unknown --arch {a:?}: tiny or large"
                    )))
                }
            };
            DDColor::random_as(cfg, &dev, dtype)?
        }
        (w, m) => {
            let path = resolve_weights(w.as_deref(), m.unwrap_or_default(), false)?;
            DDColor::load_as(path, &dev, dtype)?
        }
    };
    let batch = args.batch as usize;
    let t = crate::colorizer::bench_forward(&model, args.size, batch, args.runs as usize)?;
    let encoder = model.config().encoder.name();
    crate::say::out_line(
        &serde_json::json!({
            "impl": "candle",
            "encoder": encoder,
            "size": args.size,
            "batch": args.batch,
            "device": device::describe(&dev),
            "dtype": device::dtype_name(dtype),
            "threads": threads,
            "median_ms": (t.median_ms * 100.0).round() / 100.0,
            "min_ms": (t.min_ms * 100.0).round() / 100.0,
            "images_per_s": (batch as f64 / (t.median_ms / 1000.0) * 1000.0).round() / 1000.0,
        })
        .to_string(),
    )
    .map_err(CliError::Stdout)?;
    Ok(ExitCode::Ok)
}
