//! The library's error type: what went wrong, and for which file.
use std::path::PathBuf;

use crate::model::LoadError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{}: cannot decode image: {reason}", crate::text::shown(path))]
    Decode { path: PathBuf, reason: String },
    #[error("{}: cannot write output: {reason}", crate::text::shown(path))]
    Write { path: PathBuf, reason: String },
    #[error("{0}")]
    Usage(String),
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

pub type Result<T, E = Error> = std::result::Result<T, E>;
