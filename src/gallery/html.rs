//! Strings into the review page, each escaped for the place it lands, and the page's
//! Content-Security-Policy. Archives come from donors: file names, folder names and titles are
//! hostile input, so nothing from a report reaches the page unescaped, and the template is
//! filled in one pass (a value is never read again as a placeholder).
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Text for an HTML element or a quoted attribute value.
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JSON for a `<script type="application/json">` block: `<`, `>` and `&` as `\u` escapes, so
/// that no `</script>`, `<!--` or `<script` inside a string can end or change the element
/// (the HTML parser knows nothing of JSON strings), and U+2028/U+2029 likewise (line ends to
/// some JavaScript parsers). These characters can only stand inside JSON strings, where the
/// escapes mean the same characters.
pub fn json_for_script(v: &serde_json::Value) -> String {
    let raw = v.to_string();
    let mut out = String::with_capacity(raw.len() + raw.len() / 16);
    for c in raw.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// `template` with each `__NAME__` of `values` replaced, in one pass from left to right: what
/// a value holds is copied as it is, never searched for placeholders. A `__NAME__` not in
/// `values` is left as it is.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out =
        String::with_capacity(template.len() + values.iter().map(|v| v.1.len()).sum::<usize>());
    let mut rest = template;
    while let Some(at) = rest.find("__") {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        match values.iter().find(|(name, _)| {
            tail[2..].starts_with(name) && tail[2 + name.len()..].starts_with("__")
        }) {
            Some((name, value)) => {
                out.push_str(value);
                rest = &tail[4 + name.len()..];
            }
            None => {
                out.push_str("__");
                rest = &tail[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The Content-Security-Policy of a page whose only code is the inline `<script>` and
/// `<style>` elements of `template` (hashed, so nothing else runs: no inline event handler,
/// no `javascript:` URL, no injected element): images from the page's own folder (`file:`
/// when opened from a disk, `'self'` when served), `blob:` for the saved list, nothing else.
pub fn content_security_policy(template: &str) -> String {
    let hashes = |open: &str, close: &str| -> String {
        let mut out = Vec::new();
        let mut rest = template;
        while let Some(a) = rest.find(open) {
            let body_start = a + open.len();
            let Some(len) = rest[body_start..].find(close) else {
                break;
            };
            let body = &rest[body_start..body_start + len];
            let digest = Sha256::digest(body.as_bytes());
            out.push(format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            ));
            rest = &rest[body_start + len + close.len()..];
        }
        out.join(" ")
    };
    format!(
        "default-src 'none'; script-src {}; style-src {}; img-src 'self' file: blob: data:; \
         base-uri 'none'; form-action 'none'",
        hashes("<script>", "</script>"),
        hashes("<style>", "</style>"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_never_read_as_a_placeholder() {
        let t = "<title>__TITLE__</title><h1>__TITLE__</h1><script>__DATA__</script>__X__";
        let page = fill(t, &[("TITLE", "Album __DATA__"), ("DATA", "{\"a\":1}")]);
        assert_eq!(
            page,
            "<title>Album __DATA__</title><h1>Album __DATA__</h1><script>{\"a\":1}</script>__X__"
        );
        assert_eq!(fill("a__b__c____", &[("b", "B")]), "aBc____");
    }

    #[test]
    fn nothing_in_a_json_string_can_close_the_script_element() {
        let v = serde_json::json!({"path": "<!--<script>/</script><img src=x onerror=alert(1)>&\u{2028}"});
        let s = json_for_script(&v);
        for bad in ["<", ">", "&", "\u{2028}"] {
            assert!(!s.contains(bad), "{bad:?} in {s}");
        }
        let back: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn text_escapes_quotes_of_both_kinds() {
        assert_eq!(text("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
    }

    #[test]
    fn the_policy_hashes_each_inline_block() {
        let csp = content_security_policy("<style>x</style><script>y</script><script>z</script>");
        assert_eq!(csp.matches("'sha256-").count(), 3, "{csp}");
        assert!(!csp.contains("unsafe-inline"));
    }
}
