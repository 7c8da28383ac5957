//! The second stage of the command line: parsed arguments checked once and turned into what
//! the library takes (the model spec, the cache with its fallback policy, the walk and the
//! batch options). Everything that can be refused is refused here, before any work.
use std::path::PathBuf;

use clap::Args;
use std::time::Duration;

use super::error::CliError;
use crate::cache::{Cache, CacheOptions, CacheSpec, TlsFiles};
use crate::device::{DeviceSpec, DtypeChoice, Precision};

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

/// The checkpoint to load: `--weights`, else `--model` found on this machine or downloaded
/// (GUIDE.md "Weights"). Nothing found and no download: an error that lists where it looked
/// and how to get the file (exit 2).
pub fn resolve_weights(
    weights: Option<&std::path::Path>,
    model: crate::weights::ModelName,
    quiet: bool,
) -> Result<PathBuf, CliError> {
    let locations = crate::weights::Locations::from_env();
    let hub = crate::weights::Hub::from_env();
    Ok(crate::weights::resolve(weights, model, &locations, &hub, quiet)?.path)
}

/// The `--cache` flags, shared by `colorize` and `cache stats|clear`.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Cache")]
pub struct CacheArgs {
    /// disk[:PATH] (default, under $XDG_CACHE_HOME/ddcolor), redis://[user:pass@]host:port[/db],
    /// rediss://... (TLS), redis-cluster://host:port,host:port,..., or none.
    #[arg(
        long,
        env = "DDCOLOR_CACHE",
        // the value may hold a password: `--help` names the variable, never its value
        hide_env_values = true,
        default_value = "disk",
        value_name = "SPEC"
    )]
    pub cache: String,
    /// Key prefix, to keep several projects apart in one Redis.
    #[arg(long, default_value = crate::cache::key::DEFAULT_PREFIX, value_name = "PREFIX")]
    pub cache_prefix: String,
    /// Bound for the disk cache (500M, 10G, ..., or unbounded); least recently used results
    /// are evicted. A result is ~320 KB at size 512: 10G holds ~30,000.
    #[arg(
        long,
        default_value = DEFAULT_DISK_BOUND,
        value_parser = parse_max_size,
        value_name = "SIZE"
    )]
    pub cache_max_size: MaxSize,
    /// Client certificate (PEM) for mutual TLS with a rediss:// cache; with --cache-tls-key.
    #[arg(long, env = "DDCOLOR_CACHE_TLS_CERT", value_name = "FILE")]
    pub cache_tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "DDCOLOR_CACHE_TLS_KEY", value_name = "FILE")]
    pub cache_tls_key: Option<PathBuf>,
    /// CA certificate (PEM) that signed the server's, trusted instead of the system's store
    /// (default: the system's, where SSL_CERT_FILE and SSL_CERT_DIR add a private CA).
    #[arg(long, env = "DDCOLOR_CACHE_TLS_CA", value_name = "FILE")]
    pub cache_tls_ca: Option<PathBuf>,
}

/// The disk cache's default bound: a cache that runs unattended for years must not fill the
/// disk; 10 GiB keeps ~30,000 results at size 512.
pub const DEFAULT_DISK_BOUND: &str = "10G";

/// `--cache-max-size`: bytes, or `unbounded` (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxSize(pub Option<u64>);

fn parse_max_size(s: &str) -> Result<MaxSize, String> {
    if ["unbounded", "none", "unlimited"]
        .iter()
        .any(|w| s.trim().eq_ignore_ascii_case(w))
    {
        return Ok(MaxSize(None));
    }
    crate::cache::parse_size(s).map(|n| MaxSize(Some(n)))
}

/// `--cache` and its options, the spec parsed once.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub spec: CacheSpec,
    pub options: CacheOptions,
}

/// The cache of a run, in its policy wrappers, and the warnings opening it gave.
pub struct RunCache {
    pub cache: Box<dyn Cache>,
    pub warnings: Vec<String>,
}

impl CacheSettings {
    /// A spec that cannot be parsed is bad configuration (exit 2), not an unreachable cache.
    pub fn from_args(args: &CacheArgs) -> Result<Self, CliError> {
        let spec =
            CacheSpec::parse(&args.cache).map_err(|e| CliError::Usage(format!("--cache: {e}")))?;
        let tls = TlsFiles {
            cert: args.cache_tls_cert.clone(),
            key: args.cache_tls_key.clone(),
            ca: args.cache_tls_ca.clone(),
        };
        if tls.is_set() && !spec.is_tls() {
            return Err(CliError::Usage(
                "--cache-tls-cert, --cache-tls-key and --cache-tls-ca (or DDCOLOR_CACHE_TLS_*) \
                 are for TLS caches: --cache rediss://... or rediss-cluster://..."
                    .to_owned(),
            ));
        }
        tls.check().map_err(CliError::Usage)?;
        Ok(Self {
            spec,
            options: CacheOptions {
                prefix: args.cache_prefix.clone(),
                max_size: args.cache_max_size.0,
                tls,
            },
        })
    }

    /// Open it; any failure is an error of its own (exit 2: `cache stats`, `cache clear`).
    pub fn open_or_fail(&self) -> Result<Box<dyn Cache>, CliError> {
        Ok(self.spec.open(&self.options)?)
    }

    /// Open the cache for a run, wrapped in what the run may do with it
    /// ([`crate::cache::policy`]). Unreachable: with `require` an error (the message; exit
    /// 3), otherwise a warning and the spec's fallback (the disk cache for a Redis one, else
    /// none) for this run. Unwritable: read-only, with a warning (with `require`, an error).
    /// Prints nothing: the warnings come back for the caller to say.
    pub fn open_for_run(&self, require: bool, readonly: bool) -> Result<RunCache, String> {
        use crate::cache::policy::{ReadOnly, Required};
        let mut warnings = Vec::new();
        let cache = match self.spec.open(&self.options) {
            // a network cache that stops answering mid-run: the run goes on with the fallback
            // (with `require`, the engine stops it instead: exit 3)
            Ok(c) if self.spec.is_remote() && !require => Box::new(
                crate::cache::failover::Failover::new(c, &self.spec, &self.options),
            ),
            Ok(c) => c,
            Err(e) if require => return Err(e.to_string()),
            Err(e) => {
                let fallback = self
                    .spec
                    .fallback()
                    .open(&self.options)
                    .unwrap_or_else(|_| Box::new(crate::cache::none::NoCache));
                warnings.push(format!(
                    "cache unreachable ({e}); using {} for this run",
                    fallback.describe()
                ));
                fallback
            }
        };
        let mut readonly = readonly;
        if !readonly {
            if let Err(e) = cache.check_writable() {
                if require {
                    // --require-cache: the cache answers and takes writes, or nothing is done
                    return Err(format!(
                        "cannot write to {} ({e}); nothing was done (--require-cache; add \
                         --cache-readonly to only read it)",
                        cache.describe()
                    ));
                }
                warnings.push(format!(
                    "cannot write to {} ({e}); using it read-only",
                    cache.describe()
                ));
                readonly = true;
            }
        }
        let cache: Box<dyn Cache> = if readonly {
            Box::new(ReadOnly(cache))
        } else {
            cache
        };
        let cache: Box<dyn Cache> = if require {
            Box::new(Required(cache))
        } else {
            cache
        };
        Ok(RunCache { cache, warnings })
    }

    /// Where this machine's index of hashed files lives: beside the disk cache, or in the
    /// default disk cache folder when the cache is elsewhere.
    pub fn index_dir(&self) -> Option<PathBuf> {
        match &self.spec {
            CacheSpec::Disk(Some(dir)) => Some(dir.clone()),
            _ => crate::cache::disk::default_dir().ok(),
        }
    }
}

/// The precision `--dtype` asks for on this device (`auto` resolved: [`DtypeChoice::resolve`]),
/// decided before any work (the model loads only when an image needs it), and the note to
/// print once when bf16 runs on a CPU without AVX512_BF16 (emulated: the same results, slower
/// than f32).
pub fn resolve_dtype(device: DeviceSpec, choice: DtypeChoice) -> (Precision, Option<String>) {
    let cpu = matches!(device, DeviceSpec::Cpu)
        || (matches!(device, DeviceSpec::Auto) && !crate::device::cuda_compiled());
    let dtype = choice.resolve(cpu);
    (dtype, bf16_note(cpu && dtype == Precision::Bf16))
}

/// The note for bf16 products on the CPU when they are emulated.
pub fn bf16_note(bf16_on_cpu: bool) -> Option<String> {
    use crate::kernels::bf16::Kernel;
    (bf16_on_cpu && Kernel::current() == Kernel::Emulated).then(|| {
        let why = if Kernel::native_available() {
            "DDCOLOR_BF16_KERNEL=emulated"
        } else {
            "this CPU has no AVX512_BF16"
        };
        format!("note: --dtype bf16 is emulated ({why}): the same results, slower than f32 here")
    })
}
