//! `redis://[user:pass@]host:port[/db]` and `rediss://` (TLS, rustls): one Redis server.
//!
//! One connection behind a mutex; a call that fails with a connection error (I/O, timeout,
//! dropped) reconnects and retries once. Connect timeout 2 s, read/write timeouts 5 s, so a
//! dead server never hangs a run. The command bodies are shared with the cluster backend
//! ([`super::cluster`]) through `&mut dyn ConnectionLike`.
use std::sync::Mutex;
use std::time::Duration;

use ::redis::{cmd, Client, Connection, ConnectionLike, RedisError, RedisResult, Value};

use super::spec::{ensure_crypto_provider, password_of, redact, CacheOptions};
use super::util::{escape_glob, lock, new_token, percent_decode, ttl_ms, Secrets};
use super::{Cache, CacheError, CacheKey, CacheStats, Lease, LeaseOutcome, Lookup, Miss};

/// TCP (and TLS handshake) connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Read and write timeout of every command.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys per MGET.
pub const MGET_CHUNK: usize = 256;
/// SCAN page size hint.
const SCAN_COUNT: usize = 1000;

/// Compare-and-delete of a lease.
pub(crate) const RELEASE_SCRIPT: &str =
    "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end";

/// A single Redis server (see the module docs).
pub struct RedisCache {
    client: Client,
    conn: Mutex<Option<Connection>>,
    shown: String,
    secrets: Secrets,
    prefix: String,
}

/// Secrets of a URL: its password, raw and percent-decoded.
pub(crate) fn secrets_of(url: &str) -> Secrets {
    let mut s = Secrets::default();
    if let Some(p) = password_of(url) {
        s.add(&p);
        s.add(&percent_decode(&p));
    }
    s
}

/// Errors after which the connection's state is unknown: drop it, reconnect, retry once.
pub(crate) fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// Run `f` on the connection in `slot`, connecting first if needed. A connection error drops
/// the connection and retries once on a fresh one (`f`'s second argument says it is a retry);
/// a server that refuses or times out a fresh connection gets no second try: fail fast.
/// Shared by the single-node and the cluster backend.
pub(crate) fn with_retry<C, T>(
    slot: &std::sync::Mutex<Option<C>>,
    connect: impl Fn() -> RedisResult<C>,
    mut f: impl FnMut(&mut C, bool) -> RedisResult<T>,
    err: impl Fn(&RedisError) -> CacheError,
) -> Result<T, CacheError> {
    let mut guard = lock(slot);
    let mut attempt = 0;
    loop {
        let conn = match guard.as_mut() {
            Some(c) => c,
            None => match connect() {
                Ok(c) => guard.insert(c),
                Err(e) => return Err(err(&e)),
            },
        };
        match f(conn, attempt > 0) {
            Ok(v) => return Ok(v),
            Err(e) => {
                let conn_err = is_connection_error(&e);
                if conn_err {
                    *guard = None;
                }
                if !conn_err || attempt > 0 {
                    return Err(err(&e));
                }
                attempt += 1;
            }
        }
    }
}

// ---- command bodies shared with the cluster backend ----

pub(crate) fn cmd_put(
    conn: &mut dyn ConnectionLike,
    key: &CacheKey,
    value: &[u8],
    ttl: Option<Duration>,
) -> RedisResult<()> {
    let mut c = cmd("SET");
    c.arg(key.as_str()).arg(value);
    if let Some(ttl) = ttl {
        c.arg("PX").arg(ttl_ms(ttl));
    }
    c.query::<Value>(conn).map(|_| ())
}

/// `SET <key>:lease <token> NX PX <ms>`. On a retry (the first try may have landed before
/// its reply was lost) a lease holding our own token counts as acquired.
pub(crate) fn cmd_try_lease(
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

pub(crate) fn cmd_release(conn: &mut dyn ConnectionLike, lease: &Lease) -> RedisResult<()> {
    cmd("EVAL")
        .arg(RELEASE_SCRIPT)
        .arg(1)
        .arg(lease.key.lease_key())
        .arg(&lease.token)
        .query::<i64>(conn)
        .map(|_| ())
}

pub(crate) fn cmd_lease_alive(conn: &mut dyn ConnectionLike, key: &CacheKey) -> RedisResult<bool> {
    cmd("EXISTS")
        .arg(key.lease_key())
        .query::<i64>(conn)
        .map(|n| n > 0)
}

/// SET, GET back and DEL a probe key outside the value namespace (`<prefix>:probe:<token>`).
pub(crate) fn cmd_probe(conn: &mut dyn ConnectionLike, prefix: &str) -> RedisResult<bool> {
    let key = format!("{prefix}:probe:{}", new_token());
    let payload = b"ddcolor cache probe".to_vec();
    cmd("SET")
        .arg(&key)
        .arg(&payload)
        .arg("PX")
        .arg(60_000)
        .query::<Value>(conn)?;
    let back: Option<Vec<u8>> = cmd("GET").arg(&key).query(conn)?;
    let _ = cmd("DEL").arg(&key).query::<i64>(conn);
    Ok(back.as_deref() == Some(&payload[..]))
}

/// `SCAN MATCH` pattern of every value and lease under `prefix`.
pub(crate) fn scan_pattern(prefix: &str) -> String {
    format!("{}*", escape_glob(&CacheKey::scan_prefix(prefix)))
}

/// A value key (not a lease).
pub(crate) fn is_value_key(k: &str) -> bool {
    !k.ends_with(":lease")
}

/// One SCAN step on `conn` (or, in a cluster, on the node `route` picks).
pub(crate) fn scan_cmd(cursor: u64, pattern: &str) -> ::redis::Cmd {
    let mut c = cmd("SCAN");
    c.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(SCAN_COUNT);
    c
}

/// `CONFIG GET <name>`'s value, None if not allowed (ACL) or unknown.
pub(crate) fn parse_config_get(v: &Value) -> Option<String> {
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
pub(crate) fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|l| {
        l.strip_prefix(field)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    })
}

impl RedisCache {
    /// Connect and PING: an unreachable server, a wrong password or a bad URL is an `Err`
    /// here, with no password in the message.
    pub fn open(url: &str, opts: &CacheOptions) -> Result<Self, CacheError> {
        let shown = redact(url);
        let secrets = secrets_of(url);
        if url.to_ascii_lowercase().starts_with("rediss://") {
            ensure_crypto_provider();
        }
        let client = Client::open(url).map_err(|e| CacheError {
            backend: "redis".to_owned(),
            message: format!("{shown}: {}", secrets.scrub(&e.to_string())),
        })?;
        let cache = Self {
            client,
            conn: Mutex::new(None),
            shown,
            secrets,
            prefix: opts.prefix.clone(),
        };
        cache.with_conn("connect", |c, _| {
            cmd("PING").query::<Value>(c)?;
            Ok(())
        })?;
        Ok(cache)
    }

    fn connect(&self) -> RedisResult<Connection> {
        let c = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        c.set_read_timeout(Some(IO_TIMEOUT))?;
        c.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(c)
    }

    fn err(&self, what: &str, e: &RedisError) -> CacheError {
        CacheError {
            backend: "redis".to_owned(),
            message: format!(
                "{}: {what}: {}",
                self.shown,
                self.secrets.scrub(&e.to_string())
            ),
        }
    }

    /// Run `f` on the connection (connecting first if needed). A connection error drops the
    /// connection and retries once on a fresh one (`f`'s second argument says it is a retry).
    fn with_conn<T>(
        &self,
        what: &str,
        mut f: impl FnMut(&mut Connection, bool) -> RedisResult<T>,
    ) -> Result<T, CacheError> {
        with_retry(&self.conn, || self.connect(), &mut f, |e| self.err(what, e))
    }

    /// Walk every key under our prefix: `visit` gets each SCAN page's keys.
    fn scan_all(
        &self,
        what: &str,
        mut visit: impl FnMut(&mut Connection, &[String]) -> RedisResult<()>,
    ) -> Result<(), CacheError> {
        let pattern = scan_pattern(&self.prefix);
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) =
                self.with_conn(what, |c, _| scan_cmd(cursor, &pattern).query(c))?;
            if !keys.is_empty() {
                self.with_conn(what, |c, _| visit(c, &keys))?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

impl Cache for RedisCache {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    /// One round trip: one MGET per 256 keys, all in one pipeline.
    fn get_many(&self, keys: &[CacheKey]) -> Vec<Lookup> {
        if keys.is_empty() {
            return Vec::new();
        }
        let mut pipe = ::redis::pipe();
        for chunk in keys.chunks(MGET_CHUNK) {
            let c = pipe.cmd("MGET");
            for k in chunk {
                c.arg(k.as_str());
            }
        }
        let result = self.with_conn("MGET", |c, _| pipe.query::<Vec<Vec<Option<Vec<u8>>>>>(c));
        match result {
            Ok(chunks) => {
                let values: Vec<Option<Vec<u8>>> = chunks.into_iter().flatten().collect();
                if values.len() != keys.len() {
                    let msg = format!(
                        "{}: MGET returned {} values for {} keys",
                        self.shown,
                        values.len(),
                        keys.len()
                    );
                    return vec![Lookup::Miss(Miss::Error(msg)); keys.len()];
                }
                values
                    .into_iter()
                    .map(|v| match v {
                        Some(bytes) => Lookup::Hit(bytes),
                        None => Lookup::Miss(Miss::Absent),
                    })
                    .collect()
            }
            Err(e) => vec![Lookup::Miss(Miss::Error(e.to_string())); keys.len()],
        }
    }

    fn put(&self, key: &CacheKey, value: &[u8], ttl: Option<Duration>) -> Result<(), CacheError> {
        self.with_conn("SET", |c, _| cmd_put(c, key, value, ttl))
    }

    fn try_lease(&self, key: &CacheKey, ttl: Duration) -> Result<LeaseOutcome, CacheError> {
        let token = new_token();
        self.with_conn("lease", |c, retry| {
            cmd_try_lease(c, key, &token, ttl, retry)
        })
    }

    fn release(&self, lease: &Lease) -> Result<(), CacheError> {
        self.with_conn("release", |c, _| cmd_release(c, lease))
    }

    fn lease_alive(&self, key: &CacheKey) -> Result<bool, CacheError> {
        self.with_conn("EXISTS", |c, _| cmd_lease_alive(c, key))
    }

    fn stats(&self) -> Result<CacheStats, CacheError> {
        let mut entries = 0u64;
        let mut bytes = Some(0u64);
        self.scan_all("stats", |c, keys| {
            let values: Vec<&String> = keys.iter().filter(|k| is_value_key(k)).collect();
            entries += values.len() as u64;
            if bytes.is_some() && !values.is_empty() {
                let mut pipe = ::redis::pipe();
                for k in &values {
                    pipe.cmd("MEMORY").arg("USAGE").arg(k.as_str());
                }
                // MEMORY may be denied by ACLs: then bytes are unknown.
                match pipe.query::<Vec<Option<u64>>>(c) {
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
        let mut details = vec![("server".to_owned(), self.shown.clone())];
        // CONFIG may be denied to ACL users, INFO too: leave those lines out then.
        let policy = self
            .with_conn("CONFIG GET", |c, _| {
                cmd("CONFIG")
                    .arg("GET")
                    .arg("maxmemory-policy")
                    .query::<Value>(c)
            })
            .ok()
            .and_then(|v| parse_config_get(&v));
        if let Some(p) = policy {
            details.push(("maxmemory-policy".to_owned(), p));
        }
        if let Ok(info) =
            self.with_conn("INFO", |c, _| cmd("INFO").arg("memory").query::<String>(c))
        {
            for f in ["used_memory_human", "maxmemory_human"] {
                if let Some(v) = info_field(&info, f) {
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

    fn clear(&self) -> Result<u64, CacheError> {
        let mut removed = 0u64;
        self.scan_all("clear", |c, keys| {
            let mut u = cmd("UNLINK");
            for k in keys {
                u.arg(k.as_str());
            }
            removed += u.query::<u64>(c)?;
            Ok(())
        })?;
        Ok(removed)
    }

    fn check_writable(&self) -> Result<(), CacheError> {
        let ok = self.with_conn("probe", |c, _| cmd_probe(c, &self.prefix))?;
        if ok {
            Ok(())
        } else {
            Err(CacheError {
                backend: "redis".to_owned(),
                message: format!("{}: probe key read back different bytes", self.shown),
            })
        }
    }
}
