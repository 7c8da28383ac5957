//! The first hour (#19): no silent outcome. Each run that does less than asked says why; what
//! the README and `--help` promise is what the binary does. Real processes, the test model.
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::batch::{ddcolor, run, stderr};
use crate::hub_server::{HubFile, HubServer};
use crate::util::{fixtures, golden};

/// `colorize` with the test model at 64, no cache, into `out`.
fn colorize(inputs: &[&Path], out: &Path) -> Command {
    let mut c = ddcolor();
    c.arg("colorize")
        .args(inputs)
        .arg("--output")
        .arg(out)
        .arg("--weights")
        .arg(golden("ddcolor-test.safetensors"))
        .args(["--size", "64", "--cache", "none"]);
    c
}

/// A small album: two images (one in a subfolder), a symbolic link to the subfolder, a text
/// file.
fn album(dir: &Path) -> std::path::PathBuf {
    let a = dir.join("album");
    std::fs::create_dir_all(a.join("sub")).unwrap();
    std::fs::copy(fixtures("photos/cameraman.png"), a.join("cameraman.png")).unwrap();
    std::fs::copy(fixtures("photos/rocket.jpg"), a.join("sub/rocket.jpg")).unwrap();
    std::os::unix::fs::symlink("sub", a.join("linked")).unwrap();
    std::fs::write(a.join("notes.txt"), "scanned 1998").unwrap();
    a
}

#[test]
fn what_was_left_out_and_why_is_said() {
    let tmp = tempfile::tempdir().unwrap();
    let a = album(tmp.path());
    let o = run(colorize(&[&a], &tmp.path().join("out")));
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("2 files, 2 unique"), "{err}");
    assert!(
        err.contains("left out: 1 symbolic link (not followed without -L)"),
        "{err}"
    );
    assert!(err.contains("1 file that is not an image"), "{err}");

    // a glob that matches nothing (case-sensitive): 0 files, and why
    let mut c = colorize(&[&a], &tmp.path().join("out2"));
    c.args(["--include", "*.PNG"]);
    let o = run(c);
    assert_eq!(o.status.code(), Some(4), "no input: exit 4; {}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("0 files"), "{err}");
    assert!(
        err.contains("2 files no --include glob matched (globs are case-sensitive)"),
        "{err}"
    );
    assert!(err.contains("nothing to colorize"), "{err}");

    // an empty folder: 0 files, and that nothing was found
    std::fs::create_dir(tmp.path().join("empty")).unwrap();
    let o = run(colorize(
        &[&tmp.path().join("empty")],
        &tmp.path().join("out3"),
    ));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("nothing to colorize: no file at all was found"),
        "{}",
        stderr(&o)
    );

    // -L follows the link: its image is an input too (and a duplicate of sub/rocket.jpg)
    let mut c = colorize(&[&a], &tmp.path().join("out4"));
    c.arg("-L");
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("3 files, 2 unique"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("symbolic link"), "{}", stderr(&o));
}

#[test]
fn skips_failures_and_counts_are_summarised_plainly() {
    let tmp = tempfile::tempdir().unwrap();
    let one = fixtures("photos/cameraman.png");
    let out = tmp.path().join("out");
    let o = run(colorize(&[&one], &out));
    assert!(stderr(&o).contains("1 file, 1 unique"), "{}", stderr(&o));
    assert!(stderr(&o).contains("1 forward pass;"), "{}", stderr(&o));
    // again: skipped, and why
    let o = run(colorize(&[&one, &fixtures("photos/rocket.jpg")], &out));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("1 skipped (1 output exists)"),
        "{}",
        stderr(&o)
    );
    // a failure is not hidden behind a hit rate
    let broken = tmp.path().join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let o = run(colorize(&[&broken], &tmp.path().join("out2")));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("1 file failed: the messages above"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_report_keeps_the_documented_field_order() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().join("r.ndjson");
    let mut c = colorize(
        &[&fixtures("photos/cameraman.png")],
        &tmp.path().join("out"),
    );
    c.arg("--report").arg(&r);
    assert!(run(c).status.success());
    let line = std::fs::read_to_string(&r).unwrap();
    let keys: Vec<&str> = [
        "path", "sha256", "status", "output", "error", "ms", "model", "size",
    ]
    .into_iter()
    .collect();
    let at: Vec<usize> = keys
        .iter()
        .map(|k| {
            line.find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("{k}: {line}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{line}");
}

#[test]
fn a_dry_run_needs_no_download_and_counts_its_plan() {
    let tmp = tempfile::tempdir().unwrap();
    let a = album(tmp.path());
    // a machine that has no model and no network
    let mut c = ddcolor();
    c.args(["colorize", "--dry-run", "--cache", "none", "--output"])
        .arg(tmp.path().join("out"))
        .arg(&a)
        .arg(tmp.path().join("missing.png"))
        .env("HOME", tmp.path())
        .env("XDG_DATA_HOME", tmp.path().join("data"))
        .env("XDG_CACHE_HOME", tmp.path().join("cache"))
        .env("HF_HOME", tmp.path().join("hf"))
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env_remove("DDCOLOR_MODEL")
        .current_dir(tmp.path());
    let o = run(c);
    let out = String::from_utf8_lossy(&o.stdout);
    let err = stderr(&o);
    // the missing file is a `fail` line: exit 1
    assert_eq!(o.status.code(), Some(1), "{err}\n{out}");
    assert_eq!(out.matches("infer\t").count(), 2, "{out}");
    assert!(out.contains("fail\t"), "{out}");
    assert!(
        err.contains("912 MB download on the first real run"),
        "{err}"
    );
    assert!(err.contains("dry run: 3 files"), "{err}");
    assert!(err.contains("would infer 2"), "{err}");
    assert!(!tmp.path().join("out").exists(), "a dry run wrote");
    assert!(
        !tmp.path().join("data/ddcolor").exists(),
        "a dry run downloaded"
    );
}

#[test]
fn an_output_that_is_a_file_name_is_refused_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let one = fixtures("photos/cameraman.png");
    let o = run(colorize(&[&one], &tmp.path().join("out.png")));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("looks like an image file name"),
        "{}",
        stderr(&o)
    );
    assert!(!tmp.path().join("out.png").exists());
    // an existing file: named, exit 2, the model never loaded
    let file = tmp.path().join("results");
    std::fs::write(&file, "x").unwrap();
    let o = run(colorize(&[&one], &file));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("results"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("loaded"), "{}", stderr(&o));
    // a folder of that name that exists is fine
    std::fs::create_dir(tmp.path().join("scans.tif")).unwrap();
    let o = run(colorize(&[&one], &tmp.path().join("scans.tif")));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn missing_output_and_nul_lists_say_what_to_do() {
    // with DDCOLOR_MODEL set, the usage line must not make --model look required
    let mut c = ddcolor();
    c.args(["colorize", "x.png"])
        .env("DDCOLOR_MODEL", "paper_tiny");
    let o = run(c);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--output DIR is needed"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("--model <NAME>"), "{}", stderr(&o));

    // a NUL-separated list without -0
    let tmp = tempfile::tempdir().unwrap();
    let mut c = colorize(&[], &tmp.path().join("out"));
    c.args(["--files-from", "-"]).stdin(Stdio::piped());
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let list = format!(
        "{}\0{}\0",
        fixtures("photos/cameraman.png").display(),
        fixtures("photos/rocket.jpg").display()
    );
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(list.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("NUL-separated") && stderr(&o).contains("add -0"),
        "{}",
        stderr(&o)
    );
}

/// Run `args` with standard output a pipe whose reading end is closed before it writes.
fn to_closed_stdout(args: &[&str]) -> std::process::Output {
    let mut c = ddcolor();
    c.args(args)
        .env(
            "XDG_CACHE_HOME",
            std::env::temp_dir().join("ddcolor-closed-stdout"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    std::process::Output {
        status,
        stdout: Vec::new(),
        stderr: err.into_bytes(),
    }
}

#[test]
fn a_closed_standard_output_ends_a_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    for args in [
        &["man"][..],
        &["completions", "bash"],
        &["weights", "list"],
        &["cache", "stats", "--cache", "none"],
    ] {
        let o = to_closed_stdout(args);
        assert_eq!(stderr(&o), "", "{args:?} complained");
        // ended by SIGPIPE, as `cat` would be (or done before it noticed)
        assert!(
            o.status.signal() == Some(libc::SIGPIPE) || o.status.code() == Some(0),
            "{args:?}: {:?}",
            o.status
        );
    }
}

#[test]
fn bench_takes_what_colorize_takes() {
    let mut c = ddcolor();
    c.arg("bench")
        .arg("--weights")
        .arg(golden("ddcolor-test.safetensors"))
        .args(["--size", "portrait", "--runs", "1"]);
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    let line = String::from_utf8_lossy(&o.stdout);
    assert!(line.contains("\"size\":512"), "{line}");
    for bad in [&["--runs", "0"][..], &["--batch", "0"]] {
        let mut c = ddcolor();
        c.arg("bench").args(bad);
        assert_eq!(run(c).status.code(), Some(2), "{bad:?}");
    }
    let mut c = ddcolor();
    c.args(["bench", "--help"]);
    let help = String::from_utf8_lossy(&run(c).stdout).into_owned();
    let device = help.split("--device").nth(1).unwrap_or_default();
    assert!(device.contains("[default: auto]"), "{help}");
}

#[test]
fn cache_defaults_are_what_the_readme_says() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = format!("disk:{}", tmp.path().join("c").display());
    let mut c = ddcolor();
    c.args(["cache", "stats", "--cache", &spec]);
    let o = run(c);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("max size: 10737418240 bytes (10.0 GiB)"),
        "{out}"
    );
    // --cache-ttl on the disk cache is not silently ignored
    let mut c = colorize(
        &[&fixtures("photos/cameraman.png")],
        &tmp.path().join("out"),
    );
    c.args(["--cache", &spec, "--cache-ttl", "30d"]);
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--cache-ttl is ignored by the disk cache"),
        "{}",
        stderr(&o)
    );
    // `unbounded` lifts the bound
    let mut c = ddcolor();
    c.args([
        "cache",
        "stats",
        "--cache",
        &spec,
        "--cache-max-size",
        "unbounded",
    ]);
    let out = String::from_utf8_lossy(&run(c).stdout).into_owned();
    assert!(out.contains("max size: unbounded"), "{out}");
}

#[test]
fn help_is_grouped_and_cuda_errors_name_the_guide_section() {
    let mut c = ddcolor();
    c.args(["colorize", "--help"]);
    let help = String::from_utf8_lossy(&run(c).stdout).into_owned();
    let at: Vec<usize> = ["Inputs:", "Model:", "Output:", "Cache:", "Reporting:"]
        .iter()
        .map(|h| {
            help.find(&format!("\n{h}\n"))
                .unwrap_or_else(|| panic!("{h}\n{help}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{help}");
    if !cfg!(feature = "cuda") {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = colorize(&[&fixtures("photos/cameraman.png")], &tmp.path().join("o"));
        c.args(["--device", "cuda"]);
        let o = run(c);
        assert_eq!(o.status.code(), Some(2));
        assert!(
            stderr(&o).contains("GUIDE.md, section \"CUDA\""),
            "{}",
            stderr(&o)
        );
        // and the section it names is there
        let guide = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("GUIDE.md"))
            .unwrap();
        assert!(
            guide.lines().any(|l| l == "## CUDA"),
            "GUIDE.md has no CUDA section"
        );
    }
}

#[test]
fn a_download_leaves_no_lock_file() {
    let tmp = tempfile::tempdir().unwrap();
    let env = |c: &mut Command| {
        c.env("HOME", tmp.path())
            .env("XDG_DATA_HOME", tmp.path().join("data"))
            .env("HF_HOME", tmp.path().join("hf"))
            .env_remove("HF_HUB_OFFLINE")
            .current_dir(tmp.path());
    };
    let locks = || -> Vec<String> {
        walkdir::WalkDir::new(tmp.path().join("data"))
            .into_iter()
            .filter_map(Result::ok)
            .map(|e| e.path().display().to_string())
            .filter(|p| p.ends_with(".lock"))
            .collect()
    };
    // the hub cannot be reached: the fetch fails, and leaves no lock
    let mut c = ddcolor();
    c.args(["weights", "fetch", "paper_tiny"])
        .env("HF_ENDPOINT", "http://127.0.0.1:9");
    env(&mut c);
    let o = run(c);
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(locks().is_empty(), "{:?}", locks());
    // a fetch that works leaves none either
    let weights = std::fs::read(golden("ddcolor-test.safetensors")).unwrap();
    let hub = HubServer::start(
        vec![HubFile::new(
            "piddnad/ddcolor_paper_tiny",
            "pytorch_model.bin",
            weights,
            true,
        )],
        Default::default(),
    );
    let mut c = ddcolor();
    c.args(["weights", "fetch", "paper_tiny"])
        .env("HF_ENDPOINT", hub.endpoint());
    env(&mut c);
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(locks().is_empty(), "{:?}", locks());
}
