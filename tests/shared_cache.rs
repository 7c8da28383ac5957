//! The shared cache at archive scale (#18): compact values, mutual TLS, leases that a failover
//! or a stopped process leaves behind. Real `redis-server` processes on loopback ports.
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::batch::{colorize_cmd, count, ddcolor, report, run, stderr, ALBUM_UNIQUE};
use crate::redis_util::{make_client_cert, make_tls_files, RedisCluster, RedisConfig, RedisServer};
use crate::util::fixtures;

/// The keys under `pattern` on one server.
fn keys(server: &RedisServer, pattern: &str) -> Vec<String> {
    server
        .cli(&["--scan", "--pattern", pattern])
        .lines()
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn values_are_compressed_under_a_new_schema() {
    let server = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().join("r.json");
    let o = run(colorize_cmd(
        &[&fixtures("photos")],
        &tmp.path().join("out"),
        &server.url(),
        &r,
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let values = keys(&server, "ddcolor:*");
    assert_eq!(values.len(), ALBUM_UNIQUE, "{values:?}");
    // schema 1 held 48 + 2 * 2 * 64 * 64 bytes of raw i16 planes; schema 2 compresses them
    let raw = 48 + 2 * 2 * 64 * 64;
    for k in &values {
        assert!(k.starts_with("ddcolor:v2:{"), "{k}");
        let len: usize = server.cli(&["STRLEN", k]).trim().parse().unwrap();
        assert!(len < raw, "{k}: {len} bytes, raw {raw}");
    }
    // a value written by an older ddcolor (schema 1 key) is never read: a fresh cache with
    // only such keys infers everything
    let server2 = RedisServer::start();
    for k in &values {
        let old = k.replacen(":v2:", ":v1:", 1);
        server2.cli(&["SET", &old, "DDAB-schema-1-value"]);
    }
    let r2 = tmp.path().join("r2.json");
    let o = run(colorize_cmd(
        &[&fixtures("photos")],
        &tmp.path().join("out2"),
        &server2.url(),
        &r2,
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(count(&report(&r2), "inferred"), ALBUM_UNIQUE);
}

#[test]
fn mutual_tls_with_client_certificate_flags_and_variables() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_tls_files(dir.path());
    let (cert, key) = make_client_cert(dir.path(), "archive-worker");
    let server = RedisServer::start_with(RedisConfig {
        tls: Some(tls.clone()),
        tls_auth_clients: true,
        password: Some("mtlsPw".to_owned()),
        ..Default::default()
    });
    let url = server.url();
    assert!(url.starts_with("rediss://"), "{url}");
    let tmp = tempfile::tempdir().unwrap();
    let photo = fixtures("photos/cameraman.png");
    let cmd = |name: &str| {
        let mut c = colorize_cmd(
            &[&photo],
            &tmp.path().join(name),
            &url,
            &tmp.path().join(format!("{name}.json")),
        );
        c.arg("--require-cache");
        c
    };

    // the CA alone: the server wants a client certificate, the handshake fails (exit 3)
    let mut c = cmd("no-cert");
    c.arg("--cache-tls-ca").arg(&tls.ca);
    let o = run(c);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("cache unreachable"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("mtlsPw"), "{}", stderr(&o));
    assert!(!tmp.path().join("no-cert/cameraman.png").exists());

    // certificate, key and CA as flags: the run uses the cache
    let mut c = cmd("flags");
    c.arg("--cache-tls-cert")
        .arg(&cert)
        .arg("--cache-tls-key")
        .arg(&key)
        .arg("--cache-tls-ca")
        .arg(&tls.ca);
    let o = run(c);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        count(&report(&tmp.path().join("flags.json")), "inferred"),
        1
    );
    assert_eq!(keys(&server, "ddcolor:*").len(), 1);

    // the same as DDCOLOR_ variables: the warm run is served from the cache
    let mut c = cmd("vars");
    c.env("DDCOLOR_CACHE_TLS_CERT", &cert)
        .env("DDCOLOR_CACHE_TLS_KEY", &key)
        .env("DDCOLOR_CACHE_TLS_CA", &tls.ca);
    let o = run(c);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(count(&report(&tmp.path().join("vars.json")), "cached"), 1);

    // the private CA through SSL_CERT_FILE (the system trust store's variable) instead of
    // --cache-tls-ca; `cache stats` takes the same options
    let o = run({
        let mut c = ddcolor();
        c.args(["cache", "stats", "--cache", &url])
            .arg("--cache-tls-cert")
            .arg(&cert)
            .arg("--cache-tls-key")
            .arg(&key)
            .env("SSL_CERT_FILE", &tls.ca);
        c
    });
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("entries: 1"), "{out}");

    // misuse is a usage error before anything runs (exit 2), naming the flag
    let usage = |args: &[&str], url: &str, says: &str| {
        let mut c = colorize_cmd(
            &[&photo],
            &tmp.path().join("usage"),
            url,
            &tmp.path().join("usage.json"),
        );
        c.args(args);
        let o = run(c);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    };
    let (cert_s, key_s) = (cert.to_str().unwrap(), key.to_str().unwrap());
    usage(&["--cache-tls-cert", cert_s], &url, "--cache-tls-key");
    usage(&["--cache-tls-key", key_s], &url, "--cache-tls-cert");
    usage(
        &["--cache-tls-ca", tls.ca.to_str().unwrap()],
        "redis://127.0.0.1:1/0",
        "rediss://",
    );
    usage(
        &["--cache-tls-ca", "/nonexistent/ca.pem"],
        &url,
        "--cache-tls-ca",
    );
    let not_pem = tmp.path().join("ca.der");
    std::fs::write(&not_pem, [0x30u8, 0x82, 1, 2]).unwrap();
    usage(
        &["--cache-tls-ca", not_pem.to_str().unwrap()],
        &url,
        "not a PEM file",
    );
    assert!(!tmp.path().join("usage").exists());
}

#[test]
fn mutual_tls_to_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_tls_files(dir.path());
    let (cert, key) = make_client_cert(dir.path(), "archive-worker");
    let cluster = RedisCluster::start_with(
        RedisConfig {
            tls: Some(tls.clone()),
            tls_auth_clients: true,
            ..Default::default()
        },
        0,
    );
    let spec = cluster.spec();
    assert!(spec.starts_with("rediss-cluster://"), "{spec}");
    let tmp = tempfile::tempdir().unwrap();
    let album = fixtures("photos");
    let cmd = |name: &str| {
        let mut c = colorize_cmd(
            &[&album],
            &tmp.path().join(name),
            &spec,
            &tmp.path().join(format!("{name}.json")),
        );
        c.arg("--require-cache")
            .env("DDCOLOR_CACHE_TLS_CA", &tls.ca);
        c
    };
    let o = run(cmd("no-cert"));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    for name in ["cold", "warm"] {
        let mut c = cmd(name);
        c.env("DDCOLOR_CACHE_TLS_CERT", &cert)
            .env("DDCOLOR_CACHE_TLS_KEY", &key);
        let o = run(c);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", stderr(&o));
    }
    assert_eq!(
        count(&report(&tmp.path().join("cold.json")), "inferred"),
        ALBUM_UNIQUE
    );
    assert_eq!(
        count(&report(&tmp.path().join("warm.json")), "cached"),
        ALBUM_UNIQUE
    );
}

/// The cache key of `photo` for the test model at 64 (learnt from a run under another
/// prefix: the model id is a digest of the weights).
fn key_of(server: &RedisServer, photo: &Path, tmp: &Path) -> String {
    let mut c = colorize_cmd(
        &[photo],
        &tmp.join("probe"),
        &server.url(),
        &tmp.join("p.json"),
    );
    c.args(["--cache-prefix", "probe"]);
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    let k = keys(server, "probe:*");
    assert_eq!(k.len(), 1, "{k:?}");
    k[0].replacen("probe:", "ddcolor:", 1)
}

#[test]
fn a_waiter_says_for_how_many_images_and_how_long_and_times_the_wait() {
    let server = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let photo = fixtures("photos/cameraman.png");
    let key = key_of(&server, &photo, tmp.path());
    // a lease left by a process that stopped, 3 s before it lapses
    server.cli(&["SET", &format!("{key}:lease"), "gone-worker", "PX", "3000"]);
    let r = tmp.path().join("r.json");
    let o = run(colorize_cmd(
        &[&photo],
        &tmp.path().join("out"),
        &server.url(),
        &r,
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("waiting for 1 image that another process is colorizing"),
        "{err}"
    );
    assert!(err.contains("at most 3 s"), "{err}");
    assert_eq!(err.matches("waiting for").count(), 1, "said once: {err}");
    let rep = report(&r);
    assert_eq!(rep[0]["status"], "inferred", "{rep:?}");
    let ms = rep[0]["ms"].as_u64().unwrap();
    assert!(ms >= 2500, "the report's ms leaves out the wait: {ms}");
}

/// The master that owns `key`'s slot, by `CLUSTER KEYSLOT` and `CLUSTER NODES`.
fn owner(cluster: &RedisCluster, key: &str) -> usize {
    let slot: u16 = cluster.nodes[0]
        .cli(&["CLUSTER", "KEYSLOT", key])
        .trim()
        .parse()
        .unwrap();
    let nodes = cluster.nodes[0].cli(&["CLUSTER", "NODES"]);
    for line in nodes.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 9 || !f[2].contains("master") {
            continue;
        }
        let owns = f[8..].iter().any(|r| match r.split_once('-') {
            Some((a, b)) => (a.parse().unwrap()..=b.parse().unwrap()).contains(&slot),
            None => r.parse::<u16>().ok() == Some(slot),
        });
        if owns {
            let port: u16 = f[1]
                .split('@')
                .next()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            return cluster.nodes.iter().position(|n| n.port == port).unwrap();
        }
    }
    panic!("no master owns slot {slot}:\n{nodes}");
}

#[test]
fn leases_survive_no_failover_the_run_lived_through() {
    // 3 masters and 3 replicas; a master is killed while the run holds a lease in its slots
    // (inference slowed down); its replica takes over within seconds. The run releases that
    // lease on the new master before it exits, so the next run does not wait for it.
    let cluster = RedisCluster::start_with(
        RedisConfig {
            extra_args: vec!["--cluster-node-timeout".to_owned(), "1000".to_owned()],
            ..Default::default()
        },
        1,
    );
    let mut cluster = cluster;
    let spec = cluster.spec();
    let tmp = tempfile::tempdir().unwrap();
    let photo = fixtures("photos/cameraman.png");
    // the key's slot and its master (key_of needs a single server: find it by prefix)
    let mut c = colorize_cmd(
        &[&photo],
        &tmp.path().join("probe"),
        &spec,
        &tmp.path().join("p.json"),
    );
    c.args(["--cache-prefix", "probe"]);
    assert!(run(c).status.success());
    let probe_key = cluster
        .nodes
        .iter()
        .flat_map(|n| keys(n, "probe:*"))
        .next()
        .expect("the probe run stored its value");
    let key = probe_key.replacen("probe:", "ddcolor:", 1);
    let master = owner(&cluster, &key);

    let r1 = tmp.path().join("r1.json");
    let mut c = colorize_cmd(&[&photo], &tmp.path().join("one"), &spec, &r1);
    c.args(["--lease-ttl", "120s"])
        .env("DDCOLOR_TEST_INFER_SLEEP_MS", "1000")
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    // wait for the lease to be taken (and replicated), then kill its master: the run's store
    // and release fail while the replica is not yet promoted (inference takes 1 s here, the
    // failover 2-3 s)
    let lease = format!("{key}:lease");
    let t = Instant::now();
    while cluster.nodes[master].cli(&["EXISTS", &lease]).trim() != "1" {
        assert!(t.elapsed() < Duration::from_secs(30), "no lease taken");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(150));
    cluster.nodes[master].stop();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // the promoted replica holds the key's slot now: no lease is left on it
    let leases: Vec<String> = cluster
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != master)
        .flat_map(|(_, n)| keys(n, "ddcolor:*:lease"))
        .collect();
    assert!(
        leases.is_empty(),
        "leases left after the run: {leases:?}\n{}",
        stderr(&o)
    );
    // the next run colorizes at once: it waits for nobody
    let r2 = tmp.path().join("r2.json");
    let t = Instant::now();
    let o = run(colorize_cmd(&[&photo], &tmp.path().join("two"), &spec, &r2));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("waiting for"), "{}", stderr(&o));
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    cluster.stop();
}
