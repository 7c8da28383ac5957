//! `--cache SPEC` and `--cache-max-size SIZE`: parsing, secret redaction, and the factory that
//! opens a backend.
//!
//! Specs:
//! - `disk` or `disk:PATH` (default `$XDG_CACHE_HOME/ddcolor`, else `$HOME/.cache/ddcolor`)
//! - `redis://[user:pass@]host[:port][/db]`, `rediss://...` (TLS)
//! - `redis-cluster://[user:pass@]host:port,host:port,...`, `rediss-cluster://...` (TLS)
//! - `none`
use std::path::PathBuf;

use super::cluster::ClusterCache;
use super::disk::DiskCache;
use super::none::NoCache;
use super::redis::RedisCache;
use super::{key, Cache, CacheError};

/// What a `--cache` spec names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheSpec {
    /// A directory (`None`: the default one, see [`default_disk_dir`]).
    Disk(Option<PathBuf>),
    /// One Redis server: `redis://` or `rediss://` URL, as given.
    Redis(String),
    /// A Redis Cluster: one `redis://` (or `rediss://`) URL per seed node, each carrying the
    /// spec's credentials.
    Cluster(Vec<String>),
    /// No cache: every lookup misses.
    None,
}

/// Options every backend takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheOptions {
    /// Key prefix (`--cache-prefix`), [`key::DEFAULT_PREFIX`] by default.
    pub prefix: String,
    /// Bound in bytes (`--cache-max-size`); only the disk backend enforces it (Redis has its
    /// own `maxmemory` and eviction policy).
    pub max_size: Option<u64>,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            prefix: key::DEFAULT_PREFIX.to_owned(),
            max_size: None,
        }
    }
}

fn spec_error(message: String) -> CacheError {
    CacheError {
        backend: "cache spec".to_owned(),
        message,
    }
}

const EXPECTED: &str = "expected `disk`, `disk:PATH`, `redis://[user:pass@]host:port[/db]`, \
     `rediss://...`, `redis-cluster://host:port,host:port,...`, `rediss-cluster://...` or `none`";

/// Parse a `--cache` spec. Unknown schemes and ambiguous specs (a bare path, several hosts in a
/// `redis://` URL) are rejected with a message that says what to write instead; no message
/// contains the spec's password.
pub fn parse_spec(spec: &str) -> Result<CacheSpec, CacheError> {
    let spec = spec.trim();
    let shown = redact(spec);
    if spec.is_empty() {
        return Err(spec_error(format!("empty cache spec: {EXPECTED}")));
    }
    if spec.eq_ignore_ascii_case("none") {
        return Ok(CacheSpec::None);
    }
    if spec == "disk" || spec == "disk:" {
        return Ok(CacheSpec::Disk(None));
    }
    if let Some(path) = spec.strip_prefix("disk:") {
        if path.starts_with("//") {
            return Err(spec_error(format!(
                "`{shown}` is ambiguous: write `disk:/absolute/path` or `disk:relative/path`"
            )));
        }
        return Ok(CacheSpec::Disk(Some(expand_home(path))));
    }
    let Some((scheme, rest)) = spec.split_once("://") else {
        if spec.starts_with('/') || spec.starts_with('.') || spec.starts_with('~') {
            return Err(spec_error(format!(
                "`{shown}` looks like a path: write `disk:{shown}` to cache in that directory"
            )));
        }
        return Err(spec_error(format!(
            "unknown cache spec `{shown}`: {EXPECTED}"
        )));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "redis" | "rediss" => {
            let authority = authority_of(rest);
            if authority.contains(',') {
                return Err(spec_error(format!(
                    "`{shown}` names several hosts: for a Redis Cluster write \
                     `{scheme}-cluster://host:port,host:port`"
                )));
            }
            if authority.is_empty() {
                return Err(spec_error(format!("`{shown}`: missing host")));
            }
            validate_redis_url(spec, &shown)?;
            Ok(CacheSpec::Redis(spec.to_owned()))
        }
        "redis-cluster" | "rediss-cluster" => {
            let node_scheme = if scheme.eq_ignore_ascii_case("rediss-cluster") {
                "rediss"
            } else {
                "redis"
            };
            // Credentials: `user:pass@` before the first host applies to every node; a node
            // may also carry its own.
            let (userinfo, hosts) = match rest.rfind('@') {
                Some(at) if !rest[..at].contains(',') => (Some(&rest[..at]), &rest[at + 1..]),
                _ => (None, rest),
            };
            let hosts = hosts.trim_end_matches('/');
            let mut urls = Vec::new();
            for node in hosts.split(',').map(str::trim) {
                if node.is_empty() {
                    return Err(spec_error(format!(
                        "`{shown}`: empty host in the node list"
                    )));
                }
                if node.contains('/') || node.contains('?') || node.contains('#') {
                    return Err(spec_error(format!(
                        "`{shown}`: a cluster node is `host:port` (a cluster has no database \
                         number or options)"
                    )));
                }
                let url = match (node.contains('@'), userinfo) {
                    (false, Some(ui)) => format!("{node_scheme}://{ui}@{node}"),
                    _ => format!("{node_scheme}://{node}"),
                };
                validate_redis_url(&url, &shown)?;
                urls.push(url);
            }
            Ok(CacheSpec::Cluster(urls))
        }
        "disk" | "file" => Err(spec_error(format!(
            "`{shown}`: write `disk:/path/to/dir` for a directory cache"
        ))),
        other => Err(spec_error(format!(
            "unknown cache scheme `{other}` in `{shown}`: {EXPECTED}"
        ))),
    }
}

/// `host:port` part of what follows `scheme://` (without userinfo, path, query or fragment).
fn authority_of(rest: &str) -> &str {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    match authority.rfind('@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    }
}

fn validate_redis_url(url: &str, shown: &str) -> Result<(), CacheError> {
    use ::redis::IntoConnectionInfo;
    if ::redis::parse_redis_url(url).is_none() {
        return Err(spec_error(format!("`{shown}` is not a valid Redis URL")));
    }
    url.into_connection_info().map(|_| ()).map_err(|e| {
        let mut secrets = super::util::Secrets::default();
        if let Some(p) = password_of(url) {
            secrets.add(&super::util::percent_decode(&p));
            secrets.add(&p);
        }
        spec_error(format!("`{shown}`: {}", secrets.scrub(&e.to_string())))
    })
}

/// The raw (still percent-encoded) password in a URL's userinfo, if any.
pub(crate) fn password_of(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let at = rest.rfind('@')?;
    let (_, pass) = rest[..at].split_once(':')?;
    Some(pass.to_owned())
}

fn expand_home(path: &str) -> PathBuf {
    if let Some(tail) = path.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            return PathBuf::from(home).join(tail);
        }
    }
    PathBuf::from(path)
}

/// `$XDG_CACHE_HOME/ddcolor` (when set and absolute), else `$HOME/.cache/ddcolor`.
pub fn default_disk_dir() -> Result<PathBuf, CacheError> {
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME") {
        let xdg = PathBuf::from(xdg);
        if xdg.is_absolute() {
            return Ok(xdg.join("ddcolor"));
        }
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".cache").join("ddcolor")),
        None => Err(CacheError {
            backend: "disk".to_owned(),
            message: "neither XDG_CACHE_HOME nor HOME is set: give a directory with \
                      `--cache disk:PATH`"
                .to_owned(),
        }),
    }
}

/// Open the cache a spec names. A Redis spec connects (and PINGs) here, so an unreachable
/// server is an `Err` now: the caller decides whether to fall back.
pub fn open(spec: &str, opts: &CacheOptions) -> Result<Box<dyn Cache>, CacheError> {
    Ok(match parse_spec(spec)? {
        CacheSpec::None => Box::new(NoCache),
        CacheSpec::Disk(path) => {
            let path = match path {
                Some(p) => p,
                None => default_disk_dir()?,
            };
            Box::new(DiskCache::open(path, opts)?)
        }
        CacheSpec::Redis(url) => Box::new(RedisCache::open(&url, opts)?),
        CacheSpec::Cluster(urls) => Box::new(ClusterCache::open(&urls, opts)?),
    })
}

/// Install rustls' ring crypto provider as the process default (once; a provider installed
/// by someone else is kept). `rediss://` needs one.
pub(crate) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Parse `--cache-max-size`: plain bytes (`1048576`), or a number with a unit. `K`, `M`, `G`,
/// `T` and `KiB`, `MiB`, `GiB`, `TiB` are powers of 1024; `kB`, `MB`, `GB`, `TB` powers of
/// 1000; `B` is bytes. Case-insensitive; fractions allowed (`1.5GiB`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "invalid size `{s}`: expected a number of bytes, optionally with a unit (500M, 2G, 1.5GiB)"
        ));
    }
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid size `{s}`: `{num}` is not a number"))?;
    const KI: f64 = 1024.0;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => KI,
        "m" | "mib" => KI * KI,
        "g" | "gib" => KI * KI * KI,
        "t" | "tib" => KI * KI * KI * KI,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        other => {
            return Err(format!(
                "invalid size `{s}`: unknown unit `{other}` (use B, K, M, G, T, KiB..TiB or kB..TB)"
            ))
        }
    };
    let bytes = (value * mult).round();
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(format!("invalid size `{s}`: out of range"));
    }
    Ok(bytes as u64)
}

/// A URL with its password replaced by `***` (`redis://user:***@host:6379/0`); text that is no
/// URL, or has no password, comes back unchanged. Everything up to the last `@` counts as
/// userinfo, so a password with an unescaped `@` or `,` is still hidden.
pub fn redact(url: &str) -> String {
    let Some(i) = url.find("://") else {
        return url.to_owned();
    };
    let (head, rest) = url.split_at(i + 3);
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{head}{user}:***{}", &rest[at..]),
        None => url.to_owned(),
    }
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
            redact_urls_in("failed (redis://a:b@h:1): x, rediss://c:d@e"),
            "failed (redis://a:***@h:1): x, rediss://c:***@e"
        );
    }
}
