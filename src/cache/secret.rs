//! Keeping passwords out of what is shown: [`redact`] for a spec or URL, [`Secrets`] for free
//! text (an error message from the Redis client may quote the password, raw or decoded).
//!
//! Every string a cache shows (`describe()`, an error, a miss reason) goes through here first.

/// A URL with its password replaced by `***` (`redis://user:***@host:6379/0`, and a
/// `?password=` query parameter: `redis://host/0?password=***`); text that is no URL, or has
/// no password, comes back unchanged. Everything up to the last `@` counts as userinfo, so a
/// password with an unescaped `@` or `,` is still hidden.
pub fn redact(url: &str) -> String {
    let Some(i) = url.find("://") else {
        return url.to_owned();
    };
    let (head, rest) = url.split_at(i + 3);
    let (userinfo, hostpart) = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let shown = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***@"),
                None => format!("{userinfo}@"),
            };
            (shown, &rest[at + 1..])
        }
        None => (String::new(), rest),
    };
    format!("{head}{userinfo}{}", redact_query(hostpart))
}

/// Whether a query parameter's name is one that carries a password.
fn is_password_param(name: &str) -> bool {
    name.eq_ignore_ascii_case("password") || name.eq_ignore_ascii_case("pass")
}

/// `host:port/db?a=1&password=x` with the password parameters' values as `***`.
fn redact_query(hostpart: &str) -> String {
    let Some((before, query)) = hostpart.split_once('?') else {
        return hostpart.to_owned();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if is_password_param(k) => format!("{k}=***"),
            _ => p.to_owned(),
        })
        .collect();
    format!("{before}?{}", params.join("&"))
}

/// [`redact`] every URL found in free text (an error message).
pub(crate) fn redact_urls_in(text: &str) -> String {
    if !text.contains("://") {
        return text.to_owned();
    }
    let is_scheme = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.');
    let is_end = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let start = rest[..i]
            .char_indices()
            .rev()
            .take_while(|&(_, c)| is_scheme(c))
            .last()
            .map(|(j, _)| j)
            .unwrap_or(i);
        let end = rest[i + 3..]
            .find(is_end)
            .map(|j| i + 3 + j)
            .unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        out.push_str(&redact(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The raw (still percent-encoded) passwords in a URL: its userinfo's, and any `?password=`.
fn passwords_of(url: &str) -> Vec<&str> {
    let Some((_, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let hostpart = match rest.rfind('@') {
        Some(at) => {
            if let Some((_, pass)) = rest[..at].split_once(':') {
                out.push(pass);
            }
            &rest[at + 1..]
        }
        None => rest,
    };
    if let Some((_, query)) = hostpart.split_once('?') {
        for p in query.split('&') {
            if let Some((k, v)) = p.split_once('=') {
                if is_password_param(k) {
                    out.push(v);
                }
            }
        }
    }
    out
}

/// Percent-decode a URL component (invalid escapes are kept as they are).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hexval = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hexval(b[i + 1]), hexval(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Words that must never appear in a message (a password, raw and percent-decoded).
#[derive(Debug, Clone, Default)]
pub(crate) struct Secrets(Vec<String>);

impl Secrets {
    /// The passwords of some URLs, raw and percent-decoded.
    pub(crate) fn of_urls<'a>(urls: impl IntoIterator<Item = &'a str>) -> Self {
        let mut s = Self::default();
        for p in urls.into_iter().flat_map(passwords_of) {
            s.add(p);
            s.add(&percent_decode(p));
        }
        s
    }

    fn add(&mut self, secret: &str) {
        if !secret.is_empty() && !self.0.iter().any(|s| s == secret) {
            self.0.push(secret.to_owned());
            // Longest first, so that a secret containing another is replaced whole.
            self.0.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// Replace every secret in `msg` with `***` and redact any URL userinfo in it.
    pub(crate) fn scrub(&self, msg: &str) -> String {
        let mut out = redact_urls_in(msg);
        for s in &self.0 {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts() {
        assert_eq!(
            redact("redis://u:p@ss@h:1/0"),
            "redis://u:***@h:1/0".to_owned()
        );
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        assert_eq!(redact("redis://:pw@h:1"), "redis://:***@h:1");
        assert_eq!(
            redact("redis://h:1/0?password=hunter2&x=1"),
            "redis://h:1/0?password=***&x=1"
        );
        assert_eq!(
            redact("redis://u:p@h:1/0?PASSWORD=q"),
            "redis://u:***@h:1/0?PASSWORD=***"
        );
        assert_eq!(
            redact_urls_in("failed (redis://a:b@h:1): x, rediss://c:d@e"),
            "failed (redis://a:***@h:1): x, rediss://c:***@e"
        );
    }

    #[test]
    fn percent() {
        assert_eq!(percent_decode("p%40ss%2"), "p@ss%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }

    #[test]
    fn scrub_secrets() {
        let mut s = Secrets::default();
        s.add("hunter2");
        assert_eq!(s.scrub("auth hunter2 failed"), "auth *** failed");
        let s = Secrets::of_urls(["redis://u:p%40ss@h:1", "redis://h:2"]);
        assert_eq!(s.scrub("bad p@ss, bad p%40ss"), "bad ***, bad ***");
        let s = Secrets::of_urls(["redis://h:1/0?password=s%3Dcret"]);
        assert_eq!(s.scrub("bad s=cret"), "bad ***");
    }
}
