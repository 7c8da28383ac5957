//! `ddcolor colorize`: its arguments, and the run: settings checked, the cache opened, the
//! batch engine over the inputs (the model loads only if an image needs it), then the summary
//! and the metrics file.
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::error::CliError;
use super::exit::ExitCode;
use super::settings::{parse_duration, resolve_dtype, resolve_weights, CacheArgs, CacheSettings};
use crate::batch::index::Index;
use crate::batch::report::{ReportSink, Status};
use crate::batch::shard::{Shard, ShardArg};
use crate::batch::walk::{self, Sources, WalkOptions};
use crate::batch::{self, BatchOptions, LazyModel, ModelSpec, OutputFormat};
use crate::colorizer::DEFAULT_SIZE;
use crate::device::{self, DeviceSpec};
use crate::error::Error;
use crate::imageio;
use crate::pipeline::ResizeMode;

/// `--compat`: whose pixels a run reproduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compat {
    /// What the authors' inference script computes
    Upstream,
}

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Checkpoint file: the authors' .pth, Hugging Face pytorch_model.bin, or safetensors.
    /// Overrides --model.
    #[arg(
        help_heading = "Model",
        long,
        short = 'w',
        env = "DDCOLOR_WEIGHTS",
        value_name = "FILE"
    )]
    pub weights: Option<PathBuf>,
    /// Released model when --weights is not given: taken from ./weights, the user data dir or
    /// a Hugging Face hub cache, else downloaded once (`ddcolor weights list`).
    #[arg(
        help_heading = "Model",
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
        help_heading = "Model",
        long,
        default_value_t = DEFAULT_SIZE,
        value_parser = crate::pipeline::parse_model_size,
        value_name = "N|PRESET"
    )]
    pub size: usize,
    /// auto, cpu, cuda or cuda:N. auto picks CUDA when built with it and a GPU answers.
    #[arg(
        help_heading = "Model",
        long,
        default_value = "auto",
        value_name = "DEVICE"
    )]
    pub device: DeviceSpec,
    /// What the model computes in: f32, bf16 (on the CPU: bf16 products) or f16; auto: bf16 on a
    /// CPU with AVX512_BF16, f32 elsewhere. Results differ slightly between dtypes, so each has
    /// its own cache entries.
    #[arg(
        help_heading = "Model",
        long,
        env = "DDCOLOR_DTYPE",
        default_value = "f32",
        value_name = "DTYPE"
    )]
    pub dtype: device::DtypeChoice,
    /// Allow TF32 tensor-core math in f32 matrix products on NVIDIA GPUs (Ampere and later):
    /// faster, with ~1e-3 relative error per product. Off by default, as in PyTorch.
    #[arg(help_heading = "Model", long, env = "DDCOLOR_TF32")]
    pub tf32: bool,
}

#[derive(Debug, Args)]
pub struct ColorizeArgs {
    /// Image files and folders (walked recursively); `-`: one image from standard input.
    #[arg(help_heading = "Inputs", value_name = "PATHS")]
    pub paths: Vec<PathBuf>,
    /// Read more paths from FILE (`-`: standard input), one per line.
    #[arg(help_heading = "Inputs", long, value_name = "FILE")]
    pub files_from: Option<PathBuf>,
    /// The --files-from list is NUL-separated (find -print0).
    #[arg(help_heading = "Inputs", short = '0', long = "null")]
    pub null: bool,
    /// Only files matching this glob (repeatable; `*.tif`, `1950s/**`).
    #[arg(help_heading = "Inputs", long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Leave out files matching this glob (repeatable).
    #[arg(help_heading = "Inputs", long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Follow symbolic links inside folders.
    #[arg(help_heading = "Inputs", long, short = 'L')]
    pub follow_symlinks: bool,
    /// Take only shard K of N of the inputs (0 <= K < N), chosen by a stable hash of each
    /// input's path inside the output folder, so that N machines share an archive without
    /// reading it N times; `none`: every input. Default: the shard a Slurm job array
    /// (SLURM_ARRAY_TASK_ID, _MIN, _MAX, _STEP, _COUNT) or a Kubernetes Indexed Job
    /// (JOB_COMPLETION_INDEX, with the count in DDCOLOR_SHARDS) names, else every input.
    #[arg(help_heading = "Inputs", long, value_parser = crate::batch::shard::parse_shard_arg, value_name = "K/N|none")]
    pub shard: Option<ShardArg>,
    /// Read and hash every file, trusting nothing the index of hashed files remembers.
    #[arg(help_heading = "Inputs", long)]
    pub rehash: bool,
    /// Refuse images whose header claims more pixels than this (at most 2^40).
    #[arg(help_heading = "Inputs", long, default_value_t = imageio::DEFAULT_MAX_PIXELS, value_parser = imageio::parse_max_pixels, value_name = "N")]
    pub max_pixels: u64,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Images per forward pass.
    #[arg(help_heading = "Model", long, default_value_t = 1, value_name = "N")]
    pub batch: usize,
    /// Output folder. Results mirror each input's path below the folder it was found in; a
    /// file named directly lands at DIR/<file name> (standard input at DIR/stdin.EXT). `-`:
    /// write the one input's result to standard output (format: --format, else the input's).
    /// (Required.)
    #[arg(help_heading = "Output", long, short = 'o', value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// How the model's colour is scaled back to the photo's size: bilinear (smooth colour
    /// edges; the default) or nearest (the upstream DDColor script's behaviour).
    #[arg(
        help_heading = "Output",
        long,
        default_value = "bilinear",
        value_name = "MODE"
    )]
    pub resize: ResizeMode,
    /// upstream: the authors' pixels from the same checkpoint, for comparing with their
    /// results: JPEGs decoded as OpenCV's imread does (libjpeg-turbo), L computed as OpenCV's
    /// float BGR2Lab computes it (an interpolated table), nearest ab upsampling and OpenCV's
    /// clipping (--resize nearest --gamut upstream). Its cache entries are its own.
    #[arg(
        help_heading = "Output",
        long,
        value_name = "MODE",
        conflicts_with_all = ["resize", "gamut"]
    )]
    pub compat: Option<Compat>,
    /// Predicted colours that sRGB cannot show: fit (keep the scan's lightness and the hue,
    /// reduce chroma), clip (as the upstream script, after bringing ab into the Lab range along
    /// its hue), upstream (clip with ab as predicted, as OpenCV does) or auto (the default: fit
    /// for 16-bit images, clip for 8-bit ones).
    #[arg(
        help_heading = "Output",
        long,
        default_value = "auto",
        value_name = "MODE"
    )]
    pub gamut: crate::pipeline::Gamut,
    /// Colour strength: the predicted chroma times S, from 0 (the scan's own gray) through 1
    /// (the model as is, the default) to 2; the gamut rule then keeps it in range. Applied when
    /// composing: the cache keeps the raw prediction, so another S never reruns the model.
    #[arg(
        help_heading = "Output",
        long,
        default_value_t = 1.0,
        value_parser = crate::pipeline::parse_saturation,
        value_name = "S"
    )]
    pub saturation: f32,
    /// Output format: same (as the input), png, jpg, tiff or webp. PNG and TIFF keep 16-bit
    /// scans at 16 bits; JPEG and WebP are 8 bits.
    #[arg(
        help_heading = "Output",
        long,
        default_value = "same",
        value_name = "FORMAT"
    )]
    pub format: OutputFormat,
    /// Quality of JPEG outputs, 1-100.
    #[arg(
        help_heading = "Output",
        long,
        default_value_t = imageio::JPEG_QUALITY,
        value_parser = clap::value_parser!(u8).range(1..=100),
        value_name = "Q"
    )]
    pub jpeg_quality: u8,
    /// Resolution of JPEG outputs' chroma: auto (the default: half, 4:2:0, for images at
    /// least twice the model size on both sides, whose colour has no finer detail; full
    /// elsewhere), 444 (always full) or 420 (always half).
    #[arg(
        help_heading = "Output",
        long,
        default_value = "auto",
        value_name = "SAMPLING"
    )]
    pub jpeg_chroma: imageio::JpegChroma,
    /// How hard PNG outputs are compressed: fast (about OpenCV's size, the default), default
    /// (zlib's balanced level: smaller, several times slower) or best.
    #[arg(
        help_heading = "Output",
        long,
        default_value = "fast",
        value_name = "LEVEL"
    )]
    pub png_compression: imageio::PngCompression,
    /// TIFF outputs' compression, with the horizontal predictor: deflate (the default), lzw
    /// (for the oldest readers) or none.
    #[arg(
        help_heading = "Output",
        long,
        default_value = "deflate",
        value_name = "METHOD"
    )]
    pub tiff_compression: imageio::TiffCompression,
    /// Colorize photos that are already in colour too (by default they are skipped as
    /// "already colour"; toned black-and-white prints are always colorized).
    #[arg(help_heading = "Output", long)]
    pub force: bool,
    /// Replace outputs that already exist (by default they are skipped).
    #[arg(help_heading = "Output", long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Expire cached results after this long (3600, 90m, 12h, 30d). Default: never.
    #[arg(help_heading = "Cache", long, value_parser = parse_duration, value_name = "DURATION")]
    pub cache_ttl: Option<Duration>,
    /// Use cached results but never store new ones.
    #[arg(help_heading = "Cache", long)]
    pub cache_readonly: bool,
    /// Fail (exit 3, nothing written) if the cache cannot be reached, instead of falling back;
    /// a cache that stops answering mid-run stops the run (exit 3; outputs already written
    /// stay, each in the report).
    #[arg(help_heading = "Cache", long)]
    pub require_cache: bool,
    /// How long an inference lease outlives its holder: the holder renews it every third of
    /// this while it works, so only a process that died or was stopped loses it.
    #[arg(help_heading = "Cache", long, value_parser = parse_duration, default_value = "30s", value_name = "DURATION")]
    pub lease_ttl: Duration,
    /// Print the plan (infer / cache / duplicate / skip / fail) and do nothing; needs no
    /// download (without the model on this machine every new image shows as infer).
    #[arg(help_heading = "Reporting", long)]
    pub dry_run: bool,
    /// Write one JSON line per input (path, sha256, status, output, error, ms); `-`: stdout.
    #[arg(help_heading = "Reporting", long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write Prometheus metrics here (atomically) for node_exporter's textfile collector.
    #[arg(help_heading = "Reporting", long, value_name = "FILE.prom")]
    pub metrics_file: Option<PathBuf>,
    /// No progress bar and no summary; errors are still printed, and so is a run that found
    /// nothing to look at.
    #[arg(help_heading = "Reporting", long, short = 'q')]
    pub quiet: bool,
    /// Inputs with nothing in them are fine: exit 0 (and count as a success in the metrics)
    /// instead of 4. For lists that are often empty (`find -newer ... | ddcolor colorize
    /// --files-from -`).
    #[arg(help_heading = "Reporting", long)]
    pub allow_empty: bool,
}

/// Everything `colorize` needs, checked.
pub struct ColorizeSettings {
    pub model: ModelSpec,
    pub cache: CacheSettings,
    pub sources: Sources,
    pub batch: BatchOptions,
    pub require_cache: bool,
    pub report: Option<PathBuf>,
    pub metrics_file: Option<PathBuf>,
}

impl ColorizeSettings {
    pub fn from_args(args: &ColorizeArgs) -> Result<Self, CliError> {
        let m = &args.model;
        crate::error::check_model_size(m.size)?;
        if args.batch == 0 {
            return Err(CliError::Usage("--batch must be at least 1".into()));
        }
        let Some(output) = args.output.clone() else {
            return Err(CliError::Usage(
                "--output DIR is needed: the folder the colorized images go to (`-o -`: one \
                 image to standard output)"
                    .into(),
            ));
        };
        check_output_name(&output)?;
        if args.paths.is_empty() && args.files_from.is_none() {
            return Err(CliError::Usage(
                "nothing to colorize: name files or folders, or use --files-from".into(),
            ));
        }
        m.device.check().map_err(Error::Device)?;
        let (dtype, note) = resolve_dtype(m.device, m.dtype);
        if let Some(note) = note {
            crate::say!("ddcolor: {note}");
        }
        if let Some(list) = args.files_from.as_deref().filter(|l| *l != Path::new("-")) {
            std::fs::File::open(list).map_err(|source| CliError::FileList {
                path: list.to_owned(),
                source,
            })?;
        }
        let cache = CacheSettings::from_args(&args.cache)?;
        if args.cache_ttl.is_some()
            && matches!(cache.spec, crate::cache::CacheSpec::Disk(_))
            && !args.quiet
        {
            crate::say!(
                "ddcolor: warning: --cache-ttl is ignored by the disk cache: only Redis expires \
                 results; the disk cache keeps them until --cache-max-size evicts the least \
                 recently used"
            );
        }
        let upstream = args.compat == Some(Compat::Upstream);
        let shard = match args.shard {
            Some(ShardArg::Shard(s)) => Some(s),
            Some(ShardArg::None) => None,
            None => match Shard::from_env(|k| std::env::var(k).ok()) {
                Ok(Some((s, from))) => {
                    if !args.quiet {
                        crate::say!("ddcolor: shard {s} (from {from}; --shard none for all)");
                    }
                    Some(s)
                }
                Ok(None) => None,
                Err(e) => return Err(CliError::Usage(format!("--shard: {e}"))),
            },
        };
        let weights = if args.dry_run && m.weights.is_none() {
            // a preview never downloads: without the model on this machine it plans without
            // the cache (cache keys need the model's identity)
            match crate::weights::Locations::from_env().find(m.model) {
                Some(found) => found.path,
                None => {
                    if !args.quiet {
                        crate::say!(
                            "ddcolor: note: the {} model is not on this machine yet (a {} \
                             download on the first real run): without it this dry run cannot \
                             look results up in the cache, so each new image shows as `infer`",
                            m.model,
                            m.model.approx_size()
                        );
                    }
                    PathBuf::new()
                }
            }
        } else {
            resolve_weights(m.weights.as_deref(), m.model, args.quiet)?
        };
        let sources = Sources {
            roots: args.paths.clone(),
            list: args.files_from.clone().map(|f| (f, args.null)),
            opts: WalkOptions {
                include: walk::glob_set(&args.include).map_err(CliError::Usage)?,
                exclude: walk::glob_set(&args.exclude).map_err(CliError::Usage)?,
                follow_symlinks: args.follow_symlinks,
                ..WalkOptions::default()
            },
        };
        Ok(Self {
            model: ModelSpec {
                weights,
                device: m.device,
                dtype,
                tf32: m.tf32,
                size: m.size,
                resize: if upstream {
                    ResizeMode::Nearest
                } else {
                    args.resize
                },
                gamut: if upstream {
                    crate::pipeline::Gamut::Upstream
                } else {
                    args.gamut
                },
                lab: if upstream {
                    crate::pipeline::LabFlavour::OpenCv
                } else {
                    crate::pipeline::LabFlavour::Exact
                },
                saturation: args.saturation,
            },
            sources,
            batch: BatchOptions {
                output,
                format: args.format,
                overwrite: args.overwrite,
                dry_run: args.dry_run,
                batch: args.batch,
                max_pixels: args.max_pixels,
                cache_ttl: args.cache_ttl,
                cache_prefix: args.cache.cache_prefix.clone(),
                lease_ttl: args.lease_ttl,
                quiet: args.quiet,
                force: args.force,
                encoding: imageio::Encoding {
                    jpeg_quality: args.jpeg_quality,
                    jpeg_chroma: args.jpeg_chroma,
                    png: args.png_compression,
                    tiff: args.tiff_compression,
                },
                rehash: args.rehash,
                readers: 0,
                shard,
                stdio: Default::default(),
            },
            cache,
            require_cache: args.require_cache,
            report: args.report.clone(),
            metrics_file: args.metrics_file.clone(),
        })
    }

    /// The index of hashed files for this run (disabled if it has no home).
    pub fn open_index(&self) -> Index {
        match self.cache.index_dir() {
            Some(dir) => Index::open(&Index::file_in(&dir)),
            None => Index::disabled(),
        }
    }
}

/// `--output` names a folder: one that does not exist yet but is named like an image file
/// (`-o out.png`) is almost surely a mistake (outputs keep their inputs' names inside the
/// folder), so it is refused rather than created.
fn check_output_name(output: &Path) -> Result<(), CliError> {
    if output == Path::new("-") || output.exists() {
        return Ok(());
    }
    let image_like = output
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| {
            walk::DEFAULT_EXTENSIONS
                .iter()
                .any(|x| x.eq_ignore_ascii_case(e))
        });
    if image_like {
        return Err(CliError::Usage(format!(
            "--output {} looks like an image file name, but --output is a folder (each output \
             keeps its input's name inside it): for one image into a file of your choice use \
             `-o - > {}`; for a folder with that name, create it first",
            crate::text::shown(output),
            crate::text::shown(output)
        )));
    }
    Ok(())
}

pub fn run(args: ColorizeArgs) -> Result<ExitCode, CliError> {
    let mut settings = ColorizeSettings::from_args(&args)?;
    // `-` in, `--output -` out: temporary stand-ins, named `-` in messages and the report
    let filter = super::filter::Filter::setup(
        &mut settings.sources.roots,
        args.files_from.as_deref(),
        &mut settings.batch.output,
        args.report.as_deref(),
        args.max_pixels,
    )?;
    if let Some(f) = &filter {
        settings.batch.stdio = f.aliases.clone();
    }
    // before the cache is opened or anything read: an output folder that is an input folder,
    // or that cannot be made (a file in its way), is bad configuration (exit 2) named as such;
    // nothing is created yet (the engine creates and probes it first thing, before the model)
    batch::dest::preflight(
        &settings.batch.output,
        &settings.sources.root_folders(),
        false,
    )?;
    let cache = match settings
        .cache
        .open_for_run(settings.require_cache, args.cache_readonly)
    {
        Ok(run) => {
            for w in run.warnings {
                crate::say!("ddcolor: warning: {w}");
            }
            run.cache
        }
        Err(e) => return Err(Error::CacheUnreachable(e).into()),
    };
    let opts = settings.batch.clone();
    let sink = match &settings.report {
        Some(p) => Some(
            ReportSink::open(p)
                .map_err(|source| CliError::Report {
                    path: p.clone(),
                    source,
                })?
                .with_run(crate::batch::report::RunInfo {
                    model: match &args.model.weights {
                        Some(w) => w
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        None => args.model.model.to_string(),
                    },
                    size: args.model.size,
                    cwd: std::env::current_dir()
                        .ok()
                        .map(|d| d.to_string_lossy().into_owned()),
                }),
        ),
        None => None,
    };
    // `--output -`: the image's line waits until it reached standard output (or did not)
    let to_stdout = filter.as_ref().is_some_and(|f| f.to_stdout()) && !args.dry_run;
    let sink = sink.map(|s| if to_stdout { s.held() } else { s });
    let index = settings.open_index();
    let model = LazyModel::new(settings.model.clone(), args.quiet);
    let outcome = batch::run(
        &model,
        cache.as_ref(),
        &index,
        &settings.sources,
        &opts,
        sink.as_ref(),
    )
    .inspect_err(|_| {
        // the run stopped (exit 3): what it held back is written, as not delivered
        if let Some(sink) = &sink {
            let _ = sink.release(Some("not delivered: the run stopped"));
        }
    })?;
    let mut s = outcome.summary;
    // an empty or unmounted archive must not look like a quiet success
    let empty = s.found == 0 && !args.allow_empty;
    if empty && args.quiet {
        crate::say!(
            "ddcolor: nothing to colorize: {} (exit 4; --allow-empty if that is expected)",
            if s.left_out.is_empty() {
                "no file at all was found in the paths given (an empty or unmounted folder?)"
            } else {
                "every file found was left out (not an image, or filtered)"
            }
        );
    }
    let mut success = s.failed == 0 && !empty;
    if let (Some(f), false) = (&filter, args.dry_run) {
        let undelivered = match f.finish(&s) {
            Ok(done) => {
                success &= done;
                None
            }
            Err(why) => Some(why),
        };
        if let Some(why) = &undelivered {
            // made but not delivered: a failure, whatever the report would have said
            crate::say!("ddcolor: error: -: {}", crate::text::escape_controls(why));
            if s.failed == 0 {
                let was = [Status::Inferred, Status::Cached, Status::Duplicate]
                    .into_iter()
                    .find(|&st| s.by_status(st) > 0);
                if let Some(was) = was {
                    s.recount_as_failed(was);
                } else {
                    s.failed += 1;
                }
            }
            success = false;
        }
        if let Some(sink) = &sink {
            if let (_, Err(e)) = sink.release(undelivered.as_deref()) {
                crate::say!("ddcolor: warning: cannot write the report: {e}");
            }
        }
    }
    if !args.quiet {
        crate::say!("{}", s.render());
    }
    if let (Some(path), false) = (&settings.metrics_file, args.dry_run) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let text = s.prometheus(now, success, last_success(path));
        if let Err(e) = imageio::write_atomic(path, |w| {
            w.write_all(text.as_bytes()).map_err(|e| Error::Write {
                path: path.clone(),
                reason: e.to_string(),
            })
        }) {
            crate::say!("ddcolor: warning: {e}");
        }
    }
    Ok(if empty && s.failed == 0 {
        ExitCode::NoInput
    } else if success {
        ExitCode::Ok
    } else {
        ExitCode::SomeFailed
    })
}

/// `ddcolor_last_success_timestamp_seconds` of an earlier run's metrics file, if any.
fn last_success(metrics: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(metrics).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("ddcolor_last_success_timestamp_seconds "))
        .and_then(|v| v.trim().parse().ok())
}
