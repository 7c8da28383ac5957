//! The batch colorizer end to end: the real binary over the sample album, with real caches.
//! The Redis variants live in `batch_redis.rs`; the shared bodies are here.
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::util::{fixtures, golden};

/// Images in the album, and distinct images among them (two are byte-identical copies).
pub const ALBUM_FILES: usize = 11;
pub const ALBUM_UNIQUE: usize = 9;

pub fn ddcolor() -> Command {
    let mut c = Command::new(crate::util::ddcolor_bin());
    c.env_remove("DDCOLOR_WEIGHTS").env_remove("DDCOLOR_CACHE");
    // a test suite run inside a Slurm array task or a Kubernetes Indexed Job is not sharded;
    // the TLS files and trust store are the test's to set
    for v in [
        "SLURM_ARRAY_TASK_ID",
        "JOB_COMPLETION_INDEX",
        "DDCOLOR_SHARDS",
        "DDCOLOR_CACHE_TLS_CERT",
        "DDCOLOR_CACHE_TLS_KEY",
        "DDCOLOR_CACHE_TLS_CA",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ] {
        c.env_remove(v);
    }
    c
}

/// `ddcolor colorize` with the golden test model at size 64 and a report; extra args appended.
pub fn colorize_cmd(inputs: &[&Path], out: &Path, cache: &str, report: &Path) -> Command {
    let mut c = ddcolor();
    c.arg("colorize")
        .args(inputs)
        .arg("--output")
        .arg(out)
        .arg("--weights")
        .arg(golden("ddcolor-test.safetensors"))
        .args([
            "--size", "64", "--device", "cpu", "--cache", cache, "--report",
        ])
        .arg(report);
    c
}

pub fn run(mut c: Command) -> Output {
    c.output().expect("run ddcolor")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The NDJSON report, one object per input.
pub fn report(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn count(report: &[Value], status: &str) -> usize {
    report.iter().filter(|r| r["status"] == status).count()
}

/// Every file under `dir`, relative path -> bytes.
pub fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            out.insert(
                e.path().strip_prefix(dir).unwrap().to_path_buf(),
                std::fs::read(e.path()).unwrap(),
            );
        }
    }
    out
}

/// Cold run then warm run on the album with one cache: one inference per unique image, the
/// tree mirrored, then zero inferences and byte-identical outputs.
pub fn cold_then_warm(cache: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let album = fixtures("photos");
    let (cold, warm) = (tmp.path().join("cold"), tmp.path().join("warm"));
    let (r1, r2) = (tmp.path().join("r1.json"), tmp.path().join("r2.json"));

    let o = run(colorize_cmd(&[&album], &cold, cache, &r1));
    assert_eq!(o.status.code(), Some(0), "cold: {}", stderr(&o));
    let rep = report(&r1);
    assert_eq!(rep.len(), ALBUM_FILES);
    assert_eq!(count(&rep, "inferred"), ALBUM_UNIQUE, "{cache}: {rep:?}");
    assert_eq!(count(&rep, "duplicate"), ALBUM_FILES - ALBUM_UNIQUE);
    let cold_tree = tree(&cold);
    assert!(cold_tree.contains_key(Path::new("1950s/cat-on-the-porch.jpg")));
    assert!(cold_tree.contains_key(Path::new("astronaut-copy-from-cousin.jpg")));
    assert_eq!(cold_tree.len(), ALBUM_FILES);
    // byte-identical inputs give byte-identical outputs
    assert_eq!(
        cold_tree[Path::new("astronaut.jpg")],
        cold_tree[Path::new("astronaut-copy-from-cousin.jpg")]
    );

    let o = run(colorize_cmd(&[&album], &warm, cache, &r2));
    assert_eq!(o.status.code(), Some(0), "warm: {}", stderr(&o));
    let rep = report(&r2);
    assert_eq!(
        count(&rep, "inferred"),
        0,
        "{cache}: warm run inferred: {rep:?}"
    );
    assert_eq!(count(&rep, "cached"), ALBUM_UNIQUE);
    assert_eq!(
        tree(&warm),
        cold_tree,
        "{cache}: a hit writes what a miss wrote"
    );
}

/// Three processes started together on one album and one cache: exactly one inference per
/// unique image between them, and each one's outputs equal a single run's.
pub fn three_processes(cache: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let album = fixtures("photos");
    let single = tmp.path().join("single");
    let o = run(colorize_cmd(
        &[&album],
        &single,
        "none",
        &tmp.path().join("single.json"),
    ));
    assert!(o.status.success(), "{}", stderr(&o));

    let children: Vec<_> = (0..3)
        .map(|i| {
            let mut c = colorize_cmd(
                &[&album],
                &tmp.path().join(format!("out{i}")),
                cache,
                &tmp.path().join(format!("r{i}.json")),
            );
            c.stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    let mut inferred = 0;
    let mut shas = HashSet::new();
    for (i, child) in children.into_iter().enumerate() {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "process {i}: {}", stderr(&o));
        let rep = report(&tmp.path().join(format!("r{i}.json")));
        assert_eq!(rep.len(), ALBUM_FILES);
        for r in rep.iter().filter(|r| r["status"] == "inferred") {
            inferred += 1;
            assert!(shas.insert(r["sha256"].to_string()), "inferred twice: {r}");
        }
        assert_eq!(
            tree(&tmp.path().join(format!("out{i}"))),
            tree(&single),
            "process {i}"
        );
    }
    assert_eq!(
        inferred, ALBUM_UNIQUE,
        "{cache}: inferences across processes"
    );
}

pub fn disk_spec(dir: &Path) -> String {
    format!("disk:{}", dir.display())
}

#[test]
fn disk_cold_then_warm() {
    let cache = tempfile::tempdir().unwrap();
    cold_then_warm(&disk_spec(cache.path()));
}

#[test]
fn disk_three_processes_infer_each_image_once() {
    let cache = tempfile::tempdir().unwrap();
    three_processes(&disk_spec(cache.path()));
}

#[test]
fn another_model_misses_and_a_corrupt_value_is_recomputed() {
    let tmp = tempfile::tempdir().unwrap();
    let cache_dir = tmp.path().join("cache");
    let spec = disk_spec(&cache_dir);
    let album = fixtures("photos");
    let r = tmp.path().join("r.json");
    let o = run(colorize_cmd(&[&album], &tmp.path().join("a"), &spec, &r));
    assert!(o.status.success(), "{}", stderr(&o));
    let first = tree(&tmp.path().join("a"));

    // the same weights in another container share the cache...
    let mut c = colorize_cmd(&[&album], &tmp.path().join("b"), &spec, &r);
    c.arg("--weights").arg(golden("ddcolor-test.pth"));
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(count(&report(&r), "inferred"), 0);

    // ...a changed checkpoint does not
    let mut t = candle_core::safetensors::load(
        golden("ddcolor-test.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let key = "refine_net.0.0.bias";
    t.insert(key.into(), (&t[key] + 0.5).unwrap());
    let changed = tmp.path().join("changed.safetensors");
    candle_core::safetensors::save(&t, &changed).unwrap();
    let mut c = colorize_cmd(&[&album], &tmp.path().join("c"), &spec, &r);
    c.arg("--weights").arg(&changed);
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(count(&report(&r), "inferred"), ALBUM_UNIQUE);

    // corrupt every stored value (flip one byte in the middle): recomputed, same pictures
    let mut corrupted = 0;
    for e in walkdir::WalkDir::new(&cache_dir) {
        let e = e.unwrap();
        if e.file_type().is_file() && std::fs::metadata(e.path()).unwrap().len() > 1000 {
            let mut b = std::fs::read(e.path()).unwrap();
            let mid = b.len() / 2;
            b[mid] ^= 0x55;
            std::fs::write(e.path(), b).unwrap();
            corrupted += 1;
        }
    }
    assert!(corrupted >= ALBUM_UNIQUE, "corrupted {corrupted} values");
    let o = run(colorize_cmd(&[&album], &tmp.path().join("d"), &spec, &r));
    assert!(o.status.success(), "{}", stderr(&o));
    let rep = report(&r);
    assert_eq!(count(&rep, "inferred"), ALBUM_UNIQUE, "{rep:?}");
    assert_eq!(tree(&tmp.path().join("d")), first);
}

#[test]
fn bad_files_fail_one_by_one_and_the_rest_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().join("r.json");
    let out = tmp.path().join("out");
    let bad = fixtures("bad");
    let o = run(colorize_cmd(&[&fixtures("photos"), &bad], &out, "none", &r));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let bad_names: Vec<String> = std::fs::read_dir(&bad)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let err = stderr(&o);
    let error_lines: Vec<&str> = err.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(error_lines.len(), bad_names.len(), "{err}");
    for name in &bad_names {
        assert!(
            error_lines.iter().any(|l| l.contains(name.as_str())),
            "no error line names {name}: {err}"
        );
    }
    let rep = report(&r);
    assert_eq!(count(&rep, "failed"), bad_names.len());
    for r in rep.iter().filter(|r| r["status"] == "failed") {
        assert!(r["error"].as_str().unwrap().len() > 10, "{r}");
    }
    assert_eq!(tree(&out).len(), ALBUM_FILES, "every good file written");
}

#[test]
fn dry_run_writes_nothing_and_says_what_it_would_do() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let cache_dir = tmp.path().join("cache");
    let mut c = colorize_cmd(
        &[&fixtures("photos")],
        &out,
        &disk_spec(&cache_dir),
        &tmp.path().join("r.json"),
    );
    c.arg("--dry-run");
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.exists(), "dry run created the output folder");
    let plan = String::from_utf8_lossy(&o.stdout).into_owned();
    let lines: Vec<&str> = plan.lines().collect();
    assert_eq!(lines.len(), ALBUM_FILES, "{plan}");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("infer\t")).count(),
        ALBUM_UNIQUE
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("duplicate\t"))
            .count(),
        ALBUM_FILES - ALBUM_UNIQUE
    );
    // values live in the shard folders; the index of hashed files beside them may be written
    let stored = walkdir::WalkDir::new(&cache_dir)
        .min_depth(2)
        .into_iter()
        .filter(|e| e.as_ref().map(|e| e.file_type().is_file()).unwrap_or(false))
        .count();
    assert_eq!(stored, 0, "dry run stored values");
}

#[test]
fn existing_outputs_are_skipped_unless_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let r = tmp.path().join("r.json");
    let photo = fixtures("photos/cameraman.png");
    let o = run(colorize_cmd(&[&photo], &out, "none", &r));
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(out.join("cameraman.png"), b"mine").unwrap();
    let o = run(colorize_cmd(&[&photo], &out, "none", &r));
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(count(&report(&r), "skipped"), 1);
    assert_eq!(std::fs::read(out.join("cameraman.png")).unwrap(), b"mine");
    let mut c = colorize_cmd(&[&photo], &out, "none", &r);
    c.arg("--overwrite");
    let o = run(c);
    assert!(o.status.success());
    assert_eq!(count(&report(&r), "inferred"), 1);
    assert_ne!(std::fs::read(out.join("cameraman.png")).unwrap(), b"mine");
}

#[test]
fn files_from_nul_list_globs_and_the_output_inside_the_input() {
    let tmp = tempfile::tempdir().unwrap();
    // an album copy with the output folder inside it, and a symlink that is not followed
    let album = tmp.path().join("album");
    std::fs::create_dir_all(album.join("sub")).unwrap();
    for (src, dst) in [
        ("photos/cameraman.png", "a.png"),
        ("photos/chelsea.jpg", "sub/b.JPG"),
        ("photos/rocket.jpg", "notes.txt"),
    ] {
        std::fs::copy(fixtures(src), album.join(dst)).unwrap();
    }
    #[cfg(unix)]
    std::os::unix::fs::symlink(fixtures("photos/coffee.jpg"), album.join("link.jpg")).unwrap();
    let out = album.join("colorized");
    let r = tmp.path().join("r.json");
    let o = run(colorize_cmd(&[&album], &out, "none", &r));
    assert!(o.status.success(), "{}", stderr(&o));
    let got: Vec<PathBuf> = tree(&out).into_keys().collect();
    assert_eq!(
        got,
        vec![PathBuf::from("a.png"), PathBuf::from("sub/b.JPG")]
    );
    // run again: the output folder inside the album is not an input
    let o = run(colorize_cmd(&[&album], &out, "none", &r));
    assert!(o.status.success());
    assert_eq!(report(&r).len(), 2, "{:?}", report(&r));

    // --include / --exclude
    let out2 = tmp.path().join("out2");
    let mut c = colorize_cmd(&[&album], &out2, "none", &r);
    c.args(["--exclude", "sub/**", "--exclude", "colorized/**"]);
    assert!(run(c).status.success());
    assert_eq!(
        tree(&out2).into_keys().collect::<Vec<_>>(),
        vec![PathBuf::from("a.png")]
    );

    // find -print0 | ddcolor --files-from - -0 keeps relative paths
    let out3 = tmp.path().join("out3");
    let mut c = ddcolor();
    c.current_dir(tmp.path())
        .args(["colorize", "--files-from", "-", "-0", "--output"])
        .arg(&out3)
        .arg("--weights")
        .arg(golden("ddcolor-test.safetensors"))
        .args(["--size", "64", "--cache", "none", "-q"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"album/a.png\0album/sub/b.JPG\0").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        tree(&out3).into_keys().collect::<Vec<_>>(),
        vec![
            PathBuf::from("album/a.png"),
            PathBuf::from("album/sub/b.JPG")
        ]
    );
}

#[test]
fn metrics_file_is_prometheus_text() {
    let tmp = tempfile::tempdir().unwrap();
    let prom = tmp.path().join("ddcolor.prom");
    let mut c = colorize_cmd(
        &[&fixtures("photos")],
        &tmp.path().join("out"),
        "none",
        &tmp.path().join("r.json"),
    );
    c.arg("--metrics-file").arg(&prom);
    assert!(run(c).status.success());
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(text.contains(&format!(
        "ddcolor_files_total{{status=\"inferred\"}} {ALBUM_UNIQUE}"
    )));
    assert!(text.contains("ddcolor_files_total{status=\"duplicate\"} 2"));
    assert!(text.contains("ddcolor_last_success_timestamp_seconds "));
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = line.rsplitn(2, ' ');
        let value = parts.next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
    }
}
