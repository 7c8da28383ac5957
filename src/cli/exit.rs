//! Exit codes (documented in the README and the manual page).
/// Everything asked for was done.
pub const OK: i32 = 0;
/// Some files failed; every other file was done.
pub const SOME_FAILED: i32 = 1;
/// Bad usage or configuration (flags, weights); nothing was done.
pub const USAGE: i32 = 2;
/// `--require-cache` and the cache could not be reached (nothing was done), or it stopped
/// answering mid-run (the run stopped; what was written is in the report).
pub const CACHE_UNREACHABLE: i32 = 3;
/// The inputs named held nothing to look at: no file at all, or none that could be an image (an
/// empty or unmounted folder, a `--files-from` list with no entry); not a success for a job
/// that runs unattended. `--allow-empty` makes it 0.
pub const NO_INPUT: i32 = 4;
