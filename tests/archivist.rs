//! The archivist's loop: one image through standard input and output (a filter in a shell
//! pipeline), and `--saturation` applied at compose time from the cached prediction.
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::batch::{colorize_cmd, count, ddcolor, disk_spec as disk, report, run, stderr};
use crate::util::{fixtures, golden};

/// `ddcolor colorize ARGS` with the golden model at 64, `stdin` piped in.
fn filter(args: &[&str], cache: &str, stdin: &[u8], extra: &[&str]) -> Output {
    let mut c = ddcolor();
    c.arg("colorize")
        .args(args)
        .arg("--weights")
        .arg(golden("ddcolor-test.safetensors"))
        .args(["--size", "64", "--device", "cpu", "--cache", cache])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    piped(c, stdin)
}

fn piped(mut c: Command, stdin: &[u8]) -> Output {
    let mut child = c.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let o = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    o
}

#[test]
fn one_image_through_standard_input_and_output() {
    let tmp = tempfile::tempdir().unwrap();
    let photo = fixtures("photos/coffee.jpg");
    let bytes = std::fs::read(&photo).unwrap();
    let cache = disk(&tmp.path().join("cache"));

    // the file run, for comparison
    let o = run(colorize_cmd(
        &[&photo],
        &tmp.path().join("files"),
        "none",
        &tmp.path().join("files.json"),
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let expected = std::fs::read(tmp.path().join("files/coffee.jpg")).unwrap();

    let r = tmp.path().join("r.json");
    let r_arg = r.to_str().unwrap();
    let o = filter(
        &["-", "--output", "-"],
        &cache,
        &bytes,
        &["--report", r_arg],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        o.stdout, expected,
        "standard output differs from the file run's output"
    );
    let rep = report(&r);
    assert_eq!(rep.len(), 1);
    assert_eq!(rep[0]["path"], "-");
    assert_eq!(rep[0]["output"], "-");
    assert_eq!(rep[0]["status"], "inferred");
    assert!(stderr(&o).contains("1 files"), "the summary goes to stderr");

    // the cache works by content: the same bytes again are a hit; --format picks the encoder
    let o = filter(
        &["-", "-o", "-"],
        &cache,
        &bytes,
        &["--report", r_arg, "--format", "png"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(report(&r)[0]["status"], "cached");
    assert_eq!(
        image::guess_format(&o.stdout).unwrap(),
        image::ImageFormat::Png
    );
    assert!(
        !stderr(&o).contains("loaded"),
        "a hit never loads the model"
    );

    // a file named on the command line, to standard output
    let o = filter(&[photo.to_str().unwrap(), "-o", "-"], &cache, b"", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, expected);

    // standard input into a folder: DIR/stdin.EXT
    let out = tmp.path().join("dir");
    let o = filter(&["-", "-o", out.to_str().unwrap()], &cache, &bytes, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(out.join("stdin.jpg")).unwrap(), expected);
    // nothing is left behind in the temporary folder
    let own_tmp = tmp.path().join("tmpdir");
    std::fs::create_dir(&own_tmp).unwrap();
    let mut c = ddcolor();
    c.args([
        "colorize", "-", "-o", "-", "--size", "64", "--device", "cpu", "--cache", "none",
    ])
    .arg("--weights")
    .arg(golden("ddcolor-test.safetensors"))
    .env("TMPDIR", &own_tmp)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let o = piped(c, &bytes);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, expected);
    assert_eq!(
        std::fs::read_dir(&own_tmp).unwrap().count(),
        0,
        "temporary files left"
    );
}

#[test]
fn the_filter_fails_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let photo = fixtures("photos/coffee.jpg");
    let p = photo.to_str().unwrap();
    let bytes = std::fs::read(&photo).unwrap();
    // a damaged image on standard input: exit 1, nothing on standard output, `-` named
    let o = filter(&["-", "-o", "-"], "none", &bytes[..bytes.len() / 2], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    assert!(stderr(&o).contains("ddcolor: error: -: "), "{}", stderr(&o));
    // usage errors: exit 2
    for args in [
        &[p, p, "-o", "-"][..],
        &["-", p, "-o", "-"],
        &["-", "-o", "-", "--report", "-"],
        &[fixtures("photos").to_str().unwrap(), "-o", "-"],
    ] {
        let o = filter(args, "none", &bytes, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty());
    }
    let list = tmp.path().join("list");
    std::fs::write(&list, p).unwrap();
    let o = filter(
        &[p, "-o", "-", "--files-from", list.to_str().unwrap()],
        "none",
        b"",
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // an image already in colour: skipped, so nothing to hand on: exit 1, said why
    let colour = std::fs::read(first_file(&fixtures("reference"))).unwrap();
    let o = filter(&["-", "-o", "-"], "none", &colour, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
}

fn first_file(dir: &Path) -> std::path::PathBuf {
    walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| e.file_type().is_file())
        .unwrap()
        .into_path()
}

#[test]
fn saturation_is_applied_at_compose_time_from_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    // a gray PNG in, PNG out: lossless, so S = 0 can be held to the scan's own gray
    let photo = fixtures("photos/cameraman.png");
    let cache = disk(&tmp.path().join("cache"));
    let out = |name: &str| tmp.path().join(name);
    let go = |name: &str, extra: &[&str]| {
        let r = out(&format!("{name}.json"));
        let mut c = colorize_cmd(&[&photo], &out(name), &cache, &r);
        c.args(extra);
        let o = run(c);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        (
            image::open(out(name).join("cameraman.png"))
                .unwrap()
                .to_rgb8(),
            report(&r),
        )
    };
    let (default, rep) = go("default", &[]);
    assert_eq!(count(&rep, "inferred"), 1);
    let (one, rep) = go("one", &["--saturation", "1"]);
    assert_eq!(count(&rep, "cached"), 1);
    assert_eq!(one, default, "S = 1 is the model as is");
    // another S: nothing inferred, and the colours move
    let (half, rep) = go("half", &["--saturation", "0.5"]);
    assert_eq!(count(&rep, "cached"), 1, "changing S reran the model");
    let (double, _) = go("double", &["--saturation", "2"]);
    let (gray, _) = go("gray", &["--saturation", "0"]);
    let chroma = |img: &image::RgbImage| -> f64 {
        img.pixels()
            .map(|p| {
                let [r, g, b] = p.0.map(f64::from);
                r.max(g).max(b) - r.min(g).min(b)
            })
            .sum::<f64>()
            / (img.width() * img.height()) as f64
    };
    let (c0, c_half, c1, c2) = (chroma(&gray), chroma(&half), chroma(&one), chroma(&double));
    assert!(c0 < 1.5, "S = 0 is gray (mean spread {c0})");
    assert!(
        c0 < c_half && c_half < c1 && c1 < c2,
        "{c0} {c_half} {c1} {c2}"
    );
    // S = 0 is the scan's own gray: the output's gray equals the input's
    let scan = image::open(&photo).unwrap().to_luma8();
    let max_diff = gray
        .pixels()
        .zip(scan.pixels())
        .map(|(c, s)| (i32::from(c.0[1]) - i32::from(s.0[0])).abs())
        .max()
        .unwrap();
    assert!(max_diff <= 1, "S = 0 moved the gray by {max_diff} levels");
    // out of range: exit 2
    let mut c = colorize_cmd(&[&photo], &out("bad"), &cache, &out("bad.json"));
    c.args(["--saturation", "2.5"]);
    assert_eq!(run(c).status.code(), Some(2));
}
