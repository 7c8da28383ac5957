//! The command line, in two stages (as ripgrep does): what clap parsed, one file per
//! subcommand ([`colorize`], [`cache`], [`weights`], [`bench`], [`man`]), and
//! [`settings`], which validates the parsed arguments once and builds what they name. Imports go
//! one way: this file uses the subcommands, they use [`settings`], [`error`] and [`exit`].
use clap::{CommandFactory, Parser, Subcommand};

use error::CliError;
use exit::ExitCode;

pub mod bench;
pub mod cache;
pub mod colorize;
pub mod error;
pub mod exit;
mod filter;
pub mod gallery;
pub mod man;
pub mod settings;
pub mod weights;

pub use settings::parse_duration;

#[derive(Debug, Parser)]
#[command(
    name = "ddcolor",
    version,
    about = "Colorize black-and-white photos with DDColor (ICCV 2023), in Rust",
    long_about = None,
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Colorize images and folders of images into an output folder.
    Colorize(Box<colorize::ColorizeArgs>),
    /// A static review page (HTML, self-contained) from colorize reports: originals and
    /// outputs side by side, filters, keyboard navigation, flags for a rerun list.
    Gallery(gallery::GalleryArgs),
    /// Inspect or empty the result cache.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Time the model's forward pass; prints one JSON line (same fields as the PyTorch
    /// reference script's `bench`).
    Bench(bench::BenchArgs),
    /// List the released models and where they are on this machine, or download them.
    #[command(subcommand)]
    Weights(weights::WeightsCommand),
    /// Print a shell completion script to stdout (bash, zsh, fish, powershell or elvish).
    Completions {
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to stdout: `ddcolor man | man -l -`.
    Man,
}

/// Parse the process arguments, run, and return the exit code.
pub fn main_exit_code() -> i32 {
    crate::say::guard_standard_fds();
    let code = parse_and_run();
    crate::say::finish();
    code
}

fn parse_and_run() -> i32 {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Colorize(_)) {
        quiet_on_closed_stdout();
    }
    if !matches!(cli.command, Command::Bench(_)) {
        decide_threads_once();
    }
    match run(cli) {
        Ok(code) => code.code(),
        Err(e) => {
            crate::say!("ddcolor: {e}");
            ExitCode::of(&e).code()
        }
    }
}

/// A reader that goes away (`ddcolor man | head`) ends the command quietly, as it ends `cat`:
/// the default action of SIGPIPE, which Rust's runtime otherwise ignores (then every write
/// fails with EPIPE and printing panics). Only for the commands whose output is all they do:
/// `colorize` keeps SIGPIPE ignored (sockets to Redis and the hub are written with
/// MSG_NOSIGNAL anyway) and handles a closed standard output itself, releasing what it holds.
fn quiet_on_closed_stdout() {
    #[cfg(unix)]
    // SAFETY: restoring a signal's default action, before any thread is started
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// candle sizes each CPU matrix product from `RAYON_NUM_THREADS`, else the physical cores,
/// which `num_cpus` finds by parsing `/proc/cpuinfo` on every call: 27 reads for one image at
/// 64 px, and on a 128-core host each read costs milliseconds. Decided once here: rayon's
/// global pool as before (the logical CPUs), then `RAYON_NUM_THREADS` set to candle's answer,
/// so that candle reads a variable instead of the file. A `RAYON_NUM_THREADS` given by the
/// user wins, as before. (`bench` sets its own.)
fn decide_threads_once() {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return;
    }
    let products = candle_core::utils::get_num_threads();
    let _ = rayon::ThreadPoolBuilder::new().build_global();
    std::env::set_var("RAYON_NUM_THREADS", products.to_string());
}

pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Colorize(args) => colorize::run(*args),
        Command::Cache(cmd) => cache::run(&cmd),
        Command::Gallery(args) => gallery::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Weights(cmd) => weights::run(&cmd)
            .map(|()| ExitCode::Ok)
            .map_err(CliError::Weights),
        Command::Completions { shell } => {
            man::completions(shell, Cli::command()).map_err(CliError::Stdout)?;
            Ok(ExitCode::Ok)
        }
        Command::Man => {
            let mut page = Vec::new();
            man::man_page(Cli::command(), &mut page)
                .and_then(|()| crate::say::stdout_bytes(&page))
                .map_err(CliError::ManPage)?;
            Ok(ExitCode::Ok)
        }
    }
}
