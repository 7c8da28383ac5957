//! The batch colorizer with Redis and Redis Cluster caches: real `redis-server` processes on
//! free loopback ports, started and stopped by the tests.
use std::time::{Duration, Instant};

use crate::batch::{
    cold_then_warm, colorize_cmd, count, ddcolor, report, run, stderr, three_processes, tree,
    ALBUM_UNIQUE,
};
use crate::redis_util::{free_port, RedisCluster, RedisServer};
use crate::util::fixtures;

#[test]
fn redis_cold_then_warm() {
    let server = RedisServer::start();
    cold_then_warm(&server.url());
}

#[test]
fn cluster_cold_then_warm() {
    let cluster = RedisCluster::start();
    cold_then_warm(&cluster.spec());
}

#[test]
fn redis_three_processes_infer_each_image_once() {
    let server = RedisServer::start_with_password("s3cret-pw");
    three_processes(&server.url());
}

#[test]
fn cluster_three_processes_infer_each_image_once() {
    let cluster = RedisCluster::start();
    three_processes(&cluster.spec());
}

#[test]
fn cache_ttl_sets_an_expiry_and_prefix_separates() {
    let server = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().join("r.json");
    let mut c = colorize_cmd(
        &[&fixtures("photos/cameraman.png")],
        &tmp.path().join("out"),
        &server.url(),
        &r,
    );
    c.args(["--cache-ttl", "2h", "--cache-prefix", "ttltest"]);
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    let keys = server.cli(&["--scan", "--pattern", "ttltest:*"]);
    let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].contains('{') && keys[0].contains('}'),
        "hash tag: {}",
        keys[0]
    );
    let ttl: i64 = server.cli(&["PTTL", keys[0]]).trim().parse().unwrap();
    assert!(ttl > 7_000_000 && ttl <= 7_200_000, "PTTL {ttl}");
    // no lease is left behind
    assert!(server
        .cli(&["--scan", "--pattern", "*:lease"])
        .trim()
        .is_empty());
}

#[test]
fn redis_down_at_start_falls_back_or_fails_with_require_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let dead = format!("redis://default:hunter2@127.0.0.1:{}/0", free_port());
    let r = tmp.path().join("r.json");
    let out = tmp.path().join("out");
    let mut c = colorize_cmd(&[&fixtures("photos")], &out, &dead, &r);
    // the fallback disk cache goes to a temporary XDG cache home
    c.env("XDG_CACHE_HOME", tmp.path().join("xdg"));
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("warning: cache unreachable"), "{err}");
    assert!(!err.contains("hunter2"), "password leaked: {err}");
    assert_eq!(count(&report(&r), "inferred"), ALBUM_UNIQUE);

    let out2 = tmp.path().join("out2");
    let mut c = colorize_cmd(&[&fixtures("photos")], &out2, &dead, &r);
    c.arg("--require-cache");
    let o = run(c);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(!stderr(&o).contains("hunter2"));
    assert!(!out2.exists(), "nothing may be written");
}

#[test]
fn redis_dying_mid_run_is_a_warning_and_the_run_completes() {
    let mut server = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    // enough distinct images to still be running when the server goes away
    let album = tmp.path().join("album");
    std::fs::create_dir_all(&album).unwrap();
    let src = std::fs::read(fixtures("photos/cameraman.png")).unwrap();
    for i in 0..60 {
        let mut b = src.clone();
        b.extend_from_slice(format!("copy {i}").as_bytes());
        std::fs::write(album.join(format!("p{i:03}.png")), b).unwrap();
    }
    let r = tmp.path().join("r.json");
    let out = tmp.path().join("out");
    let mut c = colorize_cmd(&[&album], &out, &server.url(), &r);
    c.args(["--size", "256"])
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let start = Instant::now();
    // wait for the first result to land, then kill the server
    while server.cli(&["DBSIZE"]).trim() == "0" && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    server.stop();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("warning"), "{}", stderr(&o));
    let rep = report(&r);
    assert_eq!(rep.len(), 60);
    assert_eq!(tree(&out).len(), 60, "every image written");
}

#[test]
fn cache_stats_and_clear_on_every_backend() {
    let server = RedisServer::start();
    let cluster = RedisCluster::start();
    let tmp = tempfile::tempdir().unwrap();
    let disk = format!("disk:{}", tmp.path().join("cache").display());
    for spec in [disk, server.url(), cluster.spec()] {
        let o = run(colorize_cmd(
            &[&fixtures("photos")],
            &tmp.path().join(format!("out-{}", spec.len())),
            &spec,
            &tmp.path().join("r.json"),
        ));
        assert!(o.status.success(), "{spec}: {}", stderr(&o));
        let stats = |spec: &str| {
            let o = ddcolor()
                .args(["cache", "stats", "--cache", spec])
                .output()
                .unwrap();
            assert!(o.status.success(), "{spec}: {}", stderr(&o));
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        let s = stats(&spec);
        assert!(
            s.contains(&format!("entries: {ALBUM_UNIQUE}")),
            "{spec}: {s}"
        );
        let o = ddcolor()
            .args(["cache", "clear", "--cache", &spec])
            .output()
            .unwrap();
        assert!(o.status.success(), "{spec}: {}", stderr(&o));
        assert!(stats(&spec).contains("entries: 0"), "{spec}");
    }
}

#[test]
fn a_readonly_cache_is_read_but_never_written() {
    let server = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().join("r.json");
    let photo = fixtures("photos/coffee.jpg");
    let mut c = colorize_cmd(&[&photo], &tmp.path().join("a"), &server.url(), &r);
    c.arg("--cache-readonly");
    assert!(run(c).status.success());
    assert_eq!(server.cli(&["DBSIZE"]).trim(), "0");
    assert!(run(colorize_cmd(
        &[&photo],
        &tmp.path().join("b"),
        &server.url(),
        &r
    ))
    .status
    .success());
    let mut c = colorize_cmd(&[&photo], &tmp.path().join("c"), &server.url(), &r);
    c.arg("--cache-readonly");
    assert!(run(c).status.success());
    assert_eq!(count(&report(&r), "cached"), 1);
}
