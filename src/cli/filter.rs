//! `colorize -` and `--output -`: one image through standard input and output, as a filter
//! (`curl ... | ddcolor colorize - -o - | convert - ...`). The batch engine does the work, so
//! the cache, leases, report and exit codes are those of files: what standard input holds is
//! put in a temporary file named for its format (`stdin.png`), and the output written into a
//! temporary folder is copied to standard output. Messages and the report say `-` for both.
use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::CliError;
use crate::batch::read::max_file_bytes;
use crate::batch::report::Summary;
use crate::batch::StdioAliases;

/// The temporary files of a filter run, removed when dropped.
pub struct Filter {
    dir: PathBuf,
    /// Where the output for standard output is written, if `--output -`.
    out_dir: Option<PathBuf>,
    pub aliases: StdioAliases,
}

fn is_dash(p: &Path) -> bool {
    p == Path::new("-")
}

impl Filter {
    /// Set up standard input and output for a run, if asked: replaces the `-` input by a
    /// temporary file and `output` by a temporary folder. `None` when neither is `-`.
    pub fn setup(
        paths: &mut [PathBuf],
        files_from: Option<&Path>,
        output: &mut PathBuf,
        report: Option<&Path>,
        max_pixels: u64,
    ) -> Result<Option<Self>, CliError> {
        let stdin = paths.iter().any(|p| is_dash(p));
        let stdout = is_dash(output);
        if !stdin && !stdout {
            return Ok(None);
        }
        let single = paths.len() == 1 && files_from.is_none();
        if stdout && !single {
            return Err(CliError::Usage(
                "--output - writes one image to standard output: name exactly one input \
                 (a file, or - for standard input), no folder and no --files-from"
                    .into(),
            ));
        }
        if stdin && (paths.len() > 1 || files_from == Some(Path::new("-"))) {
            return Err(CliError::Usage(
                "- (standard input) is one image: name no other input with it".into(),
            ));
        }
        if stdout && report.is_some_and(is_dash) {
            return Err(CliError::Usage(
                "--report - and --output - would both write to standard output".into(),
            ));
        }
        if stdout && paths[0].is_dir() {
            return Err(CliError::Usage(format!(
                "--output - writes one image: {} is a folder",
                crate::text::shown(&paths[0])
            )));
        }
        let dir = make_temp_dir()?;
        let mut filter = Self {
            dir: dir.clone(),
            out_dir: None,
            aliases: StdioAliases::default(),
        };
        if stdin {
            let limit = max_file_bytes(max_pixels);
            let mut bytes = Vec::new();
            std::io::stdin()
                .lock()
                .take(limit.saturating_add(1))
                .read_to_end(&mut bytes)
                .map_err(CliError::Stdin)?;
            if bytes.len() as u64 > limit {
                return Err(CliError::StdinTooLarge { limit });
            }
            // named for its format, so that `--format same` knows what to write
            let ext = image::guess_format(&bytes)
                .ok()
                .and_then(|f| f.extensions_str().first().copied())
                .unwrap_or("img");
            let file = dir.join(format!("stdin.{ext}"));
            std::fs::write(&file, &bytes)
                .map_err(|e| CliError::Scratch(format!("cannot buffer standard input: {e}")))?;
            paths[0] = file.clone();
            filter.aliases.stdin_file = Some(file);
        }
        if stdout {
            let out = dir.join("out");
            *output = out.clone();
            filter.out_dir = Some(out.clone());
            filter.aliases.stdout_dir = Some(out);
        }
        Ok(Some(filter))
    }

    /// Whether the output goes to standard output (`--output -`).
    pub fn to_stdout(&self) -> bool {
        self.out_dir.is_some()
    }

    /// After the run: copy the output to standard output (`--output -`). `Ok(false)`: no image
    /// was written (failed, or skipped as already colour), a failure here, as a filter that
    /// writes nothing would hand the next command an empty image. `Err`: the image was made
    /// but never reached standard output (a reader that went away, a full disk): why.
    pub fn finish(&self, summary: &Summary) -> Result<bool, String> {
        let Some(out) = &self.out_dir else {
            return Ok(true);
        };
        let written: Vec<PathBuf> = walkdir::WalkDir::new(out)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .map(|e| e.into_path())
            .filter(|p| !p.to_string_lossy().ends_with(crate::imageio::TEMP_SUFFIX))
            .collect();
        let [file] = written.as_slice() else {
            if summary.skipped > 0 {
                crate::say!(
                    "ddcolor: error: -: nothing written to standard output: the image was \
                     skipped (an image already in colour is colorized only with --force)"
                );
            }
            return Ok(false);
        };
        let bytes = std::fs::read(file).map_err(|e| format!("cannot read the output back: {e}"))?;
        crate::say::stdout_bytes(&bytes)
            .map_err(|e| format!("not delivered: cannot write to standard output: {e}"))?;
        Ok(true)
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh private folder under the system's temporary folder.
fn make_temp_dir() -> Result<PathBuf, CliError> {
    let base = std::env::temp_dir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    for attempt in 0..100u32 {
        let dir = base.join(format!(
            "ddcolor-stdio-{}-{nanos:x}-{attempt}",
            std::process::id()
        ));
        let mut b = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        match b.create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(CliError::Scratch(format!(
                    "cannot make a temporary folder in {}: {e}",
                    crate::text::shown(&base)
                )))
            }
        }
    }
    Err(CliError::Scratch("cannot make a temporary folder".into()))
}
