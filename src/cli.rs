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
    /// List the released models and where they are on this machine, or download them.
    #[command(subcommand)]
    Weights(crate::weights::command::WeightsCommand),
    /// Print a shell completion script to stdout (bash, zsh, fish, powershell or elvish).
    Completions {
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to stdout: `ddcolor man | man -l -`.
    Man,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Architecture to time when no --weights is given (random weights): tiny or large.
    #[arg(long, default_value = "tiny", value_name = "ARCH")]
    pub arch: String,
    /// Time this checkpoint instead of random weights.
    #[arg(long, short = 'w', value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// Time this released model (found locally or downloaded) instead of random weights.
    #[arg(long, short = 'm', value_enum, value_name = "NAME")]
    pub model: Option<crate::weights::ModelName>,
    #[arg(long, default_value_t = DEFAULT_SIZE, value_name = "N")]
    pub size: usize,
    #[arg(long, default_value_t = 1, value_name = "B")]
    pub batch: usize,
    /// Timed runs after two warm-up runs.
    #[arg(long, default_value_t = 5, value_name = "R")]
    pub runs: usize,
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: DeviceSpec,
    /// f32, bf16 (GPU only) or f16.
    #[arg(long, default_value = "f32", value_name = "DTYPE")]
    pub dtype: device::Precision,
    /// Allow TF32 tensor-core math in f32 matrix products (NVIDIA GPUs; see --tf32 of colorize).
    #[arg(long)]
    pub tf32: bool,
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
    /// Overrides --model.
    #[arg(long, short = 'w', env = "DDCOLOR_WEIGHTS", value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// Released model when --weights is not given: taken from ./weights, the user data dir or
    /// a Hugging Face hub cache, else downloaded once (`ddcolor weights list`).
    #[arg(
        long,
        short = 'm',
        env = "DDCOLOR_MODEL",
        value_enum,
        default_value_t = crate::weights::ModelName::DEFAULT,
        value_name = "NAME"
    )]
    pub model: crate::weights::ModelName,
    /// Square size the model sees: a multiple of 32, or a preset: portrait (512, people and
    /// groups) or architecture (1024, buildings and landscapes).
    #[arg(
        long,
        default_value_t = DEFAULT_SIZE,
        value_parser = crate::pipeline::parse_model_size,
        value_name = "N|PRESET"
    )]
    pub size: usize,
    /// auto, cpu, cuda or cuda:N. auto picks CUDA when built with it and a GPU answers.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: DeviceSpec,
    /// What the model computes in: f32, bf16 (GPU only) or f16. Results differ slightly
    /// between dtypes, so each has its own cache entries.
    #[arg(
        long,
        env = "DDCOLOR_DTYPE",
        default_value = "f32",
        value_name = "DTYPE"
    )]
    pub dtype: device::Precision,
    /// Allow TF32 tensor-core math in f32 matrix products on NVIDIA GPUs (Ampere and later):
    /// faster, with ~1e-3 relative error per product. Off by default, as in PyTorch.
    #[arg(long, env = "DDCOLOR_TF32")]
    pub tf32: bool,
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
    /// Predicted colours that sRGB cannot show: fit (keep the scan's lightness and the hue,
    /// reduce chroma), clip (as the upstream script, after bringing ab into the Lab range along
    /// its hue), or auto (the default: fit for 16-bit images, clip for 8-bit ones).
    #[arg(long, default_value = "auto", value_name = "MODE")]
    pub gamut: crate::pipeline::Gamut,
    /// Only files matching this glob (repeatable; `*.tif`, `1950s/**`).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Leave out files matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Follow symbolic links inside folders.
    #[arg(long, short = 'L')]
    pub follow_symlinks: bool,
    /// Output format: same (as the input), png, jpg, tiff or webp. PNG and TIFF keep 16-bit
    /// scans at 16 bits; JPEG and WebP are 8 bits.
    #[arg(long, default_value = "same", value_name = "FORMAT")]
    pub format: OutputFormat,
    /// Quality of JPEG outputs, 1-100.
    #[arg(
        long,
        default_value_t = imageio::JPEG_QUALITY,
        value_parser = clap::value_parser!(u8).range(1..=100),
        value_name = "Q"
    )]
    pub jpeg_quality: u8,
    /// Colorize photos that are already in colour too (by default they are skipped as
    /// "already colour"; toned black-and-white prints are always colorized).
    #[arg(long)]
    pub force: bool,
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
        Command::Weights(cmd) => crate::weights::command::run(&cmd)
            .map(|()| exit::OK)
            .map_err(|e| Error::Usage(e.to_string())),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "ddcolor", &mut std::io::stdout());
            Ok(exit::OK)
        }
        Command::Man => {
            man_page(&mut std::io::stdout().lock())
                .map_err(|e| Error::Usage(format!("cannot write the manual page: {e}")))?;
            Ok(exit::OK)
        }
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
    let dtype = args.dtype.dtype();
    candle_core::cuda::set_gemm_reduced_precision_f32(args.tf32);
    let model = match (&args.weights, args.model) {
        (None, None) => {
            let cfg = match args.arch.as_str() {
                "tiny" | "paper_tiny" | "convnext-t" => crate::model::Config::paper_tiny(),
                "large" | "paper" | "convnext-l" => crate::model::Config::large(),
                a => return Err(Error::Usage(format!("unknown --arch {a:?}: tiny or large"))),
            };
            DDColor::random_as(cfg, &dev, dtype)?
        }
        (w, m) => {
            let path = resolve_weights(w.as_deref(), m.unwrap_or_default(), false)?;
            DDColor::load_as(path, &dev, dtype)?
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
            "dtype": device::dtype_name(dtype),
            "threads": threads,
            "median_ms": (t.median_ms * 100.0).round() / 100.0,
            "min_ms": (t.min_ms * 100.0).round() / 100.0,
            "images_per_s": (args.batch as f64 / (t.median_ms / 1000.0) * 1000.0).round() / 1000.0,
        })
    );
    Ok(exit::OK)
}

/// The checkpoint to load: `--weights`, else `--model` found on this machine or downloaded
/// (README "Weights"). Nothing found and no download: a usage error that lists where it looked
/// and how to get the file.
pub fn resolve_weights(
    weights: Option<&std::path::Path>,
    model: crate::weights::ModelName,
    quiet: bool,
) -> Result<PathBuf, Error> {
    let locations = crate::weights::Locations::from_env();
    let hub = crate::weights::Hub::from_env();
    crate::weights::resolve(weights, model, &locations, &hub, quiet)
        .map(|r| r.path)
        .map_err(|e| Error::Usage(e.to_string()))
}

/// Open the device and load the model named by `args`.
pub fn load_model(args: &ModelArgs, quiet: bool) -> Result<DDColor, Error> {
    let weights = resolve_weights(args.weights.as_deref(), args.model, quiet)?;
    let weights = weights.as_path();
    let (dev, note) = args.device.open().map_err(Error::Usage)?;
    if let Some(note) = note {
        if !quiet {
            eprintln!("ddcolor: {note}");
        }
    }
    candle_core::cuda::set_gemm_reduced_precision_f32(args.tf32);
    let model = DDColor::load_as(weights, &dev, args.dtype.dtype())?;
    if !quiet {
        let c = model.config();
        eprintln!(
            "ddcolor: loaded {} ({} encoder, {} model) on {}, {}",
            weights.display(),
            c.encoder.name(),
            c.variant(),
            device::describe(&dev),
            device::dtype_name(model.dtype())
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
    let (cache, readonly) = match open_cache(&args) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let model = load_model(&args.model, args.quiet)?;
    let colorizer = Colorizer::new(model, args.model.size, args.resize)?.with_gamut(args.gamut);

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
        force: args.force,
        jpeg_quality: args.jpeg_quality,
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

/// The manual page, ddcolor(1), as one page: clap_mangen's name, synopsis, description and
/// command list, then every command's synopsis and options, the environment, where weights
/// are looked for, and the exit status.
pub fn man_page(w: &mut dyn std::io::Write) -> std::io::Result<()> {
    use clap_mangen::roff::{bold, roman, Roff};
    fn leaves(cmd: &clap::Command, out: &mut Vec<clap::Command>) {
        if cmd.has_subcommands() {
            cmd.get_subcommands().for_each(|c| leaves(c, out));
        } else {
            out.push(cmd.clone());
        }
    }
    let mut cmd = <Cli as clap::CommandFactory>::command().disable_help_subcommand(true);
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    let mut roff = Roff::new();
    roff.control("SH", ["DESCRIPTION"]).text([roman(
        "ddcolor colorizes scanned black-and-white photos with DDColor: files and folders in, a \
         mirrored tree of colour images out, each distinct image inferred once (results are \
         cached by content, on disk or in Redis). The model is one of the authors' released \
         checkpoints, found on this machine or downloaded on first use (see WEIGHTS).",
    )]);
    roff.control("SH", ["COMMANDS"]);
    roff.to_writer(w)?;
    let mut subs = Vec::new();
    cmd.get_subcommands().for_each(|c| leaves(c, &mut subs));
    for sub in subs {
        let name = sub.get_bin_name().unwrap_or(sub.get_name()).to_owned();
        let about = sub
            .get_long_about()
            .or(sub.get_about())
            .map(|a| a.to_string());
        let page = clap_mangen::Man::new(sub);
        let mut synopsis = Vec::new();
        page.render_synopsis_section(&mut synopsis)?;
        let mut options = Vec::new();
        page.render_options_section(&mut options)?;
        let mut roff = Roff::new();
        roff.control("SS", [name.as_str()]);
        roff.to_writer(w)?;
        // clap_mangen's sections become paragraphs of this command's subsection
        let body = |buf: &[u8], w: &mut dyn std::io::Write| -> std::io::Result<()> {
            for line in String::from_utf8_lossy(buf).lines() {
                if !line.starts_with(".SH ") {
                    writeln!(w, "{line}")?;
                }
            }
            Ok(())
        };
        body(&synopsis, w)?;
        let mut roff = Roff::new();
        roff.control("PP", []);
        if let Some(about) = about {
            roff.text([roman(about)]);
        }
        roff.to_writer(w)?;
        body(&options, w)?;
    }
    let mut roff = Roff::new();
    roff.control("SH", ["ENVIRONMENT"]);
    let env: [(&str, &str); 3] = [
        ("DDCOLOR_WEIGHTS", "The checkpoint file, as --weights."),
        ("DDCOLOR_MODEL", "The released model, as --model."),
        ("DDCOLOR_CACHE", "The result cache, as --cache."),
    ];
    for (k, v) in env.iter().chain(crate::weights::ENVIRONMENT) {
        roff.control("TP", []).text([bold(*k)]).text([roman(*v)]);
    }
    roff.control("SH", ["WEIGHTS"]);
    roff.text([roman(
        "Where the checkpoint comes from, the first that applies (NAME is --model):",
    )]);
    for (i, step) in crate::weights::RESOLUTION_ORDER.iter().enumerate() {
        roff.control("TP", [])
            .text([bold(format!("{}.", i + 1))])
            .text([roman(*step)]);
    }
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in [
        (exit::OK, "Every input was done (colorized, cached, duplicate or skipped)."),
        (exit::SOME_FAILED, "Some inputs failed; all others were done."),
        (exit::USAGE, "Bad usage or configuration (flags, weights that cannot be read or fetched); nothing was done."),
        (exit::CACHE_UNREACHABLE, "--require-cache and the cache could not be reached; nothing was done."),
    ] {
        roff.control("TP", [])
            .text([bold(code.to_string())])
            .text([roman(meaning)]);
    }
    roff.to_writer(w)?;
    man.render_version_section(w)
}
