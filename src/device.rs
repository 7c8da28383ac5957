//! `--device auto|cpu|cuda[:N]`: which candle device runs the model.
use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device};

use crate::keywords::keyword_enum;

/// A device as the user names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// CUDA device 0 when this build has CUDA and a GPU answers, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Self::Cuda(n)),
                _ => Err(format!(
                    "unknown device {s:?}; expected auto, cpu, cuda or cuda:N"
                )),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Whether this binary was built with the `cuda` feature.
pub const fn cuda_compiled() -> bool {
    cfg!(feature = "cuda")
}

impl DeviceSpec {
    /// What can be refused without opening the device (which a run does only when an image
    /// needs the model): CUDA asked of a build without it.
    pub fn check(self) -> Result<(), String> {
        match self {
            Self::Cuda(n) if !cuda_compiled() => Err(format!(
                "--device cuda:{n}: this ddcolor was built without CUDA; rebuild with \
                 `cargo build --release --features cuda` (GUIDE.md, section \"CUDA\")"
            )),
            _ => Ok(()),
        }
    }

    /// Open the device. `Auto` never fails: without CUDA it returns the CPU and, when CUDA was
    /// compiled in but no GPU answered, a note saying why.
    pub fn open(self) -> Result<(Device, Option<String>), String> {
        self.check()?;
        match self {
            Self::Cpu => Ok((Device::Cpu, None)),
            Self::Cuda(n) => open_cuda(n)
                .map(|d| (d, None))
                .map_err(|e| format!("--device cuda:{n}: cannot open the GPU ({e})")),
            Self::Auto => {
                if !cuda_compiled() {
                    return Ok((Device::Cpu, None));
                }
                match open_cuda(0) {
                    Ok(d) => Ok((d, None)),
                    Err(e) => Ok((
                        Device::Cpu,
                        Some(format!("no usable CUDA device ({e}); running on the CPU")),
                    )),
                }
            }
        }
    }
}

/// Open CUDA device `n`. The CUDA libraries are loaded at run time (see
/// vendor/cudarc/PATCHED.md) and cudarc panics when one is missing, so first ask which are
/// there, then open the device with panics turned into errors.
#[cfg(feature = "cuda")]
fn open_cuda(n: usize) -> Result<Device, String> {
    use candle_core::cuda::cudarc;
    // SAFETY: each check only tries to dlopen the library by its usual names (running its
    // initialisers, as using it would).
    let libs = unsafe {
        [
            (
                "libcuda (the NVIDIA driver)",
                cudarc::driver::sys::is_culib_present(),
            ),
            ("libcublas", cudarc::cublas::sys::is_culib_present()),
            ("libcublasLt", cudarc::cublaslt::sys::is_culib_present()),
            ("libcurand", cudarc::curand::sys::is_culib_present()),
            ("libnvrtc", cudarc::nvrtc::sys::is_culib_present()),
            #[cfg(feature = "cudnn")]
            ("libcudnn", cudarc::cudnn::sys::is_culib_present()),
        ]
    };
    let missing: Vec<&str> = libs.iter().filter(|l| !l.1).map(|l| l.0).collect();
    if !missing.is_empty() {
        return Err(format!(
            "cannot load {} (CUDA {}.x; see LD_LIBRARY_PATH)",
            missing.join(", "),
            cudarc_major()
        ));
    }
    match std::panic::catch_unwind(|| Device::new_cuda(n)) {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(p) => Err(p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the CUDA runtime panicked".into())),
    }
}

/// The CUDA major version this build's kernels and library names are for.
#[cfg(feature = "cuda")]
fn cudarc_major() -> &'static str {
    option_env!("CUDARC_CUDA_VERSION")
        .and_then(|v| v.get(..2))
        .unwrap_or("13")
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(n: usize) -> Result<Device, String> {
    Device::new_cuda(n).map_err(|e| e.to_string())
}

/// A short name for reports: `cpu` or `cuda:N`.
pub fn describe(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// `--dtype f32|bf16|f16`: what the model computes in (inputs and outputs stay f32).
///
/// f32 is the default everywhere. bf16 on the CPU is 1.6x faster where AMX runs it (and meets
/// the whole-pipeline colour bounds of #27 on lossless outputs: BENCHMARKS.md), but an automatic
/// choice waits for it to be timed on AVX512_BF16 CPUs without AMX, where it may be slower than
/// f32; bf16 on a GPU becomes the default only once its whole-pipeline parity has been measured
/// on one (f16's, measured on the CPU, is within a level: tests/cli.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    /// On the CPU: f32 activations, the matrix products in bf16 with f32 accumulation
    /// (`kernels::bf16`: native with AVX512_BF16, emulated otherwise).
    Bf16,
    F16,
}

keyword_enum!(Precision, "dtype", {
    F32 => "f32" | "fp32" | "float32",
    Bf16 => "bf16" | "bfloat16",
    F16 => "f16" | "fp16" | "float16" | "half",
});

impl Precision {
    /// The candle dtype.
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::Bf16 => DType::BF16,
            Self::F16 => DType::F16,
        }
    }
}

/// `--dtype` as given: a [`Precision`], or `auto`: bf16 where the model runs on a CPU with
/// AVX512_BF16 (native bf16 products: about 1.5x faster there, mean ΔE76 against f32 under 0.2
/// on realistic checkpoints: BENCHMARKS.md), f32 everywhere else (GPUs, CPUs that would only
/// emulate bf16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtypeChoice {
    Auto,
    Exact(Precision),
}

impl std::str::FromStr for DtypeChoice {
    type Err = String;

    /// `auto`, or a [`Precision`]'s keywords.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        s.parse()
            .map(Self::Exact)
            .map_err(|e| format!("{e}, or auto"))
    }
}

impl DtypeChoice {
    /// The precision, for a model on the CPU (`cpu`) or not.
    pub fn resolve(self, cpu: bool) -> Precision {
        use crate::kernels::bf16::Kernel;
        match self {
            Self::Exact(p) => p,
            Self::Auto if cpu && Kernel::current() != Kernel::Emulated => Precision::Bf16,
            Self::Auto => Precision::F32,
        }
    }
}

/// The name the reference script uses for a dtype (`fp32`, `bf16`, `fp16`).
pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "fp32",
        DType::BF16 => "bf16",
        DType::F16 => "fp16",
        other => other.as_str(),
    }
}
