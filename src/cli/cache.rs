//! `ddcolor cache stats|clear`, and the `--cache` options that `colorize` shares.
use clap::Subcommand;

use super::error::CliError;
use super::exit::ExitCode;
use super::settings::{CacheArgs, CacheSettings};

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Entries, size and settings of the cache.
    Stats(CacheArgs),
    /// Remove every cached result (and lease) under the prefix.
    Clear(CacheArgs),
}

pub fn run(cmd: &CacheCommand) -> Result<ExitCode, CliError> {
    match cmd {
        CacheCommand::Stats(args) => stats(args),
        CacheCommand::Clear(args) => clear(args),
    }
}

fn stats(args: &CacheArgs) -> Result<ExitCode, CliError> {
    let cache = CacheSettings::from_args(args)?.open_or_fail()?;
    let st = cache.stats()?;
    let mut text = format!("cache: {}\nentries: {}\n", cache.describe(), st.entries);
    if let Some(b) = st.bytes {
        text.push_str(&format!("bytes: {b}\n"));
    }
    for (k, v) in st.details {
        text.push_str(&format!("{k}: {v}\n"));
    }
    crate::say::stdout_bytes(text.as_bytes()).map_err(CliError::Stdout)?;
    Ok(ExitCode::Ok)
}

fn clear(args: &CacheArgs) -> Result<ExitCode, CliError> {
    let cache = CacheSettings::from_args(args)?.open_or_fail()?;
    let n = cache.clear()?;
    crate::say::out_line(&format!("removed {n} keys from {}", cache.describe()))
        .map_err(CliError::Stdout)?;
    Ok(ExitCode::Ok)
}
