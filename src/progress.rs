//! Progress bars on stderr, hidden when stderr is not a terminal or the run is quiet: the one
//! rule for every bar ddcolor shows (batch runs, downloads).
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget};

/// A progress bar drawn on stderr only when stderr is a terminal and `quiet` is off.
pub fn stderr_bar(len: Option<u64>, quiet: bool) -> ProgressBar {
    let visible = !quiet && std::io::stderr().is_terminal();
    ProgressBar::with_draw_target(
        len,
        if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    )
}
