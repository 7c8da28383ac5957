//! Redis, on one server or a cluster: one [`Cache`] implementation, [`RedisCache`], over a
//! [`Topology`] that says how a command reaches the keys: [`single`] (`redis://`, `rediss://`)
//! or [`cluster`] (`redis-cluster://`, `rediss-cluster://`). TLS is rustls.
//!
//! Keys: a value is `SET <key> <bytes> [PX <ms>]`; its lease is `SET <key>:lease <token> NX PX
//! <ms>`, released by a script that deletes it only while it still holds our token. A value and
//! its lease share a hash tag ([`CacheKey`]), so in a cluster too every single-key command goes
//! to the one node that owns the key. `stats` and `clear` SCAN every master.
//!
//! One connection behind a mutex; a call that fails with a connection error (I/O, dropped)
//! reconnects and retries once (a timeout is not retried: the server is slow or frozen, and a
//! retry would only wait again). Connect timeout 2 s, read/write timeouts 5 s, so a dead server
//! never hangs a call; and a circuit breaker: after [`BREAKER_STRIKES`] calls in a row fail
//! that way, the server is treated as down for the rest of the process ([`Cache::down`]) and
//! every call fails at once, so a frozen server (SIGSTOP, a stuck failover) costs a run
//! seconds, not a timeout per image. No message carries a password.
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use ::redis::{cmd, from_redis_value, Cmd, ConnectionLike, FromRedisValue, RedisError};
use ::redis::{RedisResult, Value};

use super::backend::{
    Cache, CacheError, CacheErrorKind, CacheStats, Lease, LeaseOutcome, Lookup, Miss,
};
use super::key::CacheKey;
use super::options::CacheOptions;
use super::secret::Secrets;
use super::util::{lock, new_token, ttl_ms};

pub mod cluster;
mod probe;
mod reply;
pub mod single;
mod tls;

use probe::{prefixes_from_getuser, probe, Probed};
use reply::{each_key, escape_glob, info_field, is_value_key, parse_config_get};
use tls::{certificates, ensure_crypto_provider};

/// TCP (and TLS handshake) connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Read and write timeout of every command.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Calls in a row that time out or lose the connection before the server is treated as down.
pub const BREAKER_STRIKES: u32 = 3;
/// SCAN page size hint.
const SCAN_COUNT: usize = 1000;

/// Compare-and-delete of a lease.
const RELEASE_SCRIPT: &str =
    "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end";

/// Compare-and-extend: a lease is renewed only by the holder of its token.
const RENEW_SCRIPT: &str = "if redis.call('get',KEYS[1])==ARGV[1] then \
     return redis.call('pexpire',KEYS[1],ARGV[2]) else return 0 end";

/// What differs between one server and a cluster: how to connect, how a command or a
/// pipeline reaches the node(s) it is for, and which nodes hold the keyspace. Single-key
/// commands need nothing here: both connections route them by key.
pub trait Topology: Send + Sync + Sized + 'static {
    /// The backend's name in errors: `redis`, `redis-cluster`.
    const BACKEND: &'static str;
    /// The lookup command, as errors name it.
    const LOOKUP: &'static str;
    /// Whether `stats` shows the server's `INFO memory` figures (a cluster's are per node).
    const MEMORY_INFO: bool;

    type Conn: ConnectionLike + Send;
    /// A node that holds a share of the keys: `()` for one server, a master's address in a
    /// cluster.
    type Node;

    /// A fresh connection, with [`IO_TIMEOUT`] set.
    fn connect(&self) -> RedisResult<Self::Conn>;

    /// Run a command that is for no key in particular (PING) on any node.
    fn on_any(conn: &mut Self::Conn, cmd: &Cmd) -> RedisResult<Value>;

    /// Run a command on one node (SCAN, CONFIG GET).
    fn on_node(conn: &mut Self::Conn, node: &Self::Node, cmd: &Cmd) -> RedisResult<Value>;

    /// The nodes that hold the keyspace: every master.
    fn masters(conn: &mut Self::Conn) -> RedisResult<Vec<Self::Node>>;

    /// Send single-key commands in one pipeline (one round trip per node); one reply each.
    fn pipeline<R: FromRedisValue>(
        conn: &mut Self::Conn,
        cmds: impl IntoIterator<Item = Cmd>,
    ) -> RedisResult<R>;

    /// The stored bytes of each key, in order, in as few round trips as the topology allows.
    fn get_values(conn: &mut Self::Conn, keys: &[CacheKey]) -> RedisResult<Vec<Option<Vec<u8>>>>;

    /// The first `stats` lines: where the keys live.
    fn stats_head(shown: &str, masters: &[Self::Node]) -> Vec<(String, String)>;
}

/// A Redis server or cluster (see the module docs).
pub struct RedisCache<T: Topology> {
    topology: T,
    conn: Mutex<Option<T::Conn>>,
    shown: String,
    secrets: Secrets,
    prefix: String,
    /// Calls in a row that failed with a connection error (reset by any answer).
    strikes: AtomicU32,
    /// The breaker tripped: no call reaches the server again.
    down: AtomicBool,
}

/// Errors after which the connection's state is unknown: drop it, reconnect, retry once.
fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// The server's ACL refused the command (the user may not touch those keys or commands).
fn is_noperm(e: &RedisError) -> bool {
    e.code() == Some("NOPERM")
}

/// `SET <key>:lease <token> NX PX <ms>`. On a retry (the first try may have landed before its
/// reply was lost) a lease holding our own token counts as acquired.
fn set_lease(
    conn: &mut dyn ConnectionLike,
    key: &CacheKey,
    token: &str,
    ttl: Duration,
    retry: bool,
) -> RedisResult<LeaseOutcome> {
    let lease_key = key.lease_key();
    let v: Value = cmd("SET")
        .arg(&lease_key)
        .arg(token)
        .arg("NX")
        .arg("PX")
        .arg(ttl_ms(ttl))
        .query(conn)?;
    let acquired = || {
        LeaseOutcome::Acquired(Lease {
            key: key.clone(),
            token: token.to_owned(),
        })
    };
    if !matches!(v, Value::Nil) {
        return Ok(acquired());
    }
    if retry {
        let holder: Option<String> = cmd("GET").arg(&lease_key).query(conn)?;
        if holder.as_deref() == Some(token) {
            return Ok(acquired());
        }
    }
    Ok(LeaseOutcome::HeldElsewhere)
}

impl<T: Topology> RedisCache<T> {
    /// Build the client, connect and PING: an unreachable server, a wrong password or a bad
    /// URL is an `Err` here, with no password in the message. `urls` are the node URLs (their
    /// passwords are the secrets, a `rediss://` one needs TLS), `shown` the redacted spec.
    fn start(
        urls: &[&str],
        shown: String,
        opts: &CacheOptions,
        client: impl FnOnce(Option<::redis::TlsCertificates>) -> RedisResult<T>,
    ) -> Result<Self, CacheError> {
        let secrets = Secrets::of_urls(urls.iter().copied());
        if urls
            .iter()
            .any(|u| u.to_ascii_lowercase().starts_with("rediss://"))
        {
            ensure_crypto_provider();
        }
        let certs = certificates(T::BACKEND, urls, opts)?;
        let topology = client(certs).map_err(|e| CacheError {
            backend: T::BACKEND.to_owned(),
            kind: CacheErrorKind::Config,
            message: format!("{shown}: {}", secrets.scrub(&e.to_string())),
        })?;
        let cache = Self {
            topology,
            conn: Mutex::new(None),
            shown,
            secrets,
            prefix: opts.prefix.clone(),
            strikes: AtomicU32::new(0),
            down: AtomicBool::new(false),
        };
        cache.with_conn("connect", |c, _| T::on_any(c, &cmd("PING")).map(drop))?;
        Ok(cache)
    }

    fn err(&self, what: &str, e: &RedisError) -> CacheError {
        if is_noperm(e) {
            return CacheError {
                backend: T::BACKEND.to_owned(),
                kind: CacheErrorKind::Refused,
                message: format!(
                    "{}: {what}: refused by the server's ACL: this user may not use the keys \
                     under `{}:` (--cache-prefix) or the command ({})",
                    self.shown,
                    self.prefix,
                    self.secrets.scrub(&e.to_string())
                ),
            };
        }
        if e.is_timeout() {
            return CacheError {
                backend: T::BACKEND.to_owned(),
                kind: CacheErrorKind::Unreachable,
                message: format!(
                    "{}: {what}: no answer within {} s",
                    self.shown,
                    IO_TIMEOUT.as_secs()
                ),
            };
        }
        CacheError {
            backend: T::BACKEND.to_owned(),
            kind: if is_connection_error(e) {
                CacheErrorKind::Unreachable
            } else {
                CacheErrorKind::Server
            },
            message: format!(
                "{}: {what}: {}",
                self.shown,
                self.secrets.scrub(&e.to_string())
            ),
        }
    }

    /// Run `f` on the connection, connecting first if needed. A connection error drops the
    /// connection and retries once on a fresh one (`f`'s second argument says it is a retry);
    /// a timeout, or a server that refuses or times out a fresh connection, gets no second
    /// try: fail fast. Each call that fails so is a strike for the breaker; once it trips,
    /// calls fail here without touching the network (also those that were waiting for the
    /// connection while the strikes were struck).
    fn with_conn<R>(
        &self,
        what: &str,
        f: impl FnMut(&mut T::Conn, bool) -> RedisResult<R>,
    ) -> Result<R, CacheError> {
        self.call(what, false, f)
    }

    /// [`Self::with_conn`], or with `past_breaker` a call that reaches the server even after
    /// the breaker tripped (and strikes nothing): [`Cache::release_retry`].
    fn call<R>(
        &self,
        what: &str,
        past_breaker: bool,
        mut f: impl FnMut(&mut T::Conn, bool) -> RedisResult<R>,
    ) -> Result<R, CacheError> {
        let mut guard = lock(&self.conn);
        let mut retry = false;
        loop {
            if !past_breaker && self.down.load(Ordering::SeqCst) {
                *guard = None;
                return Err(CacheError {
                    backend: T::BACKEND.to_owned(),
                    kind: CacheErrorKind::Unreachable,
                    message: format!("{}: {what}: {}", self.shown, self.down_reason()),
                });
            }
            let conn = match guard.as_mut() {
                Some(c) => c,
                None => match self.topology.connect() {
                    Ok(c) => guard.insert(c),
                    Err(e) => {
                        self.strike(&e);
                        return Err(self.err(what, &e));
                    }
                },
            };
            match f(conn, retry) {
                Ok(v) => {
                    self.strikes.store(0, Ordering::SeqCst);
                    return Ok(v);
                }
                Err(e) => {
                    let conn_err = is_connection_error(&e);
                    if conn_err {
                        *guard = None;
                    }
                    if !conn_err || retry || e.is_timeout() {
                        if conn_err {
                            self.strike(&e);
                        } else {
                            // the server answered (with an error): it is alive
                            self.strikes.store(0, Ordering::SeqCst);
                        }
                        return Err(self.err(what, &e));
                    }
                    retry = true;
                }
            }
        }
    }

    /// Compare-and-delete `lease` ([`RELEASE_SCRIPT`]).
    fn release_lease(&self, lease: &Lease, past_breaker: bool) -> Result<(), CacheError> {
        let mut eval = cmd("EVAL");
        eval.arg(RELEASE_SCRIPT)
            .arg(1)
            .arg(lease.key.lease_key())
            .arg(&lease.token);
        self.call("release", past_breaker, |c, _| {
            eval.query::<i64>(c).map(drop)
        })
    }

    /// One more call in a row failed with a connection error `e`.
    fn strike(&self, e: &RedisError) {
        if is_connection_error(e)
            && self.strikes.fetch_add(1, Ordering::SeqCst) + 1 >= BREAKER_STRIKES
        {
            self.down.store(true, Ordering::SeqCst);
        }
    }

    /// What the ACL user's key patterns allow, to say which `--cache-prefix` fits; or how
    /// to find out, when the user may not read its own ACL.
    fn acl_hint(&self) -> String {
        let who = self.with_conn("ACL WHOAMI", |c, _| {
            let v = T::on_any(c, cmd("ACL").arg("WHOAMI"))?;
            Ok(from_redis_value::<String>(v)?)
        });
        let Ok(user) = who else {
            return String::new();
        };
        let got = self.with_conn("ACL GETUSER", |c, _| {
            T::on_any(c, cmd("ACL").arg("GETUSER").arg(&user))
        });
        match got.map(|v| prefixes_from_getuser(&v)) {
            Ok(p) if p.iter().any(|p| p == "*") => String::new(),
            Ok(p) if !p.is_empty() => format!(
                "; user `{user}` may use keys under {}: --cache-prefix {} would fit",
                p.iter()
                    .map(|p| format!("`{p}:`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                p[0]
            ),
            _ => {
                format!("; `ACL GETUSER {user}` (as an admin) shows which key patterns it may use")
            }
        }
    }

    fn down_reason(&self) -> String {
        format!(
            "not answering ({BREAKER_STRIKES} calls in a row timed out or lost the connection); \
             not asked again by this process"
        )
    }

    /// Walk every key under our prefix on every master: `visit` gets each SCAN page's keys.
    /// Returns the masters.
    fn scan_all(
        &self,
        what: &str,
        mut visit: impl FnMut(&mut T::Conn, &[String]) -> RedisResult<()>,
    ) -> Result<Vec<T::Node>, CacheError> {
        let masters = self.with_conn(what, |c, _| T::masters(c))?;
        let pattern = format!("{}*", escape_glob(&CacheKey::scan_prefix(&self.prefix)));
        for node in &masters {
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = self.with_conn(what, |c, _| {
                    let mut scan = cmd("SCAN");
                    scan.arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(SCAN_COUNT);
                    Ok(from_redis_value(T::on_node(c, node, &scan)?)?)
                })?;
                if !keys.is_empty() {
                    self.with_conn(what, |c, _| visit(c, &keys))?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(masters)
    }
}

impl<T: Topology> Cache for RedisCache<T> {
    fn down(&self) -> Option<String> {
        self.down
            .load(Ordering::SeqCst)
            .then(|| format!("{}: {}", self.shown, self.down_reason()))
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }

    /// One call, one round trip per node: a pipeline of MGETs on one server, of GETs in a
    /// cluster (see [`Topology::get_values`]).
    fn get_many(&self, keys: &[CacheKey]) -> Vec<Lookup> {
        if keys.is_empty() {
            return Vec::new();
        }
        match self.with_conn(T::LOOKUP, |c, _| T::get_values(c, keys)) {
            Ok(values) if values.len() == keys.len() => values
                .into_iter()
                .map(|v| match v {
                    Some(bytes) => Lookup::Hit(bytes),
                    None => Lookup::Miss(Miss::Absent),
                })
                .collect(),
            Ok(values) => {
                let msg = format!(
                    "{}: {} returned {} values for {} keys",
                    self.shown,
                    T::LOOKUP,
                    values.len(),
                    keys.len()
                );
                vec![Lookup::Miss(Miss::Error(msg)); keys.len()]
            }
            Err(e) => vec![Lookup::Miss(Miss::Error(e.to_string())); keys.len()],
        }
    }

    fn put(&self, key: &CacheKey, value: &[u8], ttl: Option<Duration>) -> Result<(), CacheError> {
        let mut set = cmd("SET");
        set.arg(key.as_str()).arg(value);
        if let Some(ttl) = ttl {
            set.arg("PX").arg(ttl_ms(ttl));
        }
        self.with_conn("SET", |c, _| set.query::<Value>(c).map(drop))
    }

    fn try_lease(&self, key: &CacheKey, ttl: Duration) -> Result<LeaseOutcome, CacheError> {
        let token = new_token();
        self.with_conn("lease", |c, retry| set_lease(c, key, &token, ttl, retry))
    }

    fn release(&self, lease: &Lease) -> Result<(), CacheError> {
        self.release_lease(lease, false)
    }

    fn release_retry(&self, lease: &Lease) -> Result<(), CacheError> {
        self.release_lease(lease, true)
    }

    fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, CacheError> {
        let mut eval = cmd("EVAL");
        eval.arg(RENEW_SCRIPT)
            .arg(1)
            .arg(lease.key.lease_key())
            .arg(&lease.token)
            .arg(ttl_ms(ttl));
        self.with_conn("renew", |c, _| eval.query::<i64>(c).map(|n| n == 1))
    }

    fn lease_left(&self, key: &CacheKey) -> Result<Option<Duration>, CacheError> {
        let mut pttl = cmd("PTTL");
        pttl.arg(key.lease_key());
        // -2: no such key; -1: no expiry (never set so by ddcolor: treat as a full TTL unknown)
        self.with_conn("PTTL", |c, _| {
            pttl.query::<i64>(c).map(|ms| match ms {
                -2 => None,
                ms => Some(Duration::from_millis(ms.max(0) as u64)),
            })
        })
    }

    fn stats(&self) -> Result<CacheStats, CacheError> {
        let mut entries = 0u64;
        let mut bytes = Some(0u64);
        let masters = self.scan_all("stats", |c, keys| {
            let values: Vec<&String> = keys.iter().filter(|k| is_value_key(k)).collect();
            entries += values.len() as u64;
            if bytes.is_some() && !values.is_empty() {
                // MEMORY may be denied by ACLs: then bytes are unknown.
                let usage = each_key(&["MEMORY", "USAGE"], values.iter().map(|k| k.as_str()));
                match T::pipeline::<Vec<Option<u64>>>(c, usage) {
                    Ok(sizes) => {
                        let sum: u64 = sizes.into_iter().flatten().sum();
                        bytes = bytes.map(|b| b + sum);
                    }
                    Err(e) if is_connection_error(&e) => return Err(e),
                    Err(_) => bytes = None,
                }
            }
            Ok(())
        })?;
        let mut details = T::stats_head(&self.shown, &masters);
        // CONFIG may be denied to ACL users, INFO too: leave those lines out then.
        let mut policies = BTreeSet::new();
        for node in &masters {
            let v = self.with_conn("CONFIG GET", |c, _| {
                T::on_node(c, node, cmd("CONFIG").arg("GET").arg("maxmemory-policy"))
            });
            if let Some(p) = v.ok().and_then(|v| parse_config_get(&v)) {
                policies.insert(p);
            }
        }
        details.push((
            "maxmemory-policy".to_owned(),
            if policies.is_empty() {
                "could not be read (CONFIG GET is not allowed for this user, or failed)".to_owned()
            } else {
                policies.into_iter().collect::<Vec<_>>().join(",")
            },
        ));
        if T::MEMORY_INFO {
            let info = self.with_conn("INFO", |c, _| {
                let v = T::on_any(c, cmd("INFO").arg("memory"))?;
                Ok(from_redis_value::<String>(v)?)
            });
            for f in ["used_memory_human", "maxmemory_human"] {
                if let Some(v) = info.as_deref().ok().and_then(|i| info_field(i, f)) {
                    details.push((f.to_owned(), v));
                }
            }
        }
        Ok(CacheStats {
            entries,
            bytes,
            details,
        })
    }

    /// One UNLINK per key, pipelined: keys of different images are in different slots.
    fn clear(&self) -> Result<u64, CacheError> {
        let mut removed = 0u64;
        self.scan_all("clear", |c, keys| {
            let counts: Vec<u64> =
                T::pipeline(c, each_key(&["UNLINK"], keys.iter().map(String::as_str)))?;
            removed += counts.iter().sum::<u64>();
            Ok(())
        })?;
        Ok(removed)
    }

    fn check_writable(&self) -> Result<(), CacheError> {
        let probed = self.with_conn("probe", |c, _| probe(c, &self.prefix));
        if let Err(e) = &probed {
            if e.kind == CacheErrorKind::Refused {
                return Err(CacheError {
                    backend: e.backend.clone(),
                    kind: e.kind,
                    message: format!("{}{}", e.message, self.acl_hint()),
                });
            }
        }
        match probed? {
            Probed::Ok => Ok(()),
            Probed::Mismatch => Err(CacheError {
                backend: T::BACKEND.to_owned(),
                kind: CacheErrorKind::Server,
                message: format!("{}: probe key read back different bytes", self.shown),
            }),
            // keys outside the user's patterns: which prefix would fit
            Probed::Refused { detail, .. } if detail.contains("keys") => Err(CacheError {
                backend: T::BACKEND.to_owned(),
                kind: CacheErrorKind::Refused,
                message: format!(
                    "{}: probe: refused by the server's ACL: this user may not use the keys \
                     under `{}:` (--cache-prefix) ({}){}",
                    self.shown,
                    self.prefix,
                    self.secrets.scrub(&detail),
                    self.acl_hint()
                ),
            }),
            Probed::Refused { step, detail } => {
                let user = self
                    .with_conn("ACL WHOAMI", |c, _| {
                        let v = T::on_any(c, cmd("ACL").arg("WHOAMI"))?;
                        Ok(from_redis_value::<String>(v)?)
                    })
                    .unwrap_or_else(|_| "USER".into());
                Err(CacheError {
                    backend: T::BACKEND.to_owned(),
                    kind: CacheErrorKind::Refused,
                    message: format!(
                        "{}: the server's ACL refused {} for user `{user}` ({}), which every \
                         run needs for {}: `ACL SETUSER {user} {}` would allow it",
                        self.shown,
                        step.command,
                        self.secrets.scrub(&detail),
                        step.why,
                        step.rule
                    ),
                })
            }
        }
    }
}
