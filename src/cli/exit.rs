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
