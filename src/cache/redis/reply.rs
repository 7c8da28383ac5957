//! Commands built for many keys, and the server's replies read: pipelines of one command per
//! key, SCAN patterns, `CONFIG GET` and `INFO` fields.
use ::redis::{Cmd, Value};

/// `<words> <key>` for each key (`GET k`, `UNLINK k`, `MEMORY USAGE k`), for
/// [`Topology::pipeline`].
pub(super) fn each_key<'a>(
    words: &'a [&'a str],
    keys: impl IntoIterator<Item = &'a str> + 'a,
) -> impl Iterator<Item = Cmd> + 'a {
    keys.into_iter().map(move |k| {
        let mut c = Cmd::new();
        c.arg(words).arg(k);
        c
    })
}

/// A value key (not a lease).
pub(super) fn is_value_key(k: &str) -> bool {
    !k.ends_with(":lease")
}

/// Escape Redis glob metacharacters so that `s` matches literally in `SCAN MATCH`.
pub(super) fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `CONFIG GET <name>`'s value, None if not allowed (ACL) or unknown.
pub(super) fn parse_config_get(v: &Value) -> Option<String> {
    let items: Vec<String> = match v {
        Value::Array(a) => a
            .iter()
            .filter_map(|x| ::redis::from_redis_value_ref::<String>(x).ok())
            .collect(),
        Value::Map(m) => m
            .iter()
            .flat_map(|(k, v)| [k, v])
            .filter_map(|x| ::redis::from_redis_value_ref::<String>(x).ok())
            .collect(),
        _ => return None,
    };
    items.get(1).cloned()
}

/// A field of `INFO` output.
pub(super) fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|l| {
        l.strip_prefix(field)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    })
}
