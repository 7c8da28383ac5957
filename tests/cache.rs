//! Cache backends against real storage: a temp directory, a real `redis-server`, a real
//! 3-master Redis Cluster (see `redis_util`). One contract body runs against each backend.
//!
//! Disk ignores TTLs (entries leave by LRU eviction only): the TTL step checks that a value put
//! with a TTL is stored, and only Redis backends check PTTL.
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use ddcolor::cache::disk::DiskCache;
use ddcolor::cache::{
    self, parse_size, parse_spec, redact, value, Cache, CacheKey, CacheOptions, CacheSpec, Lease,
    LeaseOutcome, Lookup, Miss,
};
use sha2::{Digest, Sha256};

use crate::redis_util::{free_port, make_tls_files, RedisCluster, RedisConfig, RedisServer};

const SIZE: usize = 8;
const CH: usize = 2;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha(i: u64) -> String {
    hex(&Sha256::digest(format!("image {i}").as_bytes()))
}

fn key(prefix: &str, i: u64) -> CacheKey {
    CacheKey::new(prefix, "0123abcd", SIZE, &sha(i))
}

fn ab(seed: u64, size: usize) -> Vec<f32> {
    (0..CH * size * size)
        .map(|j| (((j as u64 * 31 + seed * 17) % 2001) as f32 - 1000.0) * 0.1)
        .collect()
}

fn val(seed: u64) -> Vec<u8> {
    value::encode(&ab(seed, SIZE), SIZE, CH)
}

fn opts(prefix: &str) -> CacheOptions {
    CacheOptions {
        prefix: prefix.to_owned(),
        ..CacheOptions::default()
    }
}

fn acquired(o: LeaseOutcome) -> Lease {
    match o {
        LeaseOutcome::Acquired(l) => l,
        LeaseOutcome::HeldElsewhere => panic!("expected Acquired, got HeldElsewhere"),
    }
}

fn hit(l: &Lookup) -> &[u8] {
    match l {
        Lookup::Hit(b) => b,
        other => panic!("expected a hit, got {other:?}"),
    }
}

/// PTTL of a raw key.
type Pttl = Box<dyn Fn(&str) -> i64>;

/// One backend under test.
struct Target {
    cache: Box<dyn Cache>,
    prefix: String,
    /// PTTL of a raw key (Redis backends only).
    pttl: Option<Pttl>,
    /// A password that must never show.
    secret: Option<String>,
}

/// The contract every backend keeps.
fn contract(t: &Target) {
    let c = &*t.cache;
    let p = t.prefix.as_str();
    let k = |i| key(p, i);
    let mut stored = BTreeSet::new();

    // miss, put, hit (bytes equal, and they decode)
    assert_eq!(
        c.get_many(&[k(0)]),
        vec![Lookup::Miss(Miss::Absent)],
        "fresh key"
    );
    c.put(&k(0), &val(0), None).expect("put");
    stored.insert(0);
    let got = c.get_many(&[k(0)]);
    assert_eq!(hit(&got[0]), &val(0)[..], "bytes read back");
    assert_eq!(
        value::decode(hit(&got[0]), SIZE, CH),
        Some(value::quantise(&ab(0, SIZE)))
    );
    assert!(c.get_many(&[]).is_empty());

    // a ~1 MB value (512x512 ab of noise, which does not compress)
    let big_key = CacheKey::new(p, "0123abcd", 512, &sha(1000));
    let mut state = 7u64;
    let noise: Vec<f32> = (0..CH * 512 * 512)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % 20001) as f32 * 0.01 - 100.0
        })
        .collect();
    let big = value::encode(&noise, 512, CH);
    assert!(big.len() > 900_000, "{}", big.len());
    c.put(&big_key, &big, None).expect("put 1 MB");
    let got = c.get_many(std::slice::from_ref(&big_key));
    assert_eq!(hit(&got[0]), &big[..], "1 MB value read back");
    assert!(value::decode(hit(&got[0]), 512, CH).is_some());

    // get_many keeps order, mixes hits and misses in one call
    c.put(&k(2), &val(2), None).unwrap();
    c.put(&k(4), &val(4), None).unwrap();
    stored.extend([2, 4]);
    let got = c.get_many(&[k(0), k(1), k(2), k(3), k(4), k(0)]);
    assert_eq!(
        got,
        vec![
            Lookup::Hit(val(0)),
            Lookup::Miss(Miss::Absent),
            Lookup::Hit(val(2)),
            Lookup::Miss(Miss::Absent),
            Lookup::Hit(val(4)),
            Lookup::Hit(val(0)),
        ]
    );

    // more than one MGET chunk (256) in one call
    let many: Vec<CacheKey> = (100..400).map(k).collect();
    for i in (100..400).step_by(3) {
        c.put(&k(i), &val(i), None).unwrap();
        stored.insert(i);
    }
    let got = c.get_many(&many);
    assert_eq!(got.len(), 300);
    for (j, l) in got.iter().enumerate() {
        let i = 100 + j as u64;
        if (i - 100).is_multiple_of(3) {
            assert_eq!(l, &Lookup::Hit(val(i)), "key {i}");
        } else {
            assert_eq!(l, &Lookup::Miss(Miss::Absent), "key {i}");
        }
    }

    // a corrupt stored value comes back as stored and fails value::decode
    let mut bad = val(5);
    let n = bad.len();
    bad[n - 3] ^= 0x5a;
    c.put(&k(5), &bad, None).unwrap();
    c.put(&k(6), &val(6)[..40], None).unwrap();
    stored.extend([5, 6]);
    let got = c.get_many(&[k(5), k(6)]);
    assert_eq!(hit(&got[0]), &bad[..]);
    assert_eq!(value::decode(hit(&got[0]), SIZE, CH), None, "flipped byte");
    assert_eq!(value::decode(hit(&got[1]), SIZE, CH), None, "truncated");

    // TTL: Redis sets PX; disk ignores it (the value is stored all the same)
    c.put(&k(7), &val(7), Some(Duration::from_secs(60)))
        .unwrap();
    stored.insert(7);
    assert_eq!(c.get_many(&[k(7)]), vec![Lookup::Hit(val(7))]);
    if let Some(pttl) = &t.pttl {
        let ms = pttl(k(7).as_str());
        assert!(ms > 0 && ms <= 60_000, "PTTL with a TTL: {ms}");
        assert_eq!(pttl(k(0).as_str()), -1, "PTTL without a TTL");
    }

    // lease: acquire, held elsewhere, release, reacquire
    let l1 = acquired(c.try_lease(&k(8), Duration::from_secs(30)).unwrap());
    assert_eq!(l1.key, k(8));
    assert_eq!(
        c.try_lease(&k(8), Duration::from_secs(30)).unwrap(),
        LeaseOutcome::HeldElsewhere
    );
    assert!(c.lease_alive(&k(8)).unwrap());
    assert!(!c.lease_alive(&k(9)).unwrap());
    c.release(&l1).unwrap();
    assert!(!c.lease_alive(&k(8)).unwrap(), "released");
    let l2 = acquired(c.try_lease(&k(8), Duration::from_secs(30)).unwrap());
    assert_ne!(l1.token, l2.token);
    // release with a wrong token leaves the lease alone
    c.release(&Lease {
        key: k(8),
        token: "not-the-token".to_owned(),
    })
    .unwrap();
    assert!(c.lease_alive(&k(8)).unwrap(), "wrong token released it");
    c.release(&l2).unwrap();
    assert!(!c.lease_alive(&k(8)).unwrap());

    // an expired lease is taken over; its old holder's release leaves the new one alone
    let old = acquired(c.try_lease(&k(10), Duration::from_millis(300)).unwrap());
    thread::sleep(Duration::from_millis(700));
    assert!(!c.lease_alive(&k(10)).unwrap(), "expired lease still alive");
    let new = acquired(c.try_lease(&k(10), Duration::from_secs(30)).unwrap());
    assert_ne!(old.token, new.token);
    c.release(&old).unwrap();
    assert!(
        c.lease_alive(&k(10)).unwrap(),
        "stale holder released the new lease"
    );
    c.release(&new).unwrap();
    assert!(!c.lease_alive(&k(10)).unwrap());

    // stats count values (not leases, not the probe)
    let _live = acquired(c.try_lease(&k(11), Duration::from_secs(30)).unwrap());
    c.check_writable().expect("check_writable");
    let s = c.stats().expect("stats");
    let values = stored.len() as u64 + 1; // + the 1 MB value
    assert_eq!(s.entries, values, "stats: {s:?}");
    assert!(
        s.bytes.is_some_and(|b| b > big.len() as u64),
        "stats bytes: {s:?}"
    );

    // clear empties (values and leases)
    let removed = c.clear().expect("clear");
    assert!(
        removed > values,
        "clear removed {removed}, {values} values + a lease"
    );
    assert_eq!(c.stats().unwrap().entries, 0);
    let all: Vec<CacheKey> = stored.iter().map(|&i| k(i)).collect();
    assert!(c
        .get_many(&all)
        .iter()
        .all(|l| *l == Lookup::Miss(Miss::Absent)));
    assert!(!c.lease_alive(&k(11)).unwrap(), "clear left a lease");
    assert!(
        acquired(c.try_lease(&k(11), Duration::from_secs(5)).unwrap())
            .token
            .len()
            > 8
    );

    // no secret in what the backend says about itself
    if let Some(secret) = &t.secret {
        assert!(!c.describe().contains(secret.as_str()), "{}", c.describe());
        assert!(!format!("{c:?}").contains(secret.as_str()));
        assert!(c.describe().contains("***"), "{}", c.describe());
    }
}

#[test]
fn disk_contract() {
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("disk:{}", dir.path().display());
    let cache = cache::open(&spec, &opts("ddtest")).expect("open disk");
    assert_eq!(cache.describe(), spec);
    contract(&Target {
        cache,
        prefix: "ddtest".to_owned(),
        pttl: None,
        secret: None,
    });
    // another prefix in the same directory is separate for stats and clear
    let a = DiskCache::open(dir.path(), &opts("one")).unwrap();
    let b = DiskCache::open(dir.path(), &opts("two")).unwrap();
    a.put(&key("one", 1), &val(1), None).unwrap();
    b.put(&key("two", 1), &val(1), None).unwrap();
    assert_eq!(a.stats().unwrap().entries, 1);
    assert_eq!(a.clear().unwrap(), 1);
    assert_eq!(b.stats().unwrap().entries, 1);
}

#[test]
fn redis_contract() {
    let secret = "s3cretPw0rd";
    let server = RedisServer::start_with_user("cacheuser", secret);
    let url = server.url();
    assert!(url.contains(secret));
    let cache = cache::open(&url, &opts("ddtest")).expect("open redis");
    assert_eq!(
        cache.describe(),
        format!("redis://cacheuser:***@127.0.0.1:{}/0", server.port)
    );
    let client = redis::Client::open(url.as_str()).unwrap();
    let pttl = move |k: &str| -> i64 {
        let mut con = client.get_connection().unwrap();
        redis::cmd("PTTL").arg(k).query(&mut con).unwrap()
    };
    contract(&Target {
        cache,
        prefix: "ddtest".to_owned(),
        pttl: Some(Box::new(pttl)),
        secret: Some(secret.to_owned()),
    });

    // stats details come from CONFIG GET
    let c = cache::open(&url, &opts("ddtest")).unwrap();
    let s = c.stats().unwrap();
    assert!(
        s.details.iter().any(|(k, _)| k == "maxmemory-policy"),
        "{s:?}"
    );

    // a wrong password: Err at open, and the message hides it
    let wrong = "WrongPw999";
    let bad_url = format!("redis://cacheuser:{wrong}@127.0.0.1:{}/0", server.port);
    let e = cache::open(&bad_url, &opts("ddtest")).expect_err("wrong password opened");
    let msg = e.to_string();
    assert!(!msg.contains(wrong), "{msg}");
    assert!(msg.contains("cacheuser:***@"), "{msg}");

    // with the server gone, a lookup is a Miss::Error for every key (no panic, no secret)
    let c = cache::open(&url, &opts("ddtest")).unwrap();
    drop(server);
    let got = c.get_many(&[key("ddtest", 1), key("ddtest", 2)]);
    assert_eq!(got.len(), 2);
    for l in &got {
        match l {
            Lookup::Miss(Miss::Error(m)) => assert!(!m.contains(secret), "{m}"),
            other => panic!("expected Miss::Error, got {other:?}"),
        }
    }
    let e = c.put(&key("ddtest", 1), &val(1), None).unwrap_err();
    assert!(!e.to_string().contains(secret));
}

#[test]
fn redis_reconnects_once_after_a_server_restart() {
    let mut server = RedisServer::start();
    let c = cache::open(&server.url(), &opts("ddtest")).unwrap();
    c.put(&key("ddtest", 1), &val(1), None).unwrap();
    // Kill the server (the cache's connection is now dead) and start a new one on the port.
    let port = server.port;
    server.stop();
    let _server = RedisServer::start_with(RedisConfig {
        port: Some(port),
        ..Default::default()
    });
    // One call: the dead connection fails, the cache reconnects and retries once.
    c.put(&key("ddtest", 2), &val(2), None)
        .expect("put after restart");
    assert_eq!(c.get_many(&[key("ddtest", 2)]), vec![Lookup::Hit(val(2))]);
}

#[test]
fn cluster_contract() {
    let secret = "clusterPw77";
    let cluster = RedisCluster::start_with_password(Some(secret));
    let spec = cluster.spec();
    let cache = cache::open(&spec, &opts("ddtest")).expect("open cluster");
    assert!(cache
        .describe()
        .starts_with("redis-cluster://default:***@127.0.0.1:"));
    let client = redis::cluster::ClusterClient::new(cluster.urls()).unwrap();
    let pttl = move |k: &str| -> i64 {
        let mut con = client.get_connection().unwrap();
        redis::cmd("PTTL").arg(k).query(&mut con).unwrap()
    };
    contract(&Target {
        cache,
        prefix: "ddtest".to_owned(),
        pttl: Some(Box::new(pttl)),
        secret: Some(secret.to_owned()),
    });

    // the keys of the contract really were spread over the masters (slots differ), and stats
    // walks every master
    let c = cache::open(&spec, &opts("spread")).unwrap();
    for i in 0..30 {
        c.put(&key("spread", i), &val(i), None).unwrap();
    }
    let holders = cluster
        .nodes
        .iter()
        .filter(|n| {
            let out = n.cli(&["--scan", "--pattern", "spread:*"]);
            !out.trim().is_empty()
        })
        .count();
    assert_eq!(holders, 3, "30 keys should land on all 3 masters");
    assert_eq!(c.stats().unwrap().entries, 30);
    let got = c.get_many(&(0..30).map(|i| key("spread", i)).collect::<Vec<_>>());
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, l)| *l == Lookup::Hit(val(i as u64))));
    assert_eq!(c.clear().unwrap(), 30);

    // a wrong password: Err at open, and the message hides it
    let wrong = "WrongPw999";
    let bad = spec.replace(secret, wrong);
    let e = cache::open(&bad, &opts("ddtest")).expect_err("wrong password opened");
    let msg = e.to_string();
    assert!(!msg.contains(wrong), "{msg}");
    assert!(msg.contains("default:***@"), "{msg}");
}

#[test]
fn unreachable_redis_fails_at_open_quickly() {
    let port = free_port();
    for spec in [
        format!("redis://user:topsecret1@127.0.0.1:{port}/0"),
        format!(
            "redis-cluster://user:topsecret1@127.0.0.1:{port},127.0.0.1:{}",
            free_port()
        ),
    ] {
        let t = Instant::now();
        let e = cache::open(&spec, &opts("ddtest")).expect_err("opened a dead server");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
        let msg = e.to_string();
        assert!(!msg.contains("topsecret1"), "{msg}");
        assert!(msg.contains("user:***@"), "{msg}");
    }
}

#[test]
fn rediss_tls_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_tls_files(dir.path());
    let server = RedisServer::start_with(RedisConfig {
        tls: Some(tls.clone()),
        password: Some("tlsPw123".to_owned()),
        ..Default::default()
    });
    let url = server.url();
    assert!(url.starts_with("rediss://"));
    // The server's CA is not trusted here: the certificate is checked, so open fails.
    let e = cache::open(&url, &opts("ddtest")).expect_err("untrusted certificate accepted");
    assert!(!e.to_string().contains("tlsPw123"), "{e}");
    assert!(e.to_string().contains("certificate"), "{e}");
    // With the CA trusted (SSL_CERT_FILE, read by rustls-native-certs) it works: run the
    // check in a child process so this process's environment stays untouched.
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "cache::rediss_tls_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SSL_CERT_FILE", &tls.ca)
        .env_remove("SSL_CERT_DIR")
        .env("DDCOLOR_TEST_REDISS_URL", &url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "run by rediss_tls_roundtrip in a child process with SSL_CERT_FILE set"]
fn rediss_tls_child() {
    let Ok(url) = std::env::var("DDCOLOR_TEST_REDISS_URL") else {
        return;
    };
    let c = cache::open(&url, &opts("ddtest")).expect("open rediss");
    assert!(c.describe().starts_with("rediss://default:***@"));
    c.put(&key("ddtest", 1), &val(1), Some(Duration::from_secs(60)))
        .unwrap();
    assert_eq!(
        c.get_many(&[key("ddtest", 1), key("ddtest", 2)]),
        vec![Lookup::Hit(val(1)), Lookup::Miss(Miss::Absent)]
    );
    let l = acquired(
        c.try_lease(&key("ddtest", 1), Duration::from_secs(5))
            .unwrap(),
    );
    c.release(&l).unwrap();
    c.check_writable().unwrap();
    assert_eq!(c.stats().unwrap().entries, 1);
}

#[test]
fn disk_lru_evicts_least_recently_read() {
    let dir = tempfile::tempdir().unwrap();
    let one = val(0).len() as u64;
    let o = CacheOptions {
        prefix: "lru".to_owned(),
        max_size: Some(one * 7 / 2), // 3.5 values
        ..CacheOptions::default()
    };
    let c = DiskCache::open(dir.path(), &o).unwrap();
    let k = |i| key("lru", i);
    let pause = || thread::sleep(Duration::from_millis(30));
    for i in 0..3 {
        c.put(&k(i), &val(i), None).unwrap();
        pause();
    }
    // read 0: now 1 is the least recently used
    assert_eq!(c.get_many(&[k(0)]), vec![Lookup::Hit(val(0))]);
    pause();
    c.put(&k(3), &val(3), None).unwrap();
    let got = c.get_many(&[k(0), k(1), k(2), k(3)]);
    assert_eq!(
        got,
        vec![
            Lookup::Hit(val(0)),
            Lookup::Miss(Miss::Absent),
            Lookup::Hit(val(2)),
            Lookup::Hit(val(3)),
        ],
        "entry 1 (least recently read) should be the one evicted"
    );
    // That check read 0, 2, 3 in this order: 0 is now the least recently used.
    pause();
    // A second process (another instance) sees the directory's size on open and keeps the
    // bound too.
    let c2 = DiskCache::open(dir.path(), &o).unwrap();
    c2.put(&k(4), &val(4), None).unwrap();
    let s = c2.stats().unwrap();
    assert!(s.bytes.unwrap() <= one * 7 / 2, "{s:?}");
    assert_eq!(
        c2.get_many(&[k(0), k(4)]),
        vec![Lookup::Miss(Miss::Absent), Lookup::Hit(val(4))],
        "0 (least recently read) goes next"
    );
}

#[test]
fn disk_concurrent_put_and_lease_one_holder() {
    let dir = tempfile::tempdir().unwrap();
    let threads = 8;
    for round in 0..10u64 {
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads as u64)
            .map(|t| {
                let barrier = barrier.clone();
                let root = dir.path().to_owned();
                thread::spawn(move || {
                    // one instance per thread, as separate processes would have
                    let c = DiskCache::open(&root, &opts("race")).unwrap();
                    let k = key("race", round);
                    barrier.wait();
                    c.put(&k, &val(t), None).unwrap();
                    let lease = c.try_lease(&k, Duration::from_secs(30)).unwrap();
                    matches!(lease, LeaseOutcome::Acquired(_))
                })
            })
            .collect();
        let holders = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&a| a)
            .count();
        assert_eq!(holders, 1, "round {round}: {holders} lease holders");
        let c = DiskCache::open(dir.path(), &opts("race")).unwrap();
        let got = c.get_many(&[key("race", round)]);
        let bytes = hit(&got[0]);
        assert!(
            (0..threads as u64).any(|t| bytes == &val(t)[..]),
            "a torn value"
        );
    }
}

#[test]
fn disk_expired_lease_race_one_taker() {
    let dir = tempfile::tempdir().unwrap();
    let threads = 8;
    for round in 0..10u64 {
        let k = key("expired", round);
        let first = DiskCache::open(dir.path(), &opts("expired")).unwrap();
        acquired(first.try_lease(&k, Duration::from_millis(1)).unwrap());
        thread::sleep(Duration::from_millis(20));
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let barrier = barrier.clone();
                let root = dir.path().to_owned();
                let k = k.clone();
                thread::spawn(move || {
                    let c = DiskCache::open(&root, &opts("expired")).unwrap();
                    barrier.wait();
                    matches!(
                        c.try_lease(&k, Duration::from_secs(30)).unwrap(),
                        LeaseOutcome::Acquired(_)
                    )
                })
            })
            .collect();
        let takers = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&a| a)
            .count();
        assert_eq!(
            takers, 1,
            "round {round}: {takers} took the expired lease over"
        );
        assert!(first.lease_alive(&k).unwrap());
    }
}

#[test]
fn none_backend_always_misses() {
    let c = cache::open("none", &CacheOptions::default()).unwrap();
    assert_eq!(c.describe(), "none");
    let k = key("x", 1);
    c.put(&k, &val(1), None).unwrap();
    assert_eq!(
        c.get_many(std::slice::from_ref(&k)),
        vec![Lookup::Miss(Miss::Absent)]
    );
    acquired(c.try_lease(&k, Duration::from_secs(1)).unwrap());
    acquired(c.try_lease(&k, Duration::from_secs(1)).unwrap());
    assert!(!c.lease_alive(&k).unwrap());
    assert_eq!(c.stats().unwrap().entries, 0);
    assert_eq!(c.clear().unwrap(), 0);
    c.check_writable().unwrap();
}

#[test]
fn cache_options_default_prefix() {
    assert_eq!(CacheOptions::default().prefix, cache::key::DEFAULT_PREFIX);
    assert_eq!(CacheOptions::default().max_size, None);
}

#[test]
fn spec_parsing() {
    use std::path::PathBuf;
    assert_eq!(parse_spec("none").unwrap(), CacheSpec::None);
    assert_eq!(parse_spec("disk").unwrap(), CacheSpec::Disk(None));
    assert_eq!(
        parse_spec("disk:/var/cache/dd").unwrap(),
        CacheSpec::Disk(Some(PathBuf::from("/var/cache/dd")))
    );
    assert_eq!(
        parse_spec("redis://h:6379/2").unwrap(),
        CacheSpec::Redis("redis://h:6379/2".to_owned())
    );
    assert_eq!(
        parse_spec("rediss://u:p@h:6380").unwrap(),
        CacheSpec::Redis("rediss://u:p@h:6380".to_owned())
    );
    assert_eq!(
        parse_spec("redis-cluster://u:p@a:7000,b:7001").unwrap(),
        CacheSpec::Cluster(vec![
            "redis://u:p@a:7000".to_owned(),
            "redis://u:p@b:7001".to_owned()
        ])
    );
    assert_eq!(
        parse_spec("rediss-cluster://a:7000").unwrap(),
        CacheSpec::Cluster(vec!["rediss://a:7000".to_owned()])
    );
    for (bad, hint) in [
        ("", "empty"),
        ("memcached://h:11211", "unknown cache scheme"),
        ("/tmp/cache", "disk:/tmp/cache"),
        ("./cache", "disk:"),
        ("redis://u:hidden99@a:1,b:2", "redis-cluster://"),
        ("redis-cluster://a:1,,b:2", "empty host"),
        ("redis-cluster://a:1/0", "host:port"),
        ("disk://tmp/x", "ambiguous"),
        ("redis", "unknown cache spec"),
        ("file:///tmp/x", "disk:"),
        // #25: a folder left out, and a port no server listens on, are typos: exit 2
        ("disk:", "names no folder"),
        ("redis://127.0.0.1:0/0", "port 0"),
        ("rediss://u:hidden99@h:0", "port 0"),
        ("redis-cluster://a:7000,b:0", "port 0"),
    ] {
        let e = parse_spec(bad).expect_err(bad).to_string();
        assert!(e.contains(hint), "{bad}: {e}");
        assert!(!e.contains("hidden99"), "{e}");
    }
}

/// The typed API: a spec is parsed once, then asked whether it is remote, what stands in for
/// it, and opened; an unreachable remote cache falls back to disk, and disk to none.
#[test]
fn typed_spec_parse_once_open_and_fall_back() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let remote = format!("redis://u:hidden99@127.0.0.1:{port}/0");
    let spec = CacheSpec::parse(&remote).unwrap();
    assert_eq!(remote.parse::<CacheSpec>().unwrap(), spec);
    assert!(spec.is_remote());
    assert!(CacheSpec::parse("redis-cluster://a:1,b:2")
        .unwrap()
        .is_remote());
    let e = cache::open_spec(&spec, &opts("ddtest")).expect_err("opened a dead server");
    assert!(!e.to_string().contains("hidden99"), "{e}");
    assert_eq!(spec.fallback(), CacheSpec::Disk(None));

    let disk = CacheSpec::parse(&format!("disk:{}", dir.path().display())).unwrap();
    assert!(!disk.is_remote());
    assert_eq!(disk.fallback(), CacheSpec::None);
    let c = disk.open(&opts("ddtest")).unwrap();
    assert_eq!(c.describe(), format!("disk:{}", dir.path().display()));

    assert!(!CacheSpec::None.is_remote());
    assert_eq!(CacheSpec::None.fallback(), CacheSpec::None);
    assert_eq!(
        CacheSpec::None.open(&opts("ddtest")).unwrap().describe(),
        "none"
    );
    assert!("/tmp/x".parse::<CacheSpec>().is_err());
}

#[test]
fn size_parsing() {
    assert_eq!(parse_size("1048576"), Ok(1_048_576));
    assert_eq!(parse_size("500M"), Ok(500 << 20));
    assert_eq!(parse_size("2G"), Ok(2 << 30));
    assert_eq!(parse_size("2g"), Ok(2 << 30));
    assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
    assert_eq!(parse_size("10kB"), Ok(10_000));
    assert_eq!(parse_size("3 MB"), Ok(3_000_000));
    assert_eq!(parse_size("1T"), Ok(1 << 40));
    assert_eq!(parse_size("0"), Ok(0));
    for bad in [
        "",
        "abc",
        "-1",
        "5X",
        "1.2.3G",
        "G",
        "99999999999999999999T",
    ] {
        assert!(parse_size(bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn redaction() {
    assert_eq!(
        redact("redis://user:pw@host:6379/0"),
        "redis://user:***@host:6379/0"
    );
    assert_eq!(redact("rediss://:pw@host:6380"), "rediss://:***@host:6380");
    assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    assert_eq!(
        redact("redis-cluster://u:pw@a:1,b:2"),
        "redis-cluster://u:***@a:1,b:2"
    );
    assert_eq!(redact("disk:/x"), "disk:/x");
}
