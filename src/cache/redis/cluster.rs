//! `redis-cluster://[user:pass@]host:port,host:port,...` and `rediss-cluster://` (TLS): a Redis
//! Cluster, through `redis::cluster::ClusterClient` (sync).
//!
//! Keys of different images are almost always in different slots, so one MGET per slot would
//! be one round trip per key; instead a lookup is one cluster pipeline of GETs (the cluster
//! pipeline refuses MGET), which groups the GETs by node, writes each node all of its GETs at
//! once and then reads the replies: one round trip per node per call. The masters to SCAN come
//! from `CLUSTER SLOTS`.
use std::collections::BTreeSet;

use ::redis::cluster::{cluster_pipe, ClusterClient, ClusterConnection};
use ::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use ::redis::{cmd, from_redis_value, Cmd, FromRedisValue, RedisResult, Value};

use super::{each_key, RedisCache, Topology, CONNECT_TIMEOUT, IO_TIMEOUT};
use crate::cache::backend::CacheError;
use crate::cache::key::CacheKey;
use crate::cache::options::CacheOptions;
use crate::cache::secret::redact;

/// A cluster: a key lives on the master that owns its slot.
pub struct Cluster(ClusterClient);

impl RedisCache<Cluster> {
    /// Connect to the seed nodes, load the slot map and PING: an unreachable cluster is an
    /// `Err` here. `urls` are `redis://` (or `rediss://`) URLs of seed nodes, as
    /// [`crate::cache::CacheSpec::parse`] makes them.
    pub fn open(urls: &[String], opts: &CacheOptions) -> Result<Self, CacheError> {
        let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
        Self::start(&nodes, describe_nodes(urls), opts, |certs| {
            let mut builder = ClusterClient::builder(nodes.iter().copied())
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(IO_TIMEOUT)
                .retries(1)
                .min_retry_wait(10)
                .max_retry_wait(200);
            if let Some(certs) = certs {
                builder = builder.certs(certs);
            }
            builder.build().map(Cluster)
        })
    }
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

impl Topology for Cluster {
    const BACKEND: &'static str = "redis-cluster";
    const LOOKUP: &'static str = "GET";
    const MEMORY_INFO: bool = false;

    type Conn = ClusterConnection;
    /// A master's host and port.
    type Node = (String, u16);

    fn connect(&self) -> RedisResult<ClusterConnection> {
        let c = self.0.get_connection()?;
        c.set_read_timeout(Some(IO_TIMEOUT))?;
        c.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(c)
    }

    fn on_any(conn: &mut ClusterConnection, cmd: &Cmd) -> RedisResult<Value> {
        conn.route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random))
    }

    fn on_node(
        conn: &mut ClusterConnection,
        node: &(String, u16),
        cmd: &Cmd,
    ) -> RedisResult<Value> {
        let (host, port) = node.clone();
        conn.route_command(
            cmd,
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port }),
        )
    }

    fn masters(conn: &mut ClusterConnection) -> RedisResult<Vec<(String, u16)>> {
        parse_masters(Self::on_any(conn, cmd("CLUSTER").arg("SLOTS"))?)
    }

    fn pipeline<R: FromRedisValue>(
        conn: &mut ClusterConnection,
        cmds: impl IntoIterator<Item = Cmd>,
    ) -> RedisResult<R> {
        let mut p = cluster_pipe();
        for c in cmds {
            p.add_command(c);
        }
        p.query(conn)
    }

    fn get_values(
        conn: &mut ClusterConnection,
        keys: &[CacheKey],
    ) -> RedisResult<Vec<Option<Vec<u8>>>> {
        Self::pipeline(conn, each_key(&["GET"], keys.iter().map(CacheKey::as_str)))
    }

    fn stats_head(shown: &str, masters: &[(String, u16)]) -> Vec<(String, String)> {
        let masters: Vec<String> = masters.iter().map(|(h, p)| format!("{h}:{p}")).collect();
        vec![
            ("cluster".to_owned(), shown.to_owned()),
            ("masters".to_owned(), masters.join(",")),
        ]
    }
}
