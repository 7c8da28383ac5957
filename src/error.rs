//! The library's error type: what went wrong, and for which file.
use std::path::PathBuf;
use std::sync::Arc;

use crate::model::LoadError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{}: cannot decode image: {reason}", crate::text::shown(path))]
    Decode { path: PathBuf, reason: String },
    #[error("{}: cannot write output: {reason}", crate::text::shown(path))]
    Write { path: PathBuf, reason: String },
    /// A model size the network cannot take (not a positive multiple of 32); `reason` says so
    /// and suggests the nearest that work ([`crate::pipeline::check_model_size`]).
    #[error("{reason}")]
    InvalidSize { size: usize, reason: String },
    /// A model input of the wrong length was handed to [`crate::colorizer::Colorizer::predict`].
    #[error("model input has {got} values, {expected} expected")]
    InputLength { got: usize, expected: usize },
    /// The device asked for cannot be used: CUDA not compiled in, or the GPU does not open
    /// ([`crate::device::DeviceSpec::open`]'s message).
    #[error("{0}")]
    Device(String),
    /// The model could not be had when the first image needed it (the device, the weights);
    /// every later image that needs it gets the same error.
    #[error(transparent)]
    Model(Arc<Error>),
    /// The output folder is one of the input folders (itself, or through a symbolic link).
    #[error(
        "the output folder {} is the input folder {}: outputs would be written among (and \
         over) the inputs, so nothing was done; choose another --output",
        crate::text::shown(output),
        crate::text::shown(input)
    )]
    OutputIsInput { output: PathBuf, input: PathBuf },
    /// The output folder cannot be made or written (a file in its place, permissions, a
    /// read-only mount).
    #[error(
        "cannot write to the output folder {}: {reason}",
        crate::text::shown(output)
    )]
    OutputUnwritable { output: PathBuf, reason: String },
    /// The list of inputs (`--files-from`) could not be read to its end.
    #[error("cannot read --files-from: {reason}")]
    FileList { path: PathBuf, reason: String },
    /// The cache could not be reached, or stopped answering, and `--require-cache` was given.
    #[error("cache unreachable: {0}")]
    CacheUnreachable(String),
    #[error("model inference failed: {0}")]
    Inference(#[from] candle_core::Error),
}

impl Error {
    /// The message without the path in front, for reports that name the path separately.
    pub fn detail(&self) -> String {
        match self {
            Error::Decode { reason, .. } => format!("cannot decode image: {reason}"),
            Error::Write { reason, .. } => format!("cannot write output: {reason}"),
            other => other.to_string(),
        }
    }
}

/// A model size the network can take (a positive multiple of 32), as an error if not.
pub fn check_model_size(size: usize) -> Result<()> {
    crate::pipeline::check_model_size(size).map_err(|reason| Error::InvalidSize { size, reason })
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
