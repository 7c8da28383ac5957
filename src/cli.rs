//! The command line: what clap parsed (no I/O here), and `run`, which validates it, builds the
//! real objects (device, model, colorizer) and executes the subcommand.
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::batch::report::ReportSink;
use crate::batch::{self, walk, walk::WalkOptions, BatchOptions, OutputFormat};
use crate::cache::{Cache, CacheOptions, CacheSpec};
use crate::colorizer::{Colorizer, DEFAULT_SIZE};
use crate::device::{self, DeviceSpec};
use crate::error::Error;
use crate::imageio;
use crate::model::DDColor;
use crate::pipeline::ResizeMode;

/// Exit codes (documented in the README).
pub mod exit {
    /// Everything asked for was done.
    pub const OK: i32 = 0;
    /// Some files failed; every other file was done.
    pub const SOME_FAILED: i32 = 1;
    /// Bad usage or configuration (flags, weights); nothing was done.
    pub const USAGE: i32 = 2;
    /// `--require-cache` and the cache could not be reached; nothing was done.
    pub const CACHE_UNREACHABLE: i32 = 3;
}

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
    Colorize(Box<ColorizeArgs>),
    /// Inspect or empty the result cache.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Time the model's forward pass; prints one JSON line (same fields as the PyTorch
    /// reference script's `bench`).
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Architecture to time when no --weights is given (random weights): tiny or large.
    #[arg(long, default_value = "tiny", value_name = "ARCH")]
    pub arch: String,
    /// Time this checkpoint instead of random weights.
    #[arg(long, short = 'w', value_name = "FILE")]
    pub weights: Option<PathBuf>,
    #[arg(long, default_value_t = DEFAULT_SIZE, value_name = "N")]
    pub size: usize,
    #[arg(long, default_value_t = 1, value_name = "B")]
    pub batch: usize,
    /// Timed runs after two warm-up runs.
    #[arg(long, default_value_t = 5, value_name = "R")]
    pub runs: usize,
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: DeviceSpec,
    /// CPU threads (default: all cores).
    #[arg(long, value_name = "T")]
    pub threads: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Entries, size and settings of the cache.
    Stats(CacheArgs),
    /// Remove every cached result (and lease) under the prefix.
    Clear(CacheArgs),
}

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Checkpoint file: the authors' .pth, Hugging Face pytorch_model.bin, or safetensors.
    #[arg(long, short = 'w', env = "DDCOLOR_WEIGHTS", value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// Square size the model sees: a multiple of 32 (512 for portraits; larger for buildings).
    #[arg(long, default_value_t = DEFAULT_SIZE, value_name = "N")]
    pub size: usize,
    /// auto, cpu, cuda or cuda:N. auto picks CUDA when built with it and a GPU answers.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: DeviceSpec,
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

#[derive(Debug, Args)]
pub struct ColorizeArgs {
    /// Image files and folders (walked recursively).
    #[arg(value_name = "PATHS")]
    pub paths: Vec<PathBuf>,
    /// Read more paths from FILE (`-`: standard input), one per line.
    #[arg(long, value_name = "FILE")]
    pub files_from: Option<PathBuf>,
    /// The --files-from list is NUL-separated (find -print0).
    #[arg(short = '0', long = "null")]
    pub null: bool,
    /// Output folder. Results mirror each input's path below the folder it was found in; a
    /// file named directly lands at DIR/<file name>.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// How the model's colour is scaled back to the photo's size: bilinear (smooth colour
    /// edges; the default) or nearest (the upstream DDColor script's behaviour).
    #[arg(long, default_value = "bilinear", value_name = "MODE")]
    pub resize: ResizeMode,
    /// Only files matching this glob (repeatable; `*.tif`, `1950s/**`).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Leave out files matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Follow symbolic links inside folders.
    #[arg(long, short = 'L')]
    pub follow_symlinks: bool,
    /// Output format: same (as the input), png, jpg, tiff or webp.
    #[arg(long, default_value = "same", value_name = "FORMAT")]
    pub format: OutputFormat,
    /// Replace outputs that already exist (by default they are skipped).
    #[arg(long)]
    pub overwrite: bool,
    /// Print the plan (infer / cache / duplicate / skip) and do nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub batch: usize,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Expire cached results after this long (3600, 90m, 12h, 30d). Default: never.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub cache_ttl: Option<Duration>,
    /// Use cached results but never store new ones.
    #[arg(long)]
    pub cache_readonly: bool,
    /// Fail (exit 3, nothing written) if the cache cannot be reached, instead of falling back.
    #[arg(long)]
    pub require_cache: bool,
    /// How long an inference lease lasts before another process may take the image over.
    #[arg(long, value_parser = parse_duration, default_value = "120s", value_name = "DURATION")]
    pub lease_ttl: Duration,
    /// Write one JSON line per input (path, sha256, status, output, error, ms); `-`: stdout.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write Prometheus metrics here (atomically) for node_exporter's textfile collector.
    #[arg(long, value_name = "FILE.prom")]
    pub metrics_file: Option<PathBuf>,
    /// Refuse images whose header claims more pixels than this.
    #[arg(long, default_value_t = imageio::DEFAULT_MAX_PIXELS, value_name = "N")]
    pub max_pixels: u64,
    /// No progress bar and no summary; errors are still printed.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// `3600`, `3600s`, `90m`, `12h`, `30d`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?}: expected e.g. 3600, 90m, 12h, 30d"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        u => {
            return Err(format!(
                "bad duration unit {u:?} in {s:?}: use ms, s, m, h or d"
            ))
        }
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("duration {s:?} must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parse the process arguments, run, and return the exit code.
pub fn main_exit_code() -> i32 {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ddcolor: {e}");
            exit::USAGE
        }
    }
}

pub fn run(cli: Cli) -> Result<i32, Error> {
    match cli.command {
        Command::Colorize(args) => colorize(*args),
        Command::Cache(CacheCommand::Stats(args)) => cache_stats(&args),
        Command::Cache(CacheCommand::Clear(args)) => cache_clear(&args),
        Command::Bench(args) => bench(&args),
    }
}

fn bench(args: &BenchArgs) -> Result<i32, Error> {
    crate::pipeline::check_model_size(args.size).map_err(Error::Usage)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // candle's GEMM sizes its pool from RAYON_NUM_THREADS; rayon's global pool likewise.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
    let (dev, note) = args.device.open().map_err(Error::Usage)?;
    if let Some(n) = note {
        eprintln!("ddcolor: {n}");
    }
    let model = match &args.weights {
        Some(w) => DDColor::load(w, &dev)?,
        None => {
            let cfg = match args.arch.as_str() {
                "tiny" | "paper_tiny" | "convnext-t" => crate::model::Config::paper_tiny(),
                "large" | "paper" | "convnext-l" => crate::model::Config::large(),
                a => return Err(Error::Usage(format!("unknown --arch {a:?}: tiny or large"))),
            };
            DDColor::random(cfg, &dev)?
        }
    };
    let t = crate::colorizer::bench_forward(&model, args.size, args.batch, args.runs)?;
    let encoder = model.config().encoder.name();
    println!(
        "{}",
        serde_json::json!({
            "impl": "candle",
            "encoder": encoder,
            "size": args.size,
            "batch": args.batch,
            "device": device::describe(&dev),
            "dtype": "fp32",
            "threads": threads,
            "median_ms": (t.median_ms * 100.0).round() / 100.0,
            "min_ms": (t.min_ms * 100.0).round() / 100.0,
            "images_per_s": (args.batch as f64 / (t.median_ms / 1000.0) * 1000.0).round() / 1000.0,
        })
    );
    Ok(exit::OK)
}

fn no_weights() -> Error {
    Error::Usage(
        "no weights given: pass --weights FILE or set DDCOLOR_WEIGHTS (weights/README.md \
         says where the checkpoints come from)"
            .into(),
    )
}

/// Open the device and load the model named by `args`.
pub fn load_model(args: &ModelArgs, quiet: bool) -> Result<DDColor, Error> {
    let weights = args.weights.as_deref().ok_or_else(no_weights)?;
    let (dev, note) = args.device.open().map_err(Error::Usage)?;
    if let Some(note) = note {
        if !quiet {
            eprintln!("ddcolor: {note}");
        }
    }
    let model = DDColor::load(weights, &dev)?;
    if !quiet {
        let c = model.config();
        eprintln!(
            "ddcolor: loaded {} ({} encoder, {} model) on {}",
            weights.display(),
            c.encoder.name(),
            c.variant(),
            device::describe(&dev)
        );
    }
    Ok(model)
}

fn cache_options(args: &CacheArgs) -> CacheOptions {
    CacheOptions {
        prefix: args.cache_prefix.clone(),
        max_size: args.cache_max_size,
    }
}

fn open_cache_or_usage(args: &CacheArgs) -> Result<Box<dyn Cache>, Error> {
    crate::cache::open(&args.cache, &cache_options(args)).map_err(|e| Error::Usage(e.to_string()))
}

fn cache_stats(args: &CacheArgs) -> Result<i32, Error> {
    let cache = open_cache_or_usage(args)?;
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

fn cache_clear(args: &CacheArgs) -> Result<i32, Error> {
    let cache = open_cache_or_usage(args)?;
    let n = cache.clear().map_err(|e| Error::Usage(e.to_string()))?;
    println!("removed {n} keys from {}", cache.describe());
    Ok(exit::OK)
}

/// Open the cache the user asked for. Unreachable: with `--require-cache` an error (exit 3),
/// otherwise a warning and the disk cache (or none) for this run. Unwritable: read-only.
fn open_cache(args: &ColorizeArgs) -> Result<(Box<dyn Cache>, bool), i32> {
    let opts = cache_options(&args.cache);
    let mut readonly = args.cache_readonly;
    let cache = match crate::cache::open(&args.cache.cache, &opts) {
        Ok(c) => c,
        Err(e) if args.require_cache => {
            eprintln!("ddcolor: cache unreachable: {e}");
            return Err(exit::CACHE_UNREACHABLE);
        }
        Err(e) => {
            let fallback = match crate::cache::parse_spec(&args.cache.cache) {
                Ok(CacheSpec::Redis(_)) | Ok(CacheSpec::Cluster(_)) => {
                    crate::cache::open("disk", &opts).ok()
                }
                _ => None,
            };
            let fallback = fallback.unwrap_or_else(|| Box::new(crate::cache::none::NoCache));
            eprintln!(
                "ddcolor: warning: cache unreachable ({e}); using {} for this run",
                fallback.describe()
            );
            fallback
        }
    };
    if !readonly {
        if let Err(e) = cache.check_writable() {
            eprintln!(
                "ddcolor: warning: cannot write to {} ({e}); using it read-only",
                cache.describe()
            );
            readonly = true;
        }
    }
    Ok((cache, readonly))
}

fn colorize(args: ColorizeArgs) -> Result<i32, Error> {
    crate::pipeline::check_model_size(args.model.size).map_err(Error::Usage)?;
    if args.batch == 0 {
        return Err(Error::Usage("--batch must be at least 1".into()));
    }
    if args.paths.is_empty() && args.files_from.is_none() {
        return Err(Error::Usage(
            "nothing to colorize: name files or folders, or use --files-from".into(),
        ));
    }
    let walk_opts = WalkOptions {
        include: walk::glob_set(&args.include).map_err(Error::Usage)?,
        exclude: walk::glob_set(&args.exclude).map_err(Error::Usage)?,
        follow_symlinks: args.follow_symlinks,
        ..WalkOptions::default()
    };
    if args.model.weights.is_none() {
        return Err(no_weights());
    }
    let (cache, readonly) = match open_cache(&args) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let model = load_model(&args.model, args.quiet)?;
    let colorizer = Colorizer::new(model, args.model.size, args.resize)?;

    let mut discovery = walk::discover(&args.paths, &walk_opts, &args.output);
    if let Some(list) = &args.files_from {
        let listed = walk::read_file_list(list, args.null).map_err(|e| {
            Error::Usage(format!("cannot read --files-from {}: {e}", list.display()))
        })?;
        let more = walk::discover_listed(&listed, &walk_opts, &args.output);
        discovery.inputs.extend(more.inputs);
        discovery.errors.extend(more.errors);
    }
    let sink =
        match &args.report {
            Some(p) => Some(ReportSink::open(p).map_err(|e| {
                Error::Usage(format!("cannot write the report {}: {e}", p.display()))
            })?),
            None => None,
        };
    let opts = BatchOptions {
        output: args.output.clone(),
        format: args.format,
        overwrite: args.overwrite,
        dry_run: args.dry_run,
        batch: args.batch,
        max_pixels: args.max_pixels,
        cache_ttl: args.cache_ttl,
        cache_readonly: readonly,
        cache_prefix: args.cache.cache_prefix.clone(),
        lease_ttl: args.lease_ttl,
        quiet: args.quiet,
    };
    let outcome = batch::run(&colorizer, cache.as_ref(), discovery, &opts, sink.as_ref());
    let s = &outcome.summary;
    if !args.quiet {
        eprintln!("{}", s.render());
    }
    let success = s.failed == 0;
    if let (Some(path), false) = (&args.metrics_file, args.dry_run) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let text = s.prometheus(now, success);
        if let Err(e) = imageio::write_atomic(path, |w| {
            w.write_all(text.as_bytes()).map_err(|e| Error::Write {
                path: path.clone(),
                reason: e.to_string(),
            })
        }) {
            eprintln!("ddcolor: warning: {e}");
        }
    }
    Ok(if success { exit::OK } else { exit::SOME_FAILED })
}
