//! Progress bars on stderr, hidden when stderr is not a terminal or the run is quiet: the one
//! rule for every bar ddcolor shows (batch runs, downloads). A visible bar draws through the
//! stderr queue ([`crate::say`]), so a terminal that stops reading never blocks the run.
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar of `len` steps (unknown: `None`) drawn on stderr only when stderr is a
/// terminal and `quiet` is off; otherwise hidden (its updates cost next to nothing).
pub fn stderr_bar(len: Option<u64>, quiet: bool) -> ProgressBar {
    let visible = !quiet && std::io::stderr().is_terminal();
    let bar = ProgressBar::with_draw_target(
        len,
        if visible {
            ProgressDrawTarget::term_like_with_hz(Box::new(crate::say::QueuedTerm), 20)
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if visible {
        crate::say::above(&bar);
    }
    bar
}

/// The style of an indicatif `template`; indicatif's default bar if the template does not parse.
pub fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}
