//! Hostile inputs, bad settings and sick servers, each met the way the world brings it: real
//! FIFOs, real environment variables, a real redis-server frozen with SIGSTOP, a real memory
//! limit, damaged files. Each gets a clear answer, fast (GUIDE.md "Faults").
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::batch::{colorize_cmd, count, ddcolor, disk_spec as disk, report, run, stderr};
use crate::redis_util::RedisServer;
use crate::stream::gray_album;
use crate::util::fixtures;

/// Run `c` to the end, or kill it after `limit` and fail: a hang is the defect under test.
fn run_within(mut c: Command, limit: Duration) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    c.stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    let mut child = c.spawn().unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "still running after {limit:?}; stderr so far:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read(&err).unwrap(),
    }
}

fn one_photo(dir: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::copy(fixtures("photos/coffee.jpg"), &p).unwrap();
    p
}

fn error_lines(o: &Output) -> Vec<String> {
    stderr(o)
        .lines()
        .filter(|l| l.starts_with("ddcolor: error:"))
        .map(str::to_owned)
        .collect()
}

// 1. FIFOs

#[test]
fn a_fifo_named_directly_or_listed_fails_alone_and_never_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let good = one_photo(&input, "good.jpg");
    let fifo = input.join("fifo.jpg");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path we own
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let cache = disk(&tmp.path().join("cache"));

    // named on the command line
    let out = tmp.path().join("out");
    let r = tmp.path().join("r.json");
    let o = run_within(
        colorize_cmd(&[&fifo, &good], &out, &cache, &r),
        Duration::from_secs(60),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(out.join("good.jpg").is_file(), "{}", stderr(&o));
    let rep = report(&r);
    let failed: Vec<_> = rep.iter().filter(|l| l["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{rep:?}");
    assert!(failed[0]["error"]
        .as_str()
        .unwrap()
        .contains("not a regular file"));

    // through --files-from - (the guide's find | ddcolor recipe), NUL-separated
    let out = tmp.path().join("out-list");
    let list = tmp.path().join("list");
    std::fs::write(
        &list,
        format!("{}\0{}\0", fifo.display(), good.display()).as_bytes(),
    )
    .unwrap();
    let mut c = colorize_cmd(&[], &out, &cache, &r);
    c.args(["--files-from", "-", "-0"])
        .stdin(std::fs::File::open(&list).unwrap());
    let o = run_within(c, Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(out.join("good.jpg").is_file(), "{}", stderr(&o));
    assert_eq!(count(&report(&r), "failed"), 1);
}

// 2. secrets

#[test]
fn help_and_messages_never_show_the_cache_password() {
    let secret = "S3cr3tPa55";
    let spec = format!("redis://:{secret}@127.0.0.1:1/0");
    for args in [
        &["colorize", "--help"][..],
        &["colorize", "-h"],
        &["cache", "stats", "--help"],
        &["cache", "clear", "--help"],
        &["cache", "stats"],
        &["man"],
    ] {
        let mut c = ddcolor();
        c.args(args).env("DDCOLOR_CACHE", &spec);
        let o = run(c);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            !all.contains(secret),
            "{args:?} printed the password:\n{all}"
        );
        if args.contains(&"--help") {
            assert!(all.contains("DDCOLOR_CACHE"), "{args:?}: {all}");
        }
    }
    // a run with the unreachable cache: warning, report and metrics
    let tmp = tempfile::tempdir().unwrap();
    let good = one_photo(&tmp.path().join("in"), "a.jpg");
    let r = tmp.path().join("r.json");
    let prom = tmp.path().join("m.prom");
    let mut c = colorize_cmd(&[&good], &tmp.path().join("out"), &spec, &r);
    c.arg("--metrics-file")
        .arg(&prom)
        .env("XDG_CACHE_HOME", tmp.path().join("xdg"));
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("warning: cache unreachable"));
    for text in [
        stderr(&o),
        std::fs::read_to_string(&r).unwrap(),
        std::fs::read_to_string(&prom).unwrap(),
    ] {
        assert!(!text.contains(secret), "{text}");
    }
}

// 3. a frozen Redis

/// What a run against a Redis frozen mid-run left.
struct FrozenRun {
    status: std::process::ExitStatus,
    stderr: String,
    out: PathBuf,
    report: PathBuf,
}

/// A 40-image run (inference slowed to 100 ms an image) against a real redis-server that is
/// frozen with SIGSTOP once the first outputs are reported; the run must end within 75 s of
/// the freeze (without the breaker: a timeout per remaining image, minutes in all).
fn run_with_redis_frozen_mid_run(tmp: &Path, extra: &[&str]) -> FrozenRun {
    let album = tmp.join("album");
    gray_album(&album, 40, 48);
    let server = RedisServer::start();
    let out = tmp.join("out");
    let r = tmp.join("r.json");
    let err = tmp.join("stderr");
    let mut c = colorize_cmd(&[&album], &out, &server.url(), &r);
    c.args(extra)
        .env("DDCOLOR_TEST_INFER_SLEEP_MS", "100")
        .env("XDG_CACHE_HOME", tmp.join("xdg"))
        .stderr(std::fs::File::create(&err).unwrap())
        .stdout(Stdio::null());
    let mut child = c.spawn().unwrap();
    let t = Instant::now();
    while report_lines(&r) < 3 {
        assert!(t.elapsed() < Duration::from_secs(60), "no progress");
        assert!(child.try_wait().unwrap().is_none(), "ended too early");
        std::thread::sleep(Duration::from_millis(10));
    }
    server.signal(libc::SIGSTOP);
    let frozen = Instant::now();
    let limit = Duration::from_secs(75);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if frozen.elapsed() > limit {
            let _ = child.kill();
            server.signal(libc::SIGCONT);
            panic!(
                "the run was still waiting on the frozen Redis after {limit:?}:\n{}",
                std::fs::read_to_string(&err).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    server.signal(libc::SIGCONT);
    FrozenRun {
        status,
        stderr: std::fs::read_to_string(&err).unwrap(),
        out,
        report: r,
    }
}

fn report_lines(p: &Path) -> usize {
    std::fs::read_to_string(p).map_or(0, |s| s.lines().count())
}

/// The breaker trips after a few timeouts and the run finishes on the fallback cache, warning
/// once, every failed operation counted.
#[test]
fn a_redis_frozen_mid_run_costs_seconds_not_a_timeout_per_image() {
    let tmp = tempfile::tempdir().unwrap();
    let prom = tmp.path().join("m.prom");
    let run =
        run_with_redis_frozen_mid_run(tmp.path(), &["--metrics-file", prom.to_str().unwrap()]);
    let text = run.stderr;
    assert!(run.status.success(), "{text}");
    assert_eq!(
        text.matches("the cache stopped answering").count(),
        1,
        "one warning:\n{text}"
    );
    let rep = report(&run.report);
    assert_eq!(rep.len(), 40);
    assert_eq!(count(&rep, "inferred"), 40, "{text}");
    assert_eq!(std::fs::read_dir(&run.out).unwrap().count(), 40);
    // every operation that failed before the breaker tripped is counted, by kind
    let m = std::fs::read_to_string(&prom).unwrap();
    let value = |line: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(line)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{line} in\n{m}"))
    };
    let total = value("ddcolor_cache_errors");
    let by: u64 = ["get", "put", "lease", "release"]
        .iter()
        .map(|op| value(&format!("ddcolor_cache_operation_errors{{op=\"{op}\"}}")))
        .sum();
    // (the call that trips the breaker is answered by the fallback: not an error)
    assert!(total >= 1, "the failed operations were not counted:\n{m}");
    assert_eq!(total, by, "{m}");
    assert!(text.contains(&format!(", {total} errors: ")), "{text}");
}

#[test]
fn with_require_cache_a_frozen_redis_stops_the_run_with_exit_3() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_with_redis_frozen_mid_run(tmp.path(), &["--require-cache"]);
    assert_eq!(run.status.code(), Some(3), "{}", run.stderr);
    assert!(run.stderr.contains("--require-cache"), "{}", run.stderr);
    // every output written is in the report, and the run did not go on to the end
    let rep = report(&run.report);
    let written = std::fs::read_dir(&run.out)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".ddcolor-tmp"))
        .count();
    assert_eq!(
        written,
        rep.iter().filter(|l| l["output"].is_string()).count()
    );
    assert!(written < 40, "{written} outputs: the run went on");
}

// 4. allocation failure

/// A header that claims 65000x65000 RGB pixels, with --max-pixels raised past it, under a 4 GiB
/// address-space limit: that file fails, and the others are done.
#[test]
fn an_allocation_that_fails_is_that_files_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let good = one_photo(&input, "good.jpg");
    let huge = input.join("huge.png");
    std::fs::write(&huge, png_with_header(65000, 65000)).unwrap();
    let out = tmp.path().join("out");
    let r = tmp.path().join("r.json");
    let mut c = colorize_cmd(&[&huge, &good], &out, "none", &r);
    c.args(["--max-pixels", "20000000000"]);
    crate::util::limit_address_space(&mut c, 4 << 30);
    let o = run(c);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(out.join("good.jpg").is_file());
    let rep = report(&r);
    let failed: Vec<_> = rep.iter().filter(|l| l["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{rep:?}");
    assert!(
        failed[0]["error"].as_str().unwrap().contains("memory"),
        "{rep:?}"
    );
}

/// A PNG whose header claims `w`x`h` 8-bit RGB pixels, with a little image data.
pub fn png_with_header(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(data);
        out.extend(kind);
        out.extend(data);
        out.extend(crc.finalize().to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut z, &[0u8; 4096]).unwrap();
    chunk(&mut png, b"IDAT", &z.finish().unwrap());
    chunk(&mut png, b"IEND", b"");
    png
}

// 5. malformed cache specs

#[test]
fn a_cache_spec_that_cannot_be_parsed_is_exit_2_before_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let good = one_photo(&tmp.path().join("in"), "a.jpg");
    for spec in [
        "redus://x",
        "redis://127.0.0.1:99999/0",
        "redis://127.0.0.1:6379/notanumber",
        "redis://127.0.0.1:6379/-1",
        "redis-cluster://127.0.0.1:7000/3",
        "/tmp/some/dir",
    ] {
        let out = tmp.path().join("out");
        let r = tmp.path().join("r.json");
        let o = run(colorize_cmd(&[&good], &out, spec, &r));
        assert_eq!(o.status.code(), Some(2), "{spec}: {}", stderr(&o));
        assert!(stderr(&o).contains("--cache"), "{spec}: {}", stderr(&o));
        assert!(!out.exists(), "{spec}: something was done");
        assert!(!r.exists(), "{spec}: a report was started");
    }
}

// 6. output = input

#[test]
fn an_output_folder_that_is_an_input_folder_is_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    one_photo(&album, "a.jpg");
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&album, &link).unwrap();
    let r = tmp.path().join("r.json");
    for out in [&album, &link] {
        let o = run(colorize_cmd(&[&album], out, "none", &r));
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("is the input folder"), "{}", stderr(&o));
        assert!(stderr(&o).contains("nothing was done"), "{}", stderr(&o));
    }
    assert_eq!(std::fs::read_dir(&album).unwrap().count(), 1);
    // a folder listed in --files-from that is the output folder: a failure that says why
    let list = tmp.path().join("list");
    std::fs::write(&list, format!("{}\n", album.display())).unwrap();
    let mut c = colorize_cmd(&[], &album, "none", &r);
    c.arg("--files-from").arg(&list);
    let o = run(c);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is the output folder"),
        "{}",
        stderr(&o)
    );
}

// 7. an output folder that cannot be created

#[test]
fn an_output_folder_that_cannot_be_written_is_exit_2_before_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let good = one_photo(&tmp.path().join("in"), "a.jpg");
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"not a folder").unwrap();
    // weights that would fail to load: the output check must come first
    let junk = tmp.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    for out in [file.clone(), file.join("below")] {
        let r = tmp.path().join("r.json");
        let mut c = colorize_cmd(&[&good], &out, "none", &r);
        c.arg("--weights").arg(&junk);
        let o = run(c);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let text = stderr(&o);
        assert!(
            text.contains(&format!("output folder {}", out.display())),
            "{text}"
        );
        assert!(!text.contains("checkpoint"), "the model came first: {text}");
        // nothing was read or inferred
        assert!(!r.exists() || report(&r).is_empty());
    }
    // a read-only folder (permissions do not bind root: then a read-only bind is not ours to
    // make, and the two cases above stand for it)
    // SAFETY: geteuid(2) has no preconditions
    if unsafe { libc::geteuid() } != 0 {
        use std::os::unix::fs::PermissionsExt;
        let ro = tmp.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        let out = ro.join("out");
        let o = run(colorize_cmd(&[&good], &out, "none", &tmp.path().join("r2")));
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("output folder"), "{}", stderr(&o));
    }
}

// 8. forged lines

#[test]
fn file_names_cannot_forge_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let evil = input.join("x\nddcolor: error: fake.jpg");
    std::fs::write(&evil, b"not an image").unwrap();
    let esc = input.join("y\u{1b}[2Kz\r.jpg");
    std::fs::write(&esc, b"not an image either").unwrap();
    let r = tmp.path().join("r.json");
    let o = run(colorize_cmd(&[&input], &tmp.path().join("out"), "none", &r));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let text = stderr(&o);
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("ddcolor: error: fake.jpg")),
        "a forged line:\n{text}"
    );
    assert!(!text.contains('\u{1b}') && !text.contains('\r'), "{text:?}");
    assert_eq!(error_lines(&o).len(), 2, "{text}");
    assert!(text.contains("x\\nddcolor: error: fake.jpg"), "{text}");
    // the report keeps the true names (JSON escapes them)
    let names: Vec<String> = report(&r)
        .iter()
        .map(|l| l["path"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        names.contains(&evil.to_str().unwrap().to_owned()),
        "{names:?}"
    );
    // the dry-run plan on stdout: one line per input
    let mut c = colorize_cmd(&[&input], &tmp.path().join("out"), "none", &r);
    c.arg("--dry-run");
    let o = run(c);
    let plan = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(plan.lines().count(), 2, "{plan}");
    assert!(!plan.contains('\r'));
}

// 9. hit counters

/// Three workers on one album: each image counts once per worker, by how it was served, so a
/// worker's hits are its `cached` images and its misses its `inferred` ones, and the misses of
/// all workers add up to the images (each inferred once).
#[test]
fn hits_and_misses_count_each_image_once_by_how_it_was_served() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    gray_album(&album, 12, 48);
    let cache = disk(&tmp.path().join("cache"));
    let children: Vec<_> = (0..3)
        .map(|i| {
            let mut c = colorize_cmd(
                &[&album],
                &tmp.path().join(format!("out{i}")),
                &cache,
                &tmp.path().join(format!("r{i}.json")),
            );
            c.arg("--metrics-file")
                .arg(tmp.path().join(format!("m{i}.prom")))
                .env("DDCOLOR_TEST_INFER_SLEEP_MS", "300")
                .stderr(Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    let mut misses = 0.0;
    let mut waited = 0usize;
    for (i, child) in children.into_iter().enumerate() {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let m = std::fs::read_to_string(tmp.path().join(format!("m{i}.prom"))).unwrap();
        let metric = |name: &str| -> f64 {
            m.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("{name} in\n{m}"))
        };
        let rep = report(&tmp.path().join(format!("r{i}.json")));
        assert_eq!(
            metric("ddcolor_cache_hits"),
            count(&rep, "cached") as f64,
            "{m}"
        );
        assert_eq!(
            metric("ddcolor_cache_misses"),
            count(&rep, "inferred") as f64,
            "{m}"
        );
        misses += metric("ddcolor_cache_misses");
        waited += count(&rep, "cached");
    }
    assert_eq!(misses, 12.0, "each image inferred once in all");
    assert!(
        waited > 0,
        "no worker was served by another: the test proves nothing"
    );
}

// 10. damaged files

#[test]
fn damaged_files_fail_saying_they_are_damaged() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let good = one_photo(&input, "good.jpg");
    // a JPEG whose frame header was edited to claim 15000x16000
    let mut jpeg = std::fs::read(fixtures("photos/coffee.jpg")).unwrap();
    let sof = sof_offset(&jpeg);
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0x3E, 0x80, 0x3A, 0x98]);
    std::fs::write(input.join("edited-header.jpg"), &jpeg).unwrap();
    // a TIFF whose strips point past the end of the file
    let mut tif = std::fs::read(fixtures("photos/coffee-scan-16bit.tif")).unwrap();
    move_strips_to_the_end(&mut tif);
    std::fs::write(input.join("bogus-ifd.tif"), &tif).unwrap();
    // cut short: a PNG, a TIFF and a JPEG
    for (name, src) in [
        ("cut.png", "photos/cameraman.png"),
        ("cut.tif", "photos/coffee-scan-16bit.tif"),
        ("cut.jpg", "photos/chelsea.jpg"),
    ] {
        let b = std::fs::read(fixtures(src)).unwrap();
        std::fs::write(input.join(name), &b[..b.len() * 2 / 3]).unwrap();
    }
    let out = tmp.path().join("out");
    let r = tmp.path().join("r.json");
    let o = run(colorize_cmd(&[&input], &out, "none", &r));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let rep = report(&r);
    assert_eq!(count(&rep, "failed"), 5, "{rep:?}");
    for l in rep.iter().filter(|l| l["status"] == "failed") {
        let e = l["error"].as_str().unwrap();
        assert!(
            e.contains("damaged") || e.contains("truncated"),
            "{}: {e}",
            l["path"]
        );
    }
    // only the good photo has an output
    let outputs: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert_eq!(outputs.len(), 1);
    assert!(out.join(good.file_name().unwrap()).is_file());
}

/// Byte offset of the first SOF0/1/2 marker of a JPEG.
fn sof_offset(b: &[u8]) -> usize {
    let mut i = 2;
    loop {
        assert_eq!(b[i], 0xFF);
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        if matches!(b[i + 1], 0xC0..=0xC2) {
            return i;
        }
        i += 2 + len;
    }
}

/// Point every strip of a little-endian TIFF's first IFD near the end of the file.
fn move_strips_to_the_end(t: &mut [u8]) {
    let u16_at = |t: &[u8], i: usize| u16::from_le_bytes([t[i], t[i + 1]]) as usize;
    let u32_at = |t: &[u8], i: usize| u32::from_le_bytes(t[i..i + 4].try_into().unwrap()) as usize;
    assert_eq!(&t[..2], b"II");
    let ifd = u32_at(t, 4);
    let near_end = (t.len() - 50) as u32;
    for k in 0..u16_at(t, ifd) {
        let e = ifd + 2 + 12 * k;
        if u16_at(t, e) == 273 {
            let (typ, n, val) = (u16_at(t, e + 2), u32_at(t, e + 4), u32_at(t, e + 8));
            assert_eq!(typ, 4, "LONG strip offsets");
            if n == 1 {
                t[e + 8..e + 12].copy_from_slice(&near_end.to_le_bytes());
            } else {
                for j in 0..n {
                    t[val + 4 * j..val + 4 * j + 4].copy_from_slice(&near_end.to_le_bytes());
                }
            }
        }
    }
}

/// The breaker itself, through the library: a frozen server costs a few timed-out calls, then
/// every call fails at once and the cache says why it is down; a [`Failover`] around it
/// answers from its fallback.
#[test]
fn a_frozen_redis_trips_the_breaker_and_the_failover_takes_over() {
    use ddcolor::cache::failover::Failover;
    use ddcolor::cache::{Cache, CacheKey, CacheOptions, CacheSpec, LeaseOutcome, Lookup, Miss};
    let server = RedisServer::start();
    let spec = CacheSpec::parse(&server.url()).unwrap();
    let opts = CacheOptions::default();
    let direct = spec.open(&opts).unwrap();
    let wrapped = Failover::new(spec.open(&opts).unwrap(), &CacheSpec::None, &opts);
    let k = CacheKey::new("faults", "model", 64, &"ab".repeat(32));
    direct.put(&k, b"value", None).unwrap();
    assert!(direct.down().is_none());
    server.signal(libc::SIGSTOP);
    let t = Instant::now();
    for _ in 0..ddcolor::cache::redis::BREAKER_STRIKES {
        assert!(matches!(
            direct.get_many(std::slice::from_ref(&k))[0],
            Lookup::Miss(Miss::Error(_))
        ));
    }
    let tripped = t.elapsed();
    let why = direct.down().expect("down after the strikes");
    assert!(why.contains("not answering"), "{why}");
    let t = Instant::now();
    assert!(matches!(
        direct.get_many(std::slice::from_ref(&k))[0],
        Lookup::Miss(Miss::Error(_))
    ));
    assert!(direct.try_lease(&k, Duration::from_secs(5)).is_err());
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "a down cache fails at once ({:?}; the strikes took {tripped:?})",
        t.elapsed()
    );
    // the failover: strikes on its own connection, then the fallback (here `none`) answers
    for _ in 0..ddcolor::cache::redis::BREAKER_STRIKES {
        let _ = wrapped.get_many(std::slice::from_ref(&k));
    }
    assert!(wrapped.down().unwrap().contains("using none"));
    assert_eq!(
        wrapped.get_many(std::slice::from_ref(&k))[0],
        Lookup::Miss(Miss::Absent)
    );
    assert!(matches!(
        wrapped.try_lease(&k, Duration::from_secs(5)),
        Ok(LeaseOutcome::Acquired(_))
    ));
    server.signal(libc::SIGCONT);
}

/// An ACL user whose keys are `ddcolor:*`, with another --cache-prefix: the cache answers but
/// refuses every key. Without --require-cache the run goes on, read-only; with it, exit 3 and
/// nothing done.
#[test]
fn require_cache_means_the_cache_answers_and_takes_writes() {
    use crate::redis_util::RedisConfig;
    let tmp = tempfile::tempdir().unwrap();
    let good = one_photo(&tmp.path().join("in"), "a.jpg");
    let server = RedisServer::start_with(RedisConfig {
        extra_args: ["--user", "ddc", "on", ">s3cret", "~ddcolor:*", "+@all"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    let spec = format!("redis://ddc:s3cret@127.0.0.1:{}/0", server.port);
    let run_with = |name: &str, extra: &[&str]| {
        let out = tmp.path().join(name);
        let r = tmp.path().join(format!("{name}.json"));
        let mut c = colorize_cmd(&[&good], &out, &spec, &r);
        c.args(["--cache-prefix", "other"])
            .args(extra)
            .env("XDG_CACHE_HOME", tmp.path().join("xdg"));
        (run(c), out, r)
    };
    let (o, out, _) = run_with("lenient", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("read-only"), "{}", stderr(&o));
    // the message names the refused prefix and the one the user's key patterns allow
    assert!(stderr(&o).contains("`other:`"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--cache-prefix ddcolor would fit"),
        "{}",
        stderr(&o)
    );
    assert!(out.join("a.jpg").is_file());
    let (o, out, r) = run_with("strict", &["--require-cache"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("--require-cache"), "{}", stderr(&o));
    assert!(!out.exists(), "something was written");
    assert!(!r.exists() || report(&r).is_empty());
    assert!(!stderr(&o).contains("s3cret"));
    // the right prefix works, and with --cache-readonly a prefix it may only read is enough
    let (o, _, r) = run_with("readonly", &["--require-cache", "--cache-readonly"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "reads of `other:*` are refused too: {}",
        stderr(&o)
    );
    let _ = r;
}

/// `cache stats` for an ACL user that may not run CONFIG: the eviction policy line says it could
/// not be read, instead of disappearing.
#[test]
fn cache_stats_says_when_the_eviction_policy_cannot_be_read() {
    use crate::redis_util::RedisConfig;
    let server = RedisServer::start_with(RedisConfig {
        extra_args: ["--user", "nocfg", "on", ">pw", "~*", "+@all", "-config"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    let stats = |spec: &str| {
        let mut c = ddcolor();
        c.args(["cache", "stats", "--cache", spec]);
        let o = run(c);
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let limited = stats(&format!("redis://nocfg:pw@127.0.0.1:{}/0", server.port));
    assert!(
        limited.contains("maxmemory-policy: could not be read"),
        "{limited}"
    );
    let admin = stats(&server.url());
    assert!(admin.contains("maxmemory-policy: noeviction"), "{admin}");
}

/// A Redis Cluster that is down (a master lost, its slots uncovered: cluster_state:fail):
/// --require-cache is exit 3 with nothing written; without it the run goes on.
#[test]
fn require_cache_refuses_a_cluster_that_is_down() {
    let tmp = tempfile::tempdir().unwrap();
    let good = one_photo(&tmp.path().join("in"), "a.jpg");
    let mut cluster = crate::redis_util::RedisCluster::start();
    let spec = cluster.spec();
    cluster.nodes[0].stop();
    let t = Instant::now();
    while !cluster.nodes[1]
        .cli(&["cluster", "info"])
        .contains("cluster_state:fail")
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the cluster never noticed its lost master"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let go = |name: &str, extra: &[&str]| {
        let out = tmp.path().join(name);
        let mut c = colorize_cmd(
            &[&good],
            &out,
            &spec,
            &tmp.path().join(format!("{name}.json")),
        );
        c.args(extra).env("XDG_CACHE_HOME", tmp.path().join("xdg"));
        (run(c), out)
    };
    let (o, out) = go("strict", &["--require-cache"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(!out.exists(), "something was written");
    let (o, out) = go("lenient", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.join("a.jpg").is_file());
}
