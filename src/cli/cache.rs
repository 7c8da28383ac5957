//! `ddcolor cache stats|clear`, and the `--cache` options that `colorize` shares.
use clap::Subcommand;

use super::exit;
use super::settings::{CacheArgs, CacheSettings};
use crate::error::Error;

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Entries, size and settings of the cache.
    Stats(CacheArgs),
    /// Remove every cached result (and lease) under the prefix.
    Clear(CacheArgs),
}

pub fn run(cmd: &CacheCommand) -> Result<i32, Error> {
    match cmd {
        CacheCommand::Stats(args) => stats(args),
        CacheCommand::Clear(args) => clear(args),
    }
}

fn stats(args: &CacheArgs) -> Result<i32, Error> {
    let cache = CacheSettings::from_args(args)?.open_or_usage()?;
    let st = cache.stats().map_err(|e| Error::Usage(e.to_string()))?;
    println!("cache: {}", cache.describe());
    println!("entries: {}", st.entries);
    if let Some(b) = st.bytes {
        println!("bytes: {b}");
    }
    for (k, v) in st.details {
        println!("{k}: {v}");
    }
    Ok(exit::OK)
}

fn clear(args: &CacheArgs) -> Result<i32, Error> {
    let cache = CacheSettings::from_args(args)?.open_or_usage()?;
    let n = cache.clear().map_err(|e| Error::Usage(e.to_string()))?;
    println!("removed {n} keys from {}", cache.describe());
    Ok(exit::OK)
}
