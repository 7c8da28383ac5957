//! The factory: `--cache SPEC` parsed once into a typed [`CacheSpec`], and the one `match` that
//! opens the backend it names ([`open_spec`]).
//!
//! Specs:
//! - `disk` or `disk:PATH` (default `$XDG_CACHE_HOME/ddcolor`, else `$HOME/.cache/ddcolor`)
//! - `redis://[user:pass@]host[:port][/db]`, `rediss://...` (TLS)
//! - `redis-cluster://[user:pass@]host:port,host:port,...`, `rediss-cluster://...` (TLS)
//! - `none`
//!
//! Ambiguous specs are refused with what to write instead (a bare path, several hosts in a
//! `redis://` URL); no message contains the spec's password.
use std::path::PathBuf;
use std::str::FromStr;

use super::backend::{Cache, CacheError, CacheErrorKind};
use super::disk::{self, DiskCache};
use super::none::NoCache;
use super::options::CacheOptions;
use super::redis::cluster::Cluster;
use super::redis::single::Single;
use super::redis::RedisCache;
use super::secret::{redact, Secrets};

/// What a `--cache` spec names. Its `Debug` hides passwords, as every message does.
#[derive(Clone, PartialEq, Eq)]
pub enum CacheSpec {
    /// A directory (`None`: the default one, [`disk::default_dir`]).
    Disk(Option<PathBuf>),
    /// One Redis server: `redis://` or `rediss://` URL, as given.
    Redis(String),
    /// A Redis Cluster: one `redis://` (or `rediss://`) URL per seed node, each carrying the
    /// spec's credentials.
    Cluster(Vec<String>),
    /// No cache: every lookup misses.
    None,
}

impl std::fmt::Debug for CacheSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Disk(p) => f.debug_tuple("Disk").field(p).finish(),
            Self::Redis(url) => f.debug_tuple("Redis").field(&redact(url)).finish(),
            Self::Cluster(urls) => f
                .debug_tuple("Cluster")
                .field(&urls.iter().map(|u| redact(u)).collect::<Vec<_>>())
                .finish(),
            Self::None => f.write_str("None"),
        }
    }
}

impl CacheSpec {
    /// Parse a `--cache` spec (see the module docs).
    pub fn parse(spec: &str) -> Result<Self, CacheError> {
        parse_spec(spec)
    }

    /// Whether the cache is on the network (Redis, Redis Cluster): it can be unreachable.
    pub fn is_remote(&self) -> bool {
        matches!(self, Self::Redis(_) | Self::Cluster(_))
    }

    /// A Redis spec over TLS (`rediss://`, `rediss-cluster://`).
    pub fn is_tls(&self) -> bool {
        let tls = |u: &String| u.to_ascii_lowercase().starts_with("rediss://");
        match self {
            Self::Redis(url) => tls(url),
            Self::Cluster(urls) => !urls.is_empty() && urls.iter().all(tls),
            _ => false,
        }
    }

    /// The spec to use for a run when this one cannot be opened: the default disk cache in
    /// place of an unreachable remote one, `none` for the rest (and for the disk fallback
    /// itself, so that `fallback()` twice always ends at [`NoCache`]).
    pub fn fallback(&self) -> Self {
        if self.is_remote() {
            Self::Disk(None)
        } else {
            Self::None
        }
    }

    /// Open the cache this spec names: [`open_spec`].
    pub fn open(&self, opts: &CacheOptions) -> Result<Box<dyn Cache>, CacheError> {
        open_spec(self, opts)
    }
}

/// `"redis://...".parse::<CacheSpec>()`, and clap's `value_parser!(CacheSpec)`.
impl FromStr for CacheSpec {
    type Err = CacheError;

    fn from_str(spec: &str) -> Result<Self, CacheError> {
        parse_spec(spec)
    }
}

fn spec_error(message: String) -> CacheError {
    CacheError {
        backend: "cache spec".to_owned(),
        kind: CacheErrorKind::Config,
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
    if spec == "disk" {
        return Ok(CacheSpec::Disk(None));
    }
    if spec == "disk:" {
        return Err(spec_error(
            "`disk:` names no folder: write `disk` for the default folder, or `disk:PATH`".into(),
        ));
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
    // the database number: digits only (redis-rs would take `-1` and let the server refuse it,
    // which looks like an unreachable cache rather than the typo it is)
    let rest = url.split_once("://").map_or("", |(_, r)| r);
    let path_start = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if let Some(db) = rest[path_start..].strip_prefix('/') {
        let db = db.split(['?', '#']).next().unwrap_or("");
        if !db.is_empty() && !db.bytes().all(|c| c.is_ascii_digit()) {
            return Err(spec_error(format!(
                "`{shown}`: the database number must be a whole number from 0, not `{db}`"
            )));
        }
    }
    let info = url.into_connection_info().map_err(|e| {
        let secrets = Secrets::of_urls([url]);
        spec_error(format!("`{shown}`: {}", secrets.scrub(&e.to_string())))
    })?;
    let port = match info.addr() {
        ::redis::ConnectionAddr::Tcp(_, port) => Some(*port),
        ::redis::ConnectionAddr::TcpTls { port, .. } => Some(*port),
        _ => None,
    };
    if port == Some(0) {
        return Err(spec_error(format!(
            "`{shown}`: port 0 is no server's port (Redis listens on 6379 unless told otherwise)"
        )));
    }
    Ok(())
}

fn expand_home(path: &str) -> PathBuf {
    if let Some(tail) = path.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            return PathBuf::from(home).join(tail);
        }
    }
    PathBuf::from(path)
}

/// Open the cache a spec names. A Redis spec connects (and PINGs) here, so an unreachable
/// server is an `Err` now: the caller decides whether to fall back ([`CacheSpec::fallback`]).
pub fn open_spec(spec: &CacheSpec, opts: &CacheOptions) -> Result<Box<dyn Cache>, CacheError> {
    Ok(match spec {
        CacheSpec::None => Box::new(NoCache),
        CacheSpec::Disk(path) => {
            let path = match path {
                Some(p) => p.clone(),
                None => disk::default_dir()?,
            };
            Box::new(DiskCache::open(path, opts)?)
        }
        CacheSpec::Redis(url) => Box::new(RedisCache::<Single>::open(url, opts)?),
        CacheSpec::Cluster(urls) => Box::new(RedisCache::<Cluster>::open(urls, opts)?),
    })
}

/// Parse `spec` and open it: [`parse_spec`], then [`open_spec`].
pub fn open(spec: &str, opts: &CacheOptions) -> Result<Box<dyn Cache>, CacheError> {
    open_spec(&parse_spec(spec)?, opts)
}
