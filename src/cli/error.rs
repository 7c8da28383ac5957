//! What stops a command: the library's errors, and the command line's own kinds (flags that
//! cannot be used, standard input and output, the weights, the cache, reports). The exit code
//! of each kind is decided in one place, [`super::exit::ExitCode::of`]; nothing looks at the text.
use std::path::PathBuf;

use crate::cache::CacheError;
use crate::weights::WeightsError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// What the library refused or failed at (the model, the device, the output folder, a
    /// cache that `--require-cache` needs).
    #[error(transparent)]
    Run(#[from] crate::error::Error),
    /// Flags that are missing, contradict each other, or hold a value that cannot be used
    /// (`--batch 0`, `--output -` with a folder, a `--cache` spec that cannot be parsed).
    #[error("{0}")]
    Usage(String),
    /// The weights cannot be found, read or fetched (`--weights`, `--model`, `ddcolor weights`).
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The cache cannot be opened or asked (`ddcolor cache stats|clear`).
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The `--files-from` list cannot be opened.
    #[error("cannot read --files-from {}: {source}", crate::text::shown(path))]
    FileList {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Standard input (`colorize -`) cannot be read.
    #[error("cannot read standard input: {0}")]
    Stdin(std::io::Error),
    /// Standard input holds more bytes than any image within `--max-pixels` can have.
    #[error("standard input holds more than any image within --max-pixels can be ({limit} bytes)")]
    StdinTooLarge { limit: u64 },
    /// The temporary files of `colorize -` or `--output -` cannot be made.
    #[error("{0}")]
    Scratch(String),
    /// The `--report` file cannot be opened for writing.
    #[error("cannot write the report {}: {source}", crate::text::shown(path))]
    Report {
        path: PathBuf,
        source: std::io::Error,
    },
    /// What a command prints to standard output cannot be written (a full disk, a reader gone).
    #[error("cannot write to standard output: {0}")]
    Stdout(std::io::Error),
    /// `ddcolor man`: the manual page cannot be made or written.
    #[error("cannot write the manual page: {0}")]
    ManPage(std::io::Error),
    /// `ddcolor gallery`: a report cannot be read.
    #[error("{0}")]
    Reports(String),
    /// `ddcolor gallery`: the reports hold no report line.
    #[error("the reports hold no report lines: write them with `ddcolor colorize --report FILE`")]
    NoReportLines,
    /// `ddcolor gallery`: the page or its thumbnails cannot be written.
    #[error("{0}")]
    Gallery(String),
}

impl From<crate::model::LoadError> for CliError {
    fn from(e: crate::model::LoadError) -> Self {
        CliError::Run(e.into())
    }
}

impl From<candle_core::Error> for CliError {
    fn from(e: candle_core::Error) -> Self {
        CliError::Run(e.into())
    }
}
