//! Exit codes: one enum, the one table of what each means (the manual page prints it; a test
//! holds GUIDE.md's table to it), and the one place an error's kind becomes a code.
use super::error::CliError;
use crate::error::Error;

/// How a `ddcolor` command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitCode {
    /// Everything asked for was done.
    Ok,
    /// Some files failed; every other file was done.
    SomeFailed,
    /// Bad usage or configuration (flags, weights); nothing was done.
    Usage,
    /// `--require-cache` and the cache could not be reached (nothing was done), or it stopped
    /// answering mid-run (the run stopped; what was written is in the report).
    CacheUnreachable,
    /// The inputs named held nothing to look at: no file at all, or none that could be an
    /// image; not a success for a job that runs unattended. `--allow-empty` makes it 0.
    NoInput,
}

impl ExitCode {
    pub const ALL: [ExitCode; 5] = [
        ExitCode::Ok,
        ExitCode::SomeFailed,
        ExitCode::Usage,
        ExitCode::CacheUnreachable,
        ExitCode::NoInput,
    ];

    /// The exit code of a command that stopped on `e`, by its kind (every kind named, so
    /// that a new one must be given its code here).
    pub fn of(e: &CliError) -> ExitCode {
        match e {
            CliError::Run(Error::CacheUnreachable(_)) => ExitCode::CacheUnreachable,
            CliError::Run(
                Error::Load(_)
                | Error::Decode { .. }
                | Error::Write { .. }
                | Error::InvalidSize { .. }
                | Error::InputLength { .. }
                | Error::Device(_)
                | Error::Model(_)
                | Error::OutputIsInput { .. }
                | Error::OutputUnwritable { .. }
                | Error::FileList { .. }
                | Error::Inference(_),
            ) => ExitCode::Usage,
            CliError::Usage(_)
            | CliError::Weights(_)
            | CliError::Cache(_)
            | CliError::FileList { .. }
            | CliError::Stdin(_)
            | CliError::StdinTooLarge { .. }
            | CliError::Scratch(_)
            | CliError::Report { .. }
            | CliError::Stdout(_)
            | CliError::ManPage(_)
            | CliError::Reports(_)
            | CliError::NoReportLines
            | CliError::Gallery(_) => ExitCode::Usage,
        }
    }

    /// The process's exit status.
    pub fn code(self) -> i32 {
        match self {
            ExitCode::Ok => 0,
            ExitCode::SomeFailed => 1,
            ExitCode::Usage => 2,
            ExitCode::CacheUnreachable => 3,
            ExitCode::NoInput => 4,
        }
    }

    /// What it means: GUIDE.md's table row (tests/cli.rs holds them equal; the manual page
    /// prints it without the backticks).
    pub fn meaning(self) -> &'static str {
        match self {
            ExitCode::Ok => "every input was done (colorized, cached, duplicate or skipped)",
            ExitCode::SomeFailed => "some inputs failed (each named on stderr with the reason); all others were done",
            ExitCode::Usage => "bad usage or configuration (flags, such as a `--max-pixels` over 2^40 = 1099511627776, a cache spec that cannot be parsed, weights that cannot be read or fetched, an output folder that is an input folder or cannot be written, an `--output` that is an existing file or an image file name such as `out.png`); nothing was done",
            ExitCode::CacheUnreachable => "`--require-cache` and the cache could not be reached (nothing was done), or it stopped answering mid-run (the run stopped; what was written is in the report)",
            ExitCode::NoInput => "nothing to look at: the inputs held no file at all, or none that could be an image (an empty or unmounted folder, an empty `--files-from` list); said on stderr even with `--quiet`, and not a success in the metrics. `--allow-empty` makes it 0",
        }
    }
}
