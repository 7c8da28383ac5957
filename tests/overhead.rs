//! What a run costs besides the model: system calls counted with strace (CONTRIBUTING.md
//! "Set-up" lists it; `.ci/run` installs it).
use std::process::Command;

use crate::util::{ddcolor_bin, fixtures, golden};

/// `/proc/cpuinfo` is read at most once per run, however many images and products: candle's
/// thread count would otherwise parse it on every matrix product (27 times an image at 64 px).
#[test]
fn proc_cpuinfo_is_read_at_most_once_per_run() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("strace.log");
    let o = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=openat,open", "-o"])
        .arg(&log)
        .arg(ddcolor_bin())
        .arg("colorize")
        .arg(fixtures("photos"))
        .arg("--output")
        .arg(tmp.path().join("out"))
        .arg("--weights")
        .arg(golden("ddcolor-test.safetensors"))
        .args(["--size", "64", "--cache", "none", "--device", "cpu", "-q"])
        .env_remove("RAYON_NUM_THREADS")
        .env_remove("DDCOLOR_CACHE")
        .output()
        .expect("strace (apt-get install strace; see CONTRIBUTING.md)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let trace = std::fs::read_to_string(&log).unwrap();
    let opens = trace
        .lines()
        .filter(|l| l.contains("\"/proc/cpuinfo\""))
        .count();
    let images = std::fs::read_dir(tmp.path().join("out")).unwrap().count();
    assert!(images >= 8, "the run wrote {images} entries");
    assert!(opens <= 1, "/proc/cpuinfo opened {opens} times in one run");
}

/// A torch checkpoint is opened once to recognise its container and once to read it, however
/// many tensors it holds (candle's reader opened it and parsed its zip directory again for
/// every tensor: 605 times for a large checkpoint); the `.bin` form alike.
#[test]
fn a_torch_checkpoint_is_opened_twice_per_load() {
    for name in ["ddcolor-test.pth", "ddcolor-test-raw.bin"] {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("strace.log");
        let o = Command::new("strace")
            .args(["-f", "-qq", "-e", "trace=openat,open", "-o"])
            .arg(&log)
            .arg(ddcolor_bin())
            .arg("colorize")
            .arg(fixtures("photos").join("rocket.jpg"))
            .arg("--output")
            .arg(tmp.path().join("out"))
            .arg("--weights")
            .arg(golden(name))
            .args(["--size", "64", "--cache", "none", "--device", "cpu", "-q"])
            .env_remove("DDCOLOR_CACHE")
            .output()
            .expect("strace (apt-get install strace; see CONTRIBUTING.md)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let trace = std::fs::read_to_string(&log).unwrap();
        let opens = trace.lines().filter(|l| l.contains(name)).count();
        assert!(
            (1..=2).contains(&opens),
            "{name} opened {opens} times in one load"
        );
    }
}

/// Thumbnails do not wake the thread pool: preparing, composing and the forward pass of a
/// 16x16 scan run on the stage's own thread, so a run of small images makes a few thread
/// hand-overs an image (the engine's channels), not the ~90 futex and sched_yield calls an
/// image that waking the pool for each parallel loop cost (system time twice the user time).
#[test]
fn small_images_do_not_wake_the_thread_pool() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let n = 200u32;
    for i in 0..n {
        image::GrayImage::from_fn(16, 16, |x, y| {
            image::Luma([((x * 13 + y * 7 + i) % 256) as u8])
        })
        .save(input.join(format!("s{i:03}.png")))
        .unwrap();
    }
    let log = tmp.path().join("strace.log");
    let o = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=futex,sched_yield", "-o"])
        .arg(&log)
        .arg(ddcolor_bin())
        .arg("colorize")
        .arg(&input)
        .arg("--output")
        .arg(tmp.path().join("out"))
        .arg("--weights")
        .arg(golden("ddcolor-test.safetensors"))
        .args(["--size", "32", "--cache", "none", "--device", "cpu", "-q"])
        .env_remove("RAYON_NUM_THREADS")
        .env_remove("DDCOLOR_CACHE")
        .output()
        .expect("strace (apt-get install strace; see CONTRIBUTING.md)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_dir(tmp.path().join("out")).unwrap().count(),
        n as usize
    );
    let calls = std::fs::read_to_string(&log).unwrap().lines().count();
    let per_image = calls as f64 / f64::from(n);
    assert!(
        per_image < 40.0,
        "{calls} futex and sched_yield calls for {n} images ({per_image:.1} an image)"
    );
}
