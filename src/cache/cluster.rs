//! `redis-cluster://[user:pass@]host:port,host:port,...` and `rediss-cluster://` (TLS): a Redis
//! Cluster, through `redis::cluster::ClusterClient` (sync).
//!
//! Keys of one image share a hash tag (`{sha256}`), so a value and its lease are in one slot
//! and every single-key command routes by key. Keys of different images are almost always in
//! different slots, so one MGET per slot would be one round trip per key; instead `get_many`
//! sends one cluster pipeline of GETs (the cluster pipeline refuses MGET), which groups the
//! GETs by node, writes each node all of its GETs at once and then reads the replies: one
//! round trip per node per call. `stats` and `clear` SCAN every master (from `CLUSTER SLOTS`).
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use ::redis::cluster::{cluster_pipe, ClusterClient, ClusterConnection};
use ::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use ::redis::{cmd, from_redis_value, RedisError, RedisResult, Value};

use super::redis::{
    cmd_lease_alive, cmd_probe, cmd_put, cmd_release, cmd_try_lease, is_connection_error,
    is_value_key, parse_config_get, scan_cmd, scan_pattern, secrets_of, CONNECT_TIMEOUT,
    IO_TIMEOUT,
};
use super::spec::{ensure_crypto_provider, redact, CacheOptions};
use super::util::{new_token, Secrets};
use super::{Cache, CacheError, CacheKey, CacheStats, Lease, LeaseOutcome, Lookup, Miss};

/// A Redis Cluster (see the module docs).
pub struct ClusterCache {
    client: ClusterClient,
    conn: Mutex<Option<ClusterConnection>>,
    shown: String,
    secrets: Secrets,
    prefix: String,
}

/// `redis-cluster://user:***@h1:p1,h2:p2` for a list of node URLs.
fn describe_nodes(urls: &[String]) -> String {
    let mut scheme = "redis";
    let mut userinfo = None;
    let mut hosts = Vec::new();
    for u in urls {
        let r = redact(u);
        let (s, rest) = r.split_once("://").unwrap_or(("redis", r.as_str()));
        if s.eq_ignore_ascii_case("rediss") {
            scheme = "rediss";
        }
        let (ui, host) = match rest.rfind('@') {
            Some(at) => (Some(rest[..at].to_owned()), &rest[at + 1..]),
            None => (None, rest),
        };
        if userinfo.is_none() {
            userinfo = ui;
        }
        hosts.push(host.trim_end_matches('/').to_owned());
    }
    match userinfo {
        Some(ui) => format!("{scheme}-cluster://{ui}@{}", hosts.join(",")),
        None => format!("{scheme}-cluster://{}", hosts.join(",")),
    }
}

fn by_address(host: &str, port: u16) -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
        host: host.to_owned(),
        port,
    })
}

/// Master addresses from a `CLUSTER SLOTS` reply.
fn parse_masters(v: Value) -> RedisResult<Vec<(String, u16)>> {
    let ranges: Vec<Value> = from_redis_value(v)?;
    let mut masters = BTreeSet::new();
    for r in ranges {
        let items: Vec<Value> = from_redis_value(r)?;
        if let Some(master) = items.into_iter().nth(2) {
            let node: Vec<Value> = from_redis_value(master)?;
            let mut it = node.into_iter();
            if let (Some(h), Some(p)) = (it.next(), it.next()) {
                let host: String = from_redis_value(h)?;
                let port: u16 = from_redis_value(p)?;
                masters.insert((host, port));
            }
        }
    }
    Ok(masters.into_iter().collect())
}

impl ClusterCache {
    /// Connect to the seed nodes, load the slot map and PING: an unreachable cluster is an
    /// `Err` here. `urls` are `redis://` (or `rediss://`) URLs of seed nodes, as
    /// [`super::parse_spec`] makes them.
    pub fn open(urls: &[String], opts: &CacheOptions) -> Result<Self, CacheError> {
        let shown = describe_nodes(urls);
        let mut secrets = Secrets::default();
        for u in urls {
            for s in secrets_of(u).words() {
                secrets.add(s);
            }
        }
        if urls
            .iter()
            .any(|u| u.to_ascii_lowercase().starts_with("rediss://"))
        {
            ensure_crypto_provider();
        }
        let client = ClusterClient::builder(urls.iter().map(String::as_str))
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(IO_TIMEOUT)
            .retries(1)
            .min_retry_wait(10)
            .max_retry_wait(200)
            .build()
            .map_err(|e| CacheError {
                backend: "redis-cluster".to_owned(),
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
            c.route_command(
                &cmd("PING"),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )?;
            Ok(())
        })?;
        Ok(cache)
    }

    fn connect(&self) -> RedisResult<ClusterConnection> {
        let c = self.client.get_connection()?;
        c.set_read_timeout(Some(IO_TIMEOUT))?;
        c.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(c)
    }

    fn err(&self, what: &str, e: &RedisError) -> CacheError {
        CacheError {
            backend: "redis-cluster".to_owned(),
            message: format!(
                "{}: {what}: {}",
                self.shown,
                self.secrets.scrub(&e.to_string())
            ),
        }
    }

    /// As in [`super::redis::RedisCache`]: connect if needed; a connection error drops the
    /// connection and retries once.
    fn with_conn<T>(
        &self,
        what: &str,
        mut f: impl FnMut(&mut ClusterConnection, bool) -> RedisResult<T>,
    ) -> Result<T, CacheError> {
        super::redis::with_retry(&self.conn, || self.connect(), &mut f, |e| self.err(what, e))
    }

    fn masters(&self, what: &str) -> Result<Vec<(String, u16)>, CacheError> {
        self.with_conn(what, |c, _| {
            let v = c.route_command(
                cmd("CLUSTER").arg("SLOTS"),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )?;
            parse_masters(v)
        })
    }

    /// Walk every key under our prefix on every master: `visit` gets each SCAN page's keys.
    fn scan_all(
        &self,
        what: &str,
        mut visit: impl FnMut(&mut ClusterConnection, &[String]) -> RedisResult<()>,
    ) -> Result<Vec<(String, u16)>, CacheError> {
        let masters = self.masters(what)?;
        let pattern = scan_pattern(&self.prefix);
        for (host, port) in &masters {
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = self.with_conn(what, |c, _| {
                    let v =
                        c.route_command(&scan_cmd(cursor, &pattern), by_address(host, *port))?;
                    Ok(from_redis_value(v)?)
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

impl Cache for ClusterCache {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    /// One cluster pipeline of GETs (the cluster pipeline refuses MGET): it writes each
    /// node all of its GETs at once, then reads the replies, so a call costs one round trip
    /// per node, whatever the number of keys and slots.
    fn get_many(&self, keys: &[CacheKey]) -> Vec<Lookup> {
        if keys.is_empty() {
            return Vec::new();
        }
        let mut pipe = cluster_pipe();
        for k in keys {
            pipe.cmd("GET").arg(k.as_str());
        }
        let result = self.with_conn("GET", |c, _| pipe.query::<Vec<Option<Vec<u8>>>>(c));
        match result {
            Ok(values) if values.len() == keys.len() => values
                .into_iter()
                .map(|v| match v {
                    Some(bytes) => Lookup::Hit(bytes),
                    None => Lookup::Miss(Miss::Absent),
                })
                .collect(),
            Ok(values) => {
                let msg = format!(
                    "{}: GET pipeline returned {} values for {} keys",
                    self.shown,
                    values.len(),
                    keys.len()
                );
                vec![Lookup::Miss(Miss::Error(msg)); keys.len()]
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
        let masters = self.scan_all("stats", |c, keys| {
            let values: Vec<&String> = keys.iter().filter(|k| is_value_key(k)).collect();
            entries += values.len() as u64;
            if bytes.is_some() && !values.is_empty() {
                let mut pipe = cluster_pipe();
                for k in &values {
                    pipe.cmd("MEMORY").arg("USAGE").arg(k.as_str());
                }
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
        let mut details = vec![
            ("cluster".to_owned(), self.shown.clone()),
            (
                "masters".to_owned(),
                masters
                    .iter()
                    .map(|(h, p)| format!("{h}:{p}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ];
        // CONFIG may be denied to ACL users: then the line is left out.
        let mut policies = BTreeSet::new();
        for (host, port) in &masters {
            let v = self.with_conn("CONFIG GET", |c, _| {
                c.route_command(
                    cmd("CONFIG").arg("GET").arg("maxmemory-policy"),
                    by_address(host, *port),
                )
            });
            if let Some(p) = v.ok().and_then(|v| parse_config_get(&v)) {
                policies.insert(p);
            }
        }
        if !policies.is_empty() {
            details.push((
                "maxmemory-policy".to_owned(),
                policies.into_iter().collect::<Vec<_>>().join(","),
            ));
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
            // Keys of different images are in different slots: one UNLINK each, pipelined
            // (one round trip per node).
            let mut pipe = cluster_pipe();
            for k in keys {
                pipe.cmd("UNLINK").arg(k.as_str());
            }
            let counts: Vec<u64> = pipe.query(c)?;
            removed += counts.iter().sum::<u64>();
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
                backend: "redis-cluster".to_owned(),
                message: format!("{}: probe key read back different bytes", self.shown),
            })
        }
    }
}
