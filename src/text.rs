//! Text for people: paths and foreign strings in human-readable messages with their control
//! and bidirectional formatting characters escaped, so that a file named `x\nddcolor: error: fake.jpg` cannot forge a line
//! on a terminal or in a log (NDJSON reports are escaped by JSON itself).
use std::borrow::Cow;
use std::path::Path;

/// Whether `c` is a bidirectional formatting character (U+202E RIGHT-TO-LEFT OVERRIDE and its
/// kin): shown raw, it reorders the rest of the line on a terminal (`gpj.exe` reads `exe.jpg`).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn needs_escape(c: char) -> bool {
    c.is_control() || is_bidi_control(c)
}

/// `s` with every control character (newline, carriage return, tab, escape, DEL, C1) and
/// bidirectional formatting character (U+202E ...) written as a Rust escape (`\n`, `\r`,
/// `\t`, `\u{1b}`, `\u{202e}`); a backslash stays as it is.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else if is_bidi_control(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A path as a message shows it: lossy UTF-8, control characters escaped.
pub fn shown(p: &Path) -> String {
    escape_controls(&p.to_string_lossy()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_nothing_else() {
        assert_eq!(escape_controls("plain/ä b.jpg"), "plain/ä b.jpg");
        assert_eq!(
            escape_controls("x\nddcolor: error: fake.jpg"),
            "x\\nddcolor: error: fake.jpg"
        );
        assert_eq!(
            escape_controls("a\rb\tc\u{1b}[31m\u{7f}"),
            "a\\rb\\tc\\u{1b}[31m\\u{7f}"
        );
        assert_eq!(shown(Path::new("dir/\u{85}x")), "dir/\\u{85}x");
        assert_eq!(escape_controls("a\u{202e}gpj.exe"), "a\\u{202e}gpj.exe");
        assert_eq!(escape_controls("\u{2066}x\u{2069}"), "\\u{2066}x\\u{2069}");
        assert!(!shown(Path::new("a\nb\r\u{0}"))
            .chars()
            .any(char::is_control));
    }
}
