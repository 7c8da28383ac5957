//! `ddcolor gallery`: a static review page from `colorize --report` files.
use std::path::PathBuf;

use clap::Args;

use super::error::CliError;
use super::exit::ExitCode;
use crate::gallery::{self, GalleryOptions};

#[derive(Debug, Args)]
pub struct GalleryArgs {
    /// Reports written by `colorize --report` (NDJSON); several are merged, the last line about
    /// a path winning (a rerun, a requeued task).
    #[arg(value_name = "REPORT", required = true)]
    pub reports: Vec<PathBuf>,
    /// Folder for the page (index.html) and its thumbnails; open index.html in any browser,
    /// from anywhere (no server, no network).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: PathBuf,
    /// Title of the page.
    #[arg(long, default_value = "ddcolor review", value_name = "TEXT")]
    pub title: String,
    /// Long side of the thumbnails, in pixels.
    #[arg(long, default_value_t = 768, value_name = "PX")]
    pub thumb_size: u32,
    /// Refuse images whose header claims more pixels than this (as `colorize`).
    #[arg(long, default_value_t = crate::imageio::DEFAULT_MAX_PIXELS, value_parser = crate::imageio::parse_max_pixels, value_name = "N")]
    pub max_pixels: u64,
    /// No summary line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn run(args: &GalleryArgs) -> Result<ExitCode, CliError> {
    let (entries, bad) = gallery::read_reports(&args.reports).map_err(CliError::Reports)?;
    if entries.is_empty() {
        return Err(CliError::NoReportLines);
    }
    let stats = gallery::build(
        &entries,
        &args.output,
        &GalleryOptions {
            title: args.title.clone(),
            thumb_side: args.thumb_size,
            max_pixels: args.max_pixels,
        },
    )
    .map_err(CliError::Gallery)?;
    if !args.quiet {
        crate::say!(
            "ddcolor: gallery of {} in {} ({} made, {} kept{}{})",
            crate::batch::report::plural(stats.images as u64, "image", "images"),
            crate::text::shown(&args.output.join("index.html")),
            crate::batch::report::plural(stats.thumbnails as u64, "thumbnail", "thumbnails"),
            stats.reused,
            if stats.unreadable.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} that cannot be shown (damaged or not images)",
                    stats.unreadable.len()
                )
            },
            if bad > 0 {
                format!(", {bad} lines that are not report lines skipped")
            } else {
                String::new()
            },
        );
    }
    // a file the report names that is not there is said even with --quiet: the page shows
    // an empty frame for it, and a reviewer should know before opening it
    if let Some(first) = stats.missing.first() {
        crate::say!(
            "ddcolor: {} named in the reports {} not found, e.g. {} (paths in a report are \
             relative to the folder `colorize` ran in, which reports since this version record \
             as \"cwd\"; files moved or deleted since the run show as not found)",
            crate::batch::report::plural(stats.missing.len() as u64, "file", "files"),
            if stats.missing.len() == 1 {
                "was"
            } else {
                "were"
            },
            crate::text::shown(first),
        );
        return Ok(ExitCode::SomeFailed);
    }
    Ok(ExitCode::Ok)
}
