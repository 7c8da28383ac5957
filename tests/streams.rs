//! Streams and hostile input, second round (#25): a full or closed stderr, a closed stdout, an
//! overflowing --max-pixels, a folder symlink inside the output tree, ACL users that may SET but
//! not run scripts or DEL, and the smaller ones. Real processes, real redis-server.
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::batch::{colorize_cmd, count, ddcolor, disk_spec as disk, report, run, stderr};
use crate::redis_util::{RedisConfig, RedisServer};
use crate::stream::gray_album;
use crate::util::{fixtures, golden};

/// Wait for `c` (already given its streams), or kill it after `limit` and fail: a hang is the
/// defect under test.
fn wait_within(mut c: Command, limit: Duration) -> std::process::ExitStatus {
    let mut child = c.spawn().unwrap();
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The write end of a pipe whose read end is already closed: every write fails (EPIPE).
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer
}

fn dev_full() -> std::fs::File {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap()
}

fn files_in(dir: &Path) -> usize {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .count()
}

// 1. stderr that cannot be written

#[test]
fn a_full_or_closed_stderr_never_blocks_panics_or_loses_a_result() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    gray_album(&album, 6, 64);
    // an unreadable file: its error line is one more message to lose
    std::fs::write(album.join("broken.png"), b"not a png").unwrap();
    let cache = disk(&tmp.path().join("cache"));
    for (name, dry) in [
        ("full", false),
        ("closed", false),
        ("full-dry", true),
        ("closed-dry", true),
    ] {
        let out = tmp.path().join(format!("out-{name}"));
        let r = tmp.path().join(format!("{name}.json"));
        let m = tmp.path().join(format!("{name}.prom"));
        let mut c = colorize_cmd(&[&album], &out, &cache, &r);
        c.arg("--metrics-file").arg(&m).stdout(Stdio::null());
        if dry {
            c.arg("--dry-run");
        }
        if name.starts_with("full") {
            c.stderr(dev_full());
        } else {
            c.stderr(closed_pipe());
        }
        let status = wait_within(c, Duration::from_secs(120));
        // the exit code says what happened to the images: one failed (a dry run reads none)
        let code = if dry { 0 } else { 1 };
        assert_eq!(status.code(), Some(code), "{name}: {status:?}");
        if dry {
            continue;
        }
        let rep = report(&r);
        assert_eq!(rep.len(), 7, "{name}: {rep:?}");
        assert_eq!(count(&rep, "failed"), 1, "{name}");
        assert_eq!(files_in(&out), 6, "{name}");
        let metrics = std::fs::read_to_string(&m).unwrap();
        assert!(metrics.contains("ddcolor_files_total"), "{name}: {metrics}");
    }
}

/// `colorize ... 2>&1 | head -1`: stdout and stderr on one pipe whose reader takes a line and
/// goes away.
#[test]
fn stdout_and_stderr_on_a_pipe_that_closes_after_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    gray_album(&album, 4, 64);
    let out = tmp.path().join("out");
    let r = tmp.path().join("r.json");
    let (reader, writer) = std::io::pipe().unwrap();
    let mut c = colorize_cmd(&[&album], &out, "none", &r);
    c.arg("--dry-run")
        .stdout(writer.try_clone().unwrap())
        .stderr(writer);
    let mut child = c.spawn().unwrap();
    drop(c);
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(reader)
            .read_line(&mut line)
            .unwrap();
    } // the reader is dropped here
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("still running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
}

// 2. stdout that closes before the image is delivered

#[test]
fn an_image_that_never_reached_a_closed_stdout_is_a_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let photo = std::fs::read(fixtures("photos/coffee.jpg")).unwrap();
    let r = tmp.path().join("r.json");
    let m = tmp.path().join("m.prom");
    let mut c = ddcolor();
    c.args(["colorize", "-", "-o", "-", "--weights"])
        .arg(golden("ddcolor-test.safetensors"))
        .args(["--size", "64", "--device", "cpu", "--cache"])
        .arg(disk(&tmp.path().join("cache")))
        .arg("--report")
        .arg(&r)
        .arg("--metrics-file")
        .arg(&m)
        .stdin(Stdio::piped())
        .stdout(closed_pipe())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    drop(c);
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        input.write_all(&photo).unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let rep = report(&r);
    assert_eq!(rep.len(), 1, "{rep:?}");
    assert_eq!(rep[0]["status"], "failed", "{rep:?}");
    assert!(
        rep[0]["error"]
            .as_str()
            .unwrap()
            .contains("cannot write to standard output"),
        "{rep:?}"
    );
    assert!(stderr(&o).contains("1 failed"), "{}", stderr(&o));
    let metrics = std::fs::read_to_string(&m).expect("metrics written");
    assert!(
        metrics.contains("ddcolor_files_total{status=\"failed\"} 1"),
        "{metrics}"
    );
}

// 4. --max-pixels past what sizes can hold

#[test]
fn a_max_pixels_that_would_overflow_is_refused_at_parse_time() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    gray_album(&album, 3, 64);
    for n in [
        "2305843009213693951",
        "2305843009213693952",
        "18446744073709551615",
        "10000000000000000000",
    ] {
        let out = tmp.path().join("out");
        let r = tmp.path().join("r.json");
        let mut c = colorize_cmd(&[&album], &out, "none", &r);
        c.args(["--max-pixels", n]);
        let o = run(c);
        assert_eq!(o.status.code(), Some(2), "{n}: {}", stderr(&o));
        assert!(stderr(&o).contains("1099511627776"), "{n}: {}", stderr(&o));
        assert!(!out.exists());
    }
    // the largest allowed works, each file counted as itself
    let out = tmp.path().join("out");
    let r = tmp.path().join("r.json");
    let mut c = colorize_cmd(&[&album], &out, "none", &r);
    c.args(["--max-pixels", "1099511627776"]);
    let o = run(c);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(count(&report(&r), "inferred"), 3);
}

// 6. a folder symlink inside the output tree

#[test]
fn a_symlinked_folder_in_the_output_tree_is_never_written_through() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    gray_album(&album.join("sub"), 2, 64);
    gray_album(&album, 1, 64);
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("sub")).unwrap();
    let r = tmp.path().join("r.json");
    let o = run(colorize_cmd(&[&album], &out, "none", &r));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(files_in(&elsewhere), 0, "written through the link");
    let rep = report(&r);
    assert_eq!(count(&rep, "failed"), 2, "{rep:?}");
    for l in rep.iter().filter(|l| l["status"] == "failed") {
        assert!(
            l["error"].as_str().unwrap().contains("symbolic link"),
            "{l}"
        );
    }
    assert!(out.join("img00.png").is_file());

    // the write itself refuses a link that appears after the destination was decided
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("a")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, root.join("a/b")).unwrap();
    let dest = root.join("a/b/c/x.png");
    let e = ddcolor::imageio::write_atomic_beneath(
        &root,
        &dest,
        |w| {
            w.write_all(b"x").unwrap();
            Ok(())
        },
        || {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    assert_eq!(files_in(&elsewhere), 0);
    assert!(!elsewhere.join("c").exists());
    // and writes plainly where there is no link
    ddcolor::imageio::write_atomic_beneath(
        &root,
        &root.join("a/d/e/y.png"),
        |w| {
            w.write_all(b"y").unwrap();
            Ok(())
        },
        || {},
    )
    .unwrap();
    assert_eq!(std::fs::read(root.join("a/d/e/y.png")).unwrap(), b"y");
}

// 5. ACL users that may SET but not run the lease script, or not DEL

fn acl_server() -> RedisServer {
    RedisServer::start_with(RedisConfig {
        extra_args: [
            "--user",
            "noscript",
            "on",
            ">pw",
            "~ddcolor:*",
            "+@all",
            "-@scripting",
            "--user",
            "nodel",
            "on",
            ">pw",
            "~ddcolor:*",
            "+@all",
            "-del",
            "-unlink",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    })
}

fn keys(server: &RedisServer) -> Vec<String> {
    server
        .cli(&["--scan", "--pattern", "*"])
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn require_cache_refuses_an_acl_without_scripts_or_del_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    gray_album(&album, 4, 64);
    let server = acl_server();
    for (user, command, rule) in [("noscript", "EVAL", "+eval"), ("nodel", "DEL", "+del")] {
        let spec = format!("redis://{user}:pw@127.0.0.1:{}/0", server.port);
        let out = tmp.path().join(format!("out-{user}"));
        let r = tmp.path().join(format!("{user}.json"));
        let mut c = colorize_cmd(&[&album], &out, &spec, &r);
        c.arg("--require-cache")
            .env("XDG_CACHE_HOME", tmp.path().join("xdg"));
        let t = Instant::now();
        let o = run(c);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(3), "{user}: {err}");
        assert!(t.elapsed() < Duration::from_secs(10), "{user}: {err}");
        assert!(
            err.contains(&format!("the server's ACL refused {command}")),
            "{user}: {err}"
        );
        assert!(
            err.contains(&format!("ACL SETUSER {user} {rule}")),
            "{user}: {err}"
        );
        assert!(!err.contains("did not answer"), "{user}: {err}");
        assert!(!out.exists() || files_in(&out) == 0, "{user}: written");
        assert!(keys(&server).is_empty(), "{user}: {:?}", keys(&server));
        // without --require-cache: the cache read-only, the run done
        let out = tmp.path().join(format!("lenient-{user}"));
        let mut c = colorize_cmd(&[&album], &out, &spec, &r);
        c.env("XDG_CACHE_HOME", tmp.path().join("xdg"));
        let o = run(c);
        assert_eq!(o.status.code(), Some(0), "{user}: {}", stderr(&o));
        assert!(stderr(&o).contains("read-only"), "{}", stderr(&o));
        assert_eq!(files_in(&out), 4);
        assert!(keys(&server).is_empty(), "{user}: {:?}", keys(&server));
    }
}

// 7. the smaller ones

/// A password given as `?password=` in a Redis URL is a password: never shown.
#[test]
fn a_password_in_the_url_query_is_never_shown() {
    let server = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    gray_album(&album, 1, 64);
    let secret = "Qu3ryS3cret";
    let spec = format!("redis://127.0.0.1:{}/0?password={secret}", server.port);
    let o = run(colorize_cmd(
        &[&album],
        &tmp.path().join("out"),
        &spec,
        &tmp.path().join("r.json"),
    ));
    assert!(stderr(&o).contains("password=***"), "{}", stderr(&o));
    let mut c = ddcolor();
    c.args(["cache", "stats", "--cache", &spec]);
    let s = run(c);
    for o in [&o, &s] {
        let all = format!("{}{}", stderr(o), String::from_utf8_lossy(&o.stdout));
        assert!(!all.contains(secret), "{all}");
    }
}

/// The cache keys of the images in `album`, learnt from a run under another prefix.
fn keys_of(server: &RedisServer, album: &Path, tmp: &Path) -> Vec<String> {
    let mut c = colorize_cmd(
        &[album],
        &tmp.join("learn"),
        &server.url(),
        &tmp.join("l.json"),
    );
    c.args(["--cache-prefix", "learn"]);
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    keys(server)
        .into_iter()
        .filter(|k| k.starts_with("learn:") && !k.contains(":probe:"))
        .map(|k| k.replacen("learn:", "ddcolor:", 1))
        .collect()
}

/// Six images whose leases a stopped process left, met one by one (`--files-from -` fed a
/// line at a time): the message counts all six, not the first one found.
#[test]
fn the_orphaned_lease_message_counts_every_image_waited_for() {
    let server = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    let photos = gray_album(&album, 6, 64);
    let keys = keys_of(&server, &album, tmp.path());
    assert_eq!(keys.len(), 6, "{keys:?}");
    // leases a stopped process left, lapsing in 8 s
    for k in &keys {
        server.cli(&["SET", &format!("{k}:lease"), "gone-worker", "PX", "8000"]);
    }
    let r = tmp.path().join("r.json");
    let mut c = colorize_cmd(&[], &tmp.path().join("out"), &server.url(), &r);
    c.args(["--files-from", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut list = child.stdin.take().unwrap();
    for p in &photos {
        use std::io::Write;
        writeln!(list, "{}", p.display()).unwrap();
        list.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(list);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("waiting for 6 images"), "{err}");
    assert_eq!(err.matches("waiting for").count(), 1, "said once: {err}");
    assert_eq!(count(&report(&r), "inferred"), 6);
}

fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

/// A run that skips every file still sweeps the temporary files that a killed writer left in
/// the folders it visits.
#[test]
fn an_all_skipped_run_sweeps_what_a_killed_writer_left() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    gray_album(&album.join("sub"), 2, 64);
    let out = tmp.path().join("out");
    let r = tmp.path().join("r.json");
    let cache = disk(&tmp.path().join("cache"));
    assert!(run(colorize_cmd(&[&album], &out, &cache, &r))
        .status
        .success());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().replace(['/', '.', '@'], "_"))
        .unwrap_or_else(|_| "-".into());
    let stale = out
        .join("sub")
        .join(format!(".img00.png.{}@{host}.0.ddcolor-tmp", dead_pid()));
    std::fs::write(&stale, vec![0u8; 100_000]).unwrap();
    let o = run(colorize_cmd(&[&album], &out, &cache, &r));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(count(&report(&r), "skipped"), 2);
    assert!(!stale.exists(), "the temporary file was kept");
}

/// A damaged index is moved aside and a new one started, once: the next run says nothing.
#[test]
fn a_corrupt_index_is_moved_aside_and_rebuilt_once() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    gray_album(&album, 2, 64);
    let dir = tmp.path().join("cache");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.sqlite3"), vec![0x5au8; 8192]).unwrap();
    let cache = disk(&dir);
    let r = tmp.path().join("r.json");
    let o = run(colorize_cmd(&[&album], &tmp.path().join("o1"), &cache, &r));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("moved aside"), "{}", stderr(&o));
    let o = run(colorize_cmd(&[&album], &tmp.path().join("o2"), &cache, &r));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("hash index"), "{}", stderr(&o));
    let aside = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".damaged-"))
        .count();
    assert!(aside >= 1);
}

#[test]
fn an_empty_disk_path_and_port_0_are_refused_at_parse_time() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    gray_album(&album, 1, 64);
    for spec in [
        "disk:",
        "redis://127.0.0.1:0/0",
        "redis-cluster://127.0.0.1:0",
    ] {
        let out = tmp.path().join("out");
        let o = run(colorize_cmd(
            &[&album],
            &out,
            spec,
            &tmp.path().join("r.json"),
        ));
        assert_eq!(o.status.code(), Some(2), "{spec}: {}", stderr(&o));
        assert!(!out.exists(), "{spec}");
    }
}

/// A name that is not UTF-8 is kept exactly in the report; a bidi override is escaped in
/// messages.
#[test]
fn odd_names_are_recoverable_in_the_report_and_escaped_on_the_terminal() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    gray_album(&album, 1, 64);
    let raw: &[u8] = b"caf\xe9.png";
    std::fs::rename(
        album.join("img00.png"),
        album.join(std::ffi::OsStr::from_bytes(raw)),
    )
    .unwrap();
    std::fs::write(album.join("x\u{202e}gnp.exe.png"), b"not an image").unwrap();
    let r = tmp.path().join("r.json");
    let o = run(colorize_cmd(&[&album], &tmp.path().join("out"), "none", &r));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(!err.contains('\u{202e}'), "{err}");
    assert!(err.contains("x\\u{202e}gnp.exe.png"), "{err}");
    let rep = report(&r);
    let line = rep
        .iter()
        .find(|l| l["status"] == "inferred")
        .expect("the non-UTF-8 file is colorized");
    let hex = line["path_bytes"].as_str().expect("path_bytes");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    assert!(bytes.ends_with(raw), "{line}");
    assert!(line["output_bytes"].as_str().is_some(), "{line}");
}

/// A v1 client certificate (`openssl x509 -req` without extensions) is refused saying what
/// is wrong and how to make a v3 one.
#[test]
fn a_v1_client_certificate_is_refused_with_how_to_make_a_v3_one() {
    let dir = tempfile::tempdir().unwrap();
    let tls = crate::redis_util::make_tls_files(dir.path());
    let server = RedisServer::start_with(RedisConfig {
        tls: Some(tls.clone()),
        tls_auth_clients: true,
        ..Default::default()
    });
    let openssl = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    openssl(&[
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=v1", "-keyout", "v1.key", "-out",
        "v1.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "v1.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "v1.pem",
    ]);
    let album = dir.path().join("album");
    gray_album(&album, 1, 64);
    let out = dir.path().join("out");
    let mut c = colorize_cmd(&[&album], &out, &server.url(), &dir.path().join("r.json"));
    c.arg("--require-cache")
        .arg("--cache-tls-cert")
        .arg(dir.path().join("v1.pem"))
        .arg("--cache-tls-key")
        .arg(dir.path().join("v1.key"))
        .arg("--cache-tls-ca")
        .arg(&tls.ca);
    let o = run(c);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("X.509 version 1"), "{err}");
    assert!(err.contains("-extfile"), "{err}");
    assert!(!out.exists() || files_in(&out) == 0);
}
