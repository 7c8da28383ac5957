//! `redis://[user:pass@]host:port[/db]` and `rediss://` (TLS): one Redis server, one
//! connection. Lookups are one pipeline of MGETs, 256 keys each: one round trip per call.
use ::redis::{cmd, pipe, Client, Cmd, Connection, FromRedisValue, RedisResult, Value};

use super::{RedisCache, Topology, CONNECT_TIMEOUT, IO_TIMEOUT};
use crate::cache::backend::CacheError;
use crate::cache::key::CacheKey;
use crate::cache::options::CacheOptions;
use crate::cache::secret::redact;

/// Keys per MGET.
pub const MGET_CHUNK: usize = 256;

/// One server: every key, and the whole keyspace, is on it.
pub struct Single(Client);

impl RedisCache<Single> {
    /// Connect and PING: an unreachable server, a wrong password, a bad URL or a TLS file
    /// that cannot be used is an `Err` here, with no password in the message.
    pub fn open(url: &str, opts: &CacheOptions) -> Result<Self, CacheError> {
        Self::start(&[url], redact(url), opts, |certs| {
            match certs {
                Some(certs) => Client::build_with_tls(url, certs),
                None => Client::open(url),
            }
            .map(Single)
        })
    }
}

impl Topology for Single {
    const BACKEND: &'static str = "redis";
    const LOOKUP: &'static str = "MGET";
    const MEMORY_INFO: bool = true;

    type Conn = Connection;
    type Node = ();

    fn connect(&self) -> RedisResult<Connection> {
        let c = self.0.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        c.set_read_timeout(Some(IO_TIMEOUT))?;
        c.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(c)
    }

    fn on_any(conn: &mut Connection, cmd: &Cmd) -> RedisResult<Value> {
        cmd.query(conn)
    }

    fn on_node(conn: &mut Connection, _: &(), cmd: &Cmd) -> RedisResult<Value> {
        cmd.query(conn)
    }

    fn masters(_: &mut Connection) -> RedisResult<Vec<()>> {
        Ok(vec![()])
    }

    fn pipeline<R: FromRedisValue>(
        conn: &mut Connection,
        cmds: impl IntoIterator<Item = Cmd>,
    ) -> RedisResult<R> {
        let mut p = pipe();
        for c in cmds {
            p.add_command(c);
        }
        p.query(conn)
    }

    fn get_values(conn: &mut Connection, keys: &[CacheKey]) -> RedisResult<Vec<Option<Vec<u8>>>> {
        let mgets = keys.chunks(MGET_CHUNK).map(|chunk| {
            let mut c = cmd("MGET");
            for k in chunk {
                c.arg(k.as_str());
            }
            c
        });
        let chunks: Vec<Vec<Option<Vec<u8>>>> = Self::pipeline(conn, mgets)?;
        Ok(chunks.into_iter().flatten().collect())
    }

    fn stats_head(shown: &str, _: &[()]) -> Vec<(String, String)> {
        vec![("server".to_owned(), shown.to_owned())]
    }
}
