//! `ddcolor cache stats|clear`, and the `--cache` options that `colorize` shares.
use clap::{Args, Subcommand};

use super::exit;
use super::settings::CacheSettings;
use crate::error::Error;

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Entries, size and settings of the cache.
    Stats(CacheArgs),
    /// Remove every cached result (and lease) under the prefix.
    Clear(CacheArgs),
}

#[derive(Debug, Args, Clone)]
pub struct CacheArgs {
    /// disk[:PATH] (default, under $XDG_CACHE_HOME/ddcolor), redis://[user:pass@]host:port[/db],
    /// rediss://... (TLS), redis-cluster://host:port,host:port,..., or none.
    #[arg(
        long,
        env = "DDCOLOR_CACHE",
        default_value = "disk",
        value_name = "SPEC"
    )]
    pub cache: String,
    /// Key prefix, to keep several projects apart in one Redis.
    #[arg(long, default_value = crate::cache::key::DEFAULT_PREFIX, value_name = "PREFIX")]
    pub cache_prefix: String,
    /// Bound for the disk cache (500M, 2G, ...); least recently used results are evicted.
    #[arg(long, value_parser = crate::cache::parse_size, value_name = "SIZE")]
    pub cache_max_size: Option<u64>,
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
