//! The command line: what clap parsed (no I/O here), and `run`, which validates it, builds the
//! real objects (device, model, colorizer) and executes the subcommand.
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Parser, Subcommand};

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
}

#[derive(Debug, Parser)]
#[command(
    name = "ddcolor",
    version,
    about = "Colorize black-and-white photos with DDColor (ICCV 2023), in Rust",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Colorize images into an output folder.
    Colorize(ColorizeArgs),
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

#[derive(Debug, Args)]
pub struct ColorizeArgs {
    /// Image files to colorize.
    #[arg(required = true, value_name = "PATHS")]
    pub paths: Vec<PathBuf>,
    /// Output folder; each result is written as DIR/<file name>.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// How the model's colour is scaled back to the photo's size: bilinear (smooth colour
    /// edges; the default) or nearest (the upstream DDColor script's behaviour).
    #[arg(long, default_value = "bilinear", value_name = "MODE")]
    pub resize: ResizeMode,
    /// Refuse images whose header claims more pixels than this.
    #[arg(long, default_value_t = imageio::DEFAULT_MAX_PIXELS, value_name = "N")]
    pub max_pixels: u64,
    /// Print nothing but errors.
    #[arg(long, short = 'q')]
    pub quiet: bool,
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
        Command::Colorize(args) => colorize(args),
    }
}

/// Open the device and load the model named by `args`.
pub fn load_model(args: &ModelArgs, quiet: bool) -> Result<DDColor, Error> {
    let weights = args.weights.as_deref().ok_or_else(|| {
        Error::Usage(
            "no weights given: pass --weights FILE or set DDCOLOR_WEIGHTS (weights/README.md \
             says where the checkpoints come from)"
                .into(),
        )
    })?;
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

/// Where the output for `input` goes: `DIR/<file name of input>`.
fn output_path(dir: &Path, input: &Path) -> Result<PathBuf, Error> {
    let name = input
        .file_name()
        .ok_or_else(|| Error::Usage(format!("{} has no file name", input.display())))?;
    Ok(dir.join(name))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn colorize(args: ColorizeArgs) -> Result<i32, Error> {
    crate::pipeline::check_model_size(args.model.size).map_err(Error::Usage)?;
    for p in &args.paths {
        if p.is_dir() {
            return Err(Error::Usage(format!(
                "{} is a folder; name image files",
                p.display()
            )));
        }
    }
    let model = load_model(&args.model, args.quiet)?;
    let colorizer = Colorizer::new(model, args.model.size, args.resize)?;
    let mut failed = 0usize;
    for input in &args.paths {
        let started = Instant::now();
        let result = (|| {
            let dest = output_path(&args.output, input)?;
            if same_file(input, &dest) {
                return Err(Error::Usage(format!(
                    "{}: the output would overwrite the input; choose another --output",
                    input.display()
                )));
            }
            let img = imageio::decode(input, args.max_pixels)?;
            let out = colorizer.colorize(&img)?;
            imageio::save(&image::DynamicImage::ImageRgb8(out), &dest)?;
            Ok::<_, Error>(dest)
        })();
        match result {
            Ok(dest) => {
                if !args.quiet {
                    eprintln!(
                        "{} -> {} ({} ms)",
                        input.display(),
                        dest.display(),
                        started.elapsed().as_millis()
                    );
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("ddcolor: error: {e}");
            }
        }
    }
    Ok(if failed > 0 {
        exit::SOME_FAILED
    } else {
        exit::OK
    })
}
