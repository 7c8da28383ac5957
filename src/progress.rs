//! Progress bars on stderr, hidden when stderr is not a terminal or the run is quiet: the one
//! rule for every bar ddcolor shows (batch runs, downloads).
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar of `len` steps (unknown: `None`) drawn on stderr only when stderr is a
/// terminal and `quiet` is off; otherwise hidden (its updates cost next to nothing).
pub fn stderr_bar(len: Option<u64>, quiet: bool) -> ProgressBar {
    let visible = !quiet && std::io::stderr().is_terminal();
    let bar = ProgressBar::with_draw_target(
        len,
        if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if visible {
        *ACTIVE.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar.downgrade());
    }
    bar
}

/// The bar drawn last, while it lives: [`say`] prints above it.
static ACTIVE: std::sync::Mutex<Option<indicatif::WeakProgressBar>> = std::sync::Mutex::new(None);

/// A message line on stderr, above the progress bar when one is drawn (a plain `eprintln!`
/// would land in the middle of the bar's line).
pub fn say(line: &str) {
    let bar = ACTIVE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|w| w.upgrade())
        .filter(|b| !b.is_hidden() && !b.is_finished());
    match bar {
        Some(b) => b.println(line),
        None => eprintln!("{line}"),
    }
}

/// The style of an indicatif `template`; indicatif's default bar if the template does not parse.
pub fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}
