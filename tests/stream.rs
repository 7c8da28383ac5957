//! The streaming batch engine under the conditions an archive meets: files replaced during a
//! run, workers whose inference outlasts the lease TTL, `kill -9`, large files, and reruns with
//! nothing to infer. Real processes, real caches (disk, and a real redis-server).
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::batch::{
    colorize_cmd, count, disk_spec as disk, report, run, stderr, tree, ALBUM_UNIQUE,
};
use crate::redis_util::RedisServer;
use crate::util::fixtures;

/// `n` distinct gray PNGs of `side` pixels in `dir`: `img00.png`, `img01.png`, ...
pub fn gray_album(dir: &Path, n: usize, side: u32) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let p = dir.join(format!("img{i:02}.png"));
            gray_image(i as u32, side).save(&p).unwrap();
            p
        })
        .collect()
}

fn gray_image(seed: u32, side: u32) -> image::GrayImage {
    image::GrayImage::from_fn(side, side, |x, y| {
        let v = (x * (3 + seed) + y * (5 + 2 * seed) + seed * 37) % 256;
        image::Luma([v as u8])
    })
}

/// Files in `dir` (recursively) that are not temporary files.
fn outputs(dir: &Path) -> Vec<PathBuf> {
    if !dir.exists() {
        return Vec::new();
    }
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().to_path_buf())
        .filter(|p| !is_temp(p))
        .collect()
}

fn is_temp(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".ddcolor-tmp"))
}

/// Wait until `dir` holds at least `n` outputs (or the child ended); panics after 120 s.
fn wait_for_outputs(child: &mut Child, dir: &Path, n: usize) {
    let t = Instant::now();
    while outputs(dir).len() < n {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("ddcolor ended ({status}) before {n} outputs");
        }
        assert!(t.elapsed() < Duration::from_secs(120), "no {n} outputs");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_file_replaced_during_a_run_never_poisons_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    let files = gray_album(&album, 8, 96);
    let victim = files[6].clone();
    let original = std::fs::read(&victim).unwrap();
    let cache = disk(&tmp.path().join("cache"));
    let out = tmp.path().join("out");
    let r = tmp.path().join("r.json");

    let mut c = colorize_cmd(&[&album], &out, &cache, &r);
    c.env("DDCOLOR_TEST_INFER_SLEEP_MS", "400")
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    wait_for_outputs(&mut child, &out, 1);
    // a re-scan lands over the file (new content, renamed into place) while the run goes on
    let incoming = album.join(".incoming");
    gray_image(99, 96)
        .save_with_format(&incoming, image::ImageFormat::Png)
        .unwrap();
    std::fs::rename(&incoming, &victim).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    // the original bytes, run alone against the same cache, get their own colours
    let again = tmp.path().join("again");
    std::fs::create_dir_all(&again).unwrap();
    std::fs::write(again.join("img06.png"), &original).unwrap();
    let o = run(colorize_cmd(
        &[&again],
        &tmp.path().join("out-again"),
        &cache,
        &r,
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(colorize_cmd(
        &[&again],
        &tmp.path().join("out-fresh"),
        "none",
        &r,
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(tmp.path().join("out-again/img06.png")).unwrap(),
        std::fs::read(tmp.path().join("out-fresh/img06.png")).unwrap(),
        "the cache served the replaced file's colours for the original's hash"
    );
}

/// Four workers on one album whose inference (2.5 s) takes longer than the lease TTL (2 s): every image is
/// inferred exactly once between them (the holders renew their leases).
fn four_slow_workers(cache: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    gray_album(&album, 12, 64);
    let children: Vec<_> = (0..4)
        .map(|i| {
            let mut c = colorize_cmd(
                &[&album],
                &tmp.path().join(format!("out{i}")),
                cache,
                &tmp.path().join(format!("r{i}.json")),
            );
            c.args(["--lease-ttl", "2s"])
                .env("DDCOLOR_TEST_INFER_SLEEP_MS", "2500")
                .stderr(Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    let mut inferred = HashSet::new();
    let mut total = 0;
    for (i, child) in children.into_iter().enumerate() {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "worker {i}: {}", stderr(&o));
        let rep = report(&tmp.path().join(format!("r{i}.json")));
        assert_eq!(rep.len(), 12, "worker {i}: {rep:?}");
        for r in rep.iter().filter(|r| r["status"] == "inferred") {
            total += 1;
            inferred.insert(r["sha256"].to_string());
        }
        assert_eq!(tree(&tmp.path().join(format!("out{i}"))).len(), 12);
    }
    assert_eq!(total, 12, "{cache}: inferences across the workers");
    assert_eq!(inferred.len(), 12);
}

#[test]
fn slow_workers_renew_their_leases_disk() {
    let tmp = tempfile::tempdir().unwrap();
    four_slow_workers(&disk(tmp.path()));
}

#[test]
fn slow_workers_renew_their_leases_redis() {
    let server = RedisServer::start();
    four_slow_workers(&server.url());
}

/// A process id that is not running (a child that has exited).
fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

#[test]
fn after_kill_9_the_report_lists_every_output_and_a_rerun_leaves_no_temp_file() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    gray_album(&album, 10, 96);
    let out = tmp.path().join("out");
    let r = tmp.path().join("r.json");
    let mut c = colorize_cmd(&[&album], &out, "none", &r);
    c.env("DDCOLOR_TEST_INFER_SLEEP_MS", "300")
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    wait_for_outputs(&mut child, &out, 3);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let text = std::fs::read_to_string(&r).unwrap();
    let listed: HashSet<PathBuf> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("whole lines only"))
        .filter_map(|v| v["output"].as_str().map(PathBuf::from))
        .collect();
    let present = outputs(&out);
    assert!(present.len() >= 3);
    for p in &present {
        assert!(
            listed.contains(p),
            "{} exists but is not in the report:\n{text}",
            p.display()
        );
    }

    // temporary files that writers killed on this machine left behind
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().replace(['/', '.', '@'], "_"))
        .unwrap_or_else(|_| "-".into());
    let pid = dead_pid();
    for name in [
        format!(".img00.png.{pid}@{host}.0.ddcolor-tmp"),
        format!(".img01.png.{pid}.3.ddcolor-tmp"),
    ] {
        std::fs::write(out.join(name), vec![0u8; 1000]).unwrap();
    }
    let o = run(colorize_cmd(&[&album], &out, "none", &r));
    assert!(o.status.success(), "{}", stderr(&o));
    let left: Vec<_> = walkdir::WalkDir::new(&out)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| is_temp(e.path()))
        .map(|e| e.path().to_path_buf())
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    assert_eq!(outputs(&out).len(), 10);
}

/// Bytes this process has read so far (`rchar` of /proc/PID/io).
#[cfg(target_os = "linux")]
fn bytes_read(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn the_first_output_of_a_folder_of_large_files_comes_early() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    let files = gray_album(&album, 16, 64);
    // scans padded to 32 MB (data after a PNG's end is ignored by decoders); about 3 of the 16
    // are read when the first output lands, the old engine read all 16 first
    let mut total = 0u64;
    for f in &files {
        let mut b = std::fs::read(f).unwrap();
        b.resize(32 << 20, 0);
        std::fs::write(f, &b).unwrap();
        total += b.len() as u64;
    }
    let out = tmp.path().join("out");
    let mut c = colorize_cmd(&[&album], &out, "none", &tmp.path().join("r.json"));
    c.arg("-q").stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    wait_for_outputs(&mut child, &out, 1);
    let read = bytes_read(child.id());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        (read as f64) < 0.3 * total as f64,
        "{read} of {total} bytes were read before the first output"
    );
}

#[test]
fn a_run_with_nothing_to_infer_never_loads_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = disk(&tmp.path().join("cache"));
    let album = fixtures("photos");
    let r = tmp.path().join("r.json");
    let prom = tmp.path().join("m.prom");
    let o = run(colorize_cmd(
        &[&album],
        &tmp.path().join("cold"),
        &cache,
        &r,
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("ddcolor: loaded"), "{}", stderr(&o));

    // everything cached, a new output folder: outputs written, no weights read
    let warm = tmp.path().join("warm");
    let mut c = colorize_cmd(&[&album], &warm, &cache, &r);
    c.arg("--metrics-file").arg(&prom);
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("ddcolor: loaded"), "{}", stderr(&o));
    assert_eq!(count(&report(&r), "cached"), ALBUM_UNIQUE);
    assert_eq!(tree(&warm), tree(&tmp.path().join("cold")));
    let metrics = std::fs::read_to_string(&prom).unwrap();
    assert!(metrics.contains("ddcolor_model_loaded 0"), "{metrics}");

    // every output present: nothing is even hashed
    let o = run(colorize_cmd(&[&album], &warm, &cache, &r));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("ddcolor: loaded"), "{}", stderr(&o));
    let rep = report(&r);
    assert!(rep.iter().all(|r| r["status"] == "skipped"), "{rep:?}");

    // a dry run over the indexed album reads no image and loads no model
    let mut c = colorize_cmd(&[&album], &tmp.path().join("dry"), &cache, &r);
    c.arg("--dry-run");
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    let plan = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        plan.lines().filter(|l| l.starts_with("cache\t")).count(),
        ALBUM_UNIQUE,
        "{plan}"
    );
    assert!(!stderr(&o).contains("ddcolor: loaded"), "{}", stderr(&o));
}
