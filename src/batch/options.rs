//! What a batch run is told besides the model, the cache and the inputs.
use std::path::PathBuf;
use std::time::Duration;

use super::dest::OutputFormat;

/// The reason a photo in colour is skipped (unless `--force`).
pub const ALREADY_COLOUR: &str = "already colour";

/// Default inference lease: short, because the holder renews it every third of it.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// Everything a batch run needs besides the model, the cache and the inputs.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    pub output: PathBuf,
    pub format: OutputFormat,
    pub overwrite: bool,
    pub dry_run: bool,
    /// Images per forward pass.
    pub batch: usize,
    pub max_pixels: u64,
    /// Expiry of stored values (None: keep until evicted).
    pub cache_ttl: Option<Duration>,
    pub cache_prefix: String,
    /// How long an inference lease lasts unless renewed; a holder that dies blocks others at
    /// most this long.
    pub lease_ttl: Duration,
    pub quiet: bool,
    /// Colorize photos that are already in colour (by default they are skipped).
    pub force: bool,
    /// How outputs are encoded (JPEG quality, PNG and TIFF compression).
    pub encoding: crate::imageio::Encoding,
    /// Read and hash every file, trusting no index entry (`--rehash`).
    pub rehash: bool,
    /// Threads that read, hash and decode (0: chosen from the cores, 2 to 4).
    pub readers: usize,
    /// Only the inputs of this shard (by relative path; [`super::shard`]); the rest are not
    /// opened, hashed or reported.
    pub shard: Option<super::shard::Shard>,
    /// Standard input and output stand-ins (`colorize - --output -`): the temporary file that
    /// holds what was read from standard input, and the temporary folder whose output goes to
    /// standard output. Messages and the report name them `-`.
    pub stdio: StdioAliases,
}

/// See [`BatchOptions::stdio`].
#[derive(Debug, Clone, Default)]
pub struct StdioAliases {
    pub stdin_file: Option<PathBuf>,
    pub stdout_dir: Option<PathBuf>,
}

impl StdioAliases {
    /// `r` as the user should see it: the stand-ins named `-`.
    pub fn apply(&self, mut r: super::report::Record) -> super::report::Record {
        if self.stdin_file.as_ref() == Some(&r.path) {
            r.path = PathBuf::from("-");
            r.root = None;
        }
        if let (Some(dir), Some(out)) = (&self.stdout_dir, &r.output) {
            if out.starts_with(dir) {
                r.output = Some(PathBuf::from("-"));
            }
        }
        r
    }
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            output: PathBuf::from("colorized"),
            format: OutputFormat::Same,
            overwrite: false,
            dry_run: false,
            batch: 1,
            max_pixels: crate::imageio::DEFAULT_MAX_PIXELS,
            cache_ttl: None,
            cache_prefix: crate::cache::key::DEFAULT_PREFIX.into(),
            lease_ttl: DEFAULT_LEASE_TTL,
            quiet: false,
            force: false,
            encoding: crate::imageio::Encoding::default(),
            rehash: false,
            readers: 0,
            shard: None,
            stdio: StdioAliases::default(),
        }
    }
}
