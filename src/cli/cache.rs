//! `ddcolor cache stats|clear`, and the `--cache` options that `colorize` shares.
use clap::Subcommand;

use super::exit::ExitCode;
use super::settings::{CacheArgs, CacheSettings};
use crate::error::Error;

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Entries, size and settings of the cache.
    Stats(CacheArgs),
    /// Remove every cached result (and lease) under the prefix.
    Clear(CacheArgs),
}

pub fn run(cmd: &CacheCommand) -> Result<ExitCode, Error> {
    match cmd {
        CacheCommand::Stats(args) => stats(args),
        CacheCommand::Clear(args) => clear(args),
    }
}

fn stats(args: &CacheArgs) -> Result<ExitCode, Error> {
    let cache = CacheSettings::from_args(args)?.open_or_usage()?;
    let st = cache.stats().map_err(|e| Error::Usage(e.to_string()))?;
    let mut text = format!("cache: {}\nentries: {}\n", cache.describe(), st.entries);
    if let Some(b) = st.bytes {
        text.push_str(&format!("bytes: {b}\n"));
    }
    for (k, v) in st.details {
        text.push_str(&format!("{k}: {v}\n"));
    }
    crate::say::stdout_bytes(text.as_bytes()).map_err(super::stdout_error)?;
    Ok(ExitCode::Ok)
}

fn clear(args: &CacheArgs) -> Result<ExitCode, Error> {
    let cache = CacheSettings::from_args(args)?.open_or_usage()?;
    let n = cache.clear().map_err(|e| Error::Usage(e.to_string()))?;
    crate::say::out_line(&format!("removed {n} keys from {}", cache.describe()))
        .map_err(super::stdout_error)?;
    Ok(ExitCode::Ok)
}
