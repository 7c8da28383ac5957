//! `--device auto|cpu|cuda[:N]`: which candle device runs the model.
use std::fmt;
use std::str::FromStr;

use candle_core::Device;

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
    /// Open the device. `Auto` never fails: without CUDA it returns the CPU and, when CUDA was
    /// compiled in but no GPU answered, a note saying why.
    pub fn open(self) -> Result<(Device, Option<String>), String> {
        match self {
            Self::Cpu => Ok((Device::Cpu, None)),
            Self::Cuda(n) => {
                if !cuda_compiled() {
                    return Err(format!(
                        "--device cuda:{n}: this ddcolor was built without CUDA; rebuild with \
                         `cargo build --release --features cuda` (see README, CUDA build)"
                    ));
                }
                Device::new_cuda(n)
                    .map(|d| (d, None))
                    .map_err(|e| format!("--device cuda:{n}: cannot open the GPU ({e})"))
            }
            Self::Auto => {
                if !cuda_compiled() {
                    return Ok((Device::Cpu, None));
                }
                match Device::new_cuda(0) {
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

/// A short name for reports: `cpu` or `cuda:N`.
pub fn describe(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}
