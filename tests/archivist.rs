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
    assert!(
        stderr(&o).contains("1 file, 1 unique"),
        "the summary goes to stderr"
    );

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

#[test]
fn the_gallery_is_one_self_contained_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    std::fs::create_dir_all(&album).unwrap();
    for f in [
        "coffee-scan-16bit.tif",
        "coffee-scan-16bit.png",
        "cameraman.png",
        "rocket.jpg",
    ] {
        std::fs::copy(fixtures(&format!("photos/{f}")), album.join(f)).unwrap();
    }
    std::fs::copy(fixtures("bad/truncated.jpg"), album.join("cut.jpg")).unwrap();
    let r = tmp.path().join("run.ndjson");
    let o = run(colorize_cmd(&[&album], &tmp.path().join("out"), "none", &r));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let rep = report(&r);
    assert_eq!(rep[0]["model"], "ddcolor-test.safetensors", "{rep:?}");
    assert_eq!(rep[0]["size"], 64);

    let review = tmp.path().join("review");
    let gallery = |extra: &[&str]| {
        let mut c = ddcolor();
        c.arg("gallery")
            .arg(&r)
            .arg("--output")
            .arg(&review)
            .args(extra);
        run(c)
    };
    let o = gallery(&["--thumb-size", "256"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // 4 sources and 4 outputs; the damaged file has neither
    assert!(stderr(&o).contains("8 thumbnails made"), "{}", stderr(&o));
    let html = std::fs::read_to_string(review.join("index.html")).unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "a remote resource"
    );
    for l in &rep {
        assert!(html.contains(&serde_json::to_string(l["path"].as_str().unwrap()).unwrap()));
    }
    assert!(
        html.contains("truncated JPEG"),
        "the failure's reason is on the page"
    );
    let thumbs: Vec<_> = std::fs::read_dir(review.join("thumbs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(thumbs.len(), 8);
    for t in &thumbs {
        let img = image::open(t).unwrap();
        assert_eq!(
            image::guess_format(&std::fs::read(t).unwrap()).unwrap(),
            image::ImageFormat::Jpeg
        );
        assert!(img.width().max(img.height()) <= 256, "{}", t.display());
        // every src on the page is one of these, relative
        let name = format!("thumbs/{}", t.file_name().unwrap().to_string_lossy());
        assert!(html.contains(&name), "{name}");
    }
    // a second build keeps the thumbnails that are newer than their images
    let o = gallery(&["--thumb-size", "256"]);
    assert!(
        stderr(&o).contains("0 thumbnails made, 8 kept"),
        "{}",
        stderr(&o)
    );
    // no report lines: a usage error
    let empty = tmp.path().join("empty.ndjson");
    std::fs::write(&empty, "not a report\n").unwrap();
    let mut c = ddcolor();
    c.arg("gallery")
        .arg(&empty)
        .arg("-o")
        .arg(tmp.path().join("x"));
    assert_eq!(run(c).status.code(), Some(2));
}

#[test]
fn compat_upstream_is_its_own_pipeline_with_its_own_cache_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let photo = fixtures("photos/coffee.jpg");
    let cache = disk(&tmp.path().join("cache"));
    let go = |name: &str, extra: &[&str]| {
        let r = tmp.path().join(format!("{name}.json"));
        let mut c = colorize_cmd(&[&photo], &tmp.path().join(name), &cache, &r);
        c.args(extra);
        let o = run(c);
        (o, r)
    };
    let (o, r) = go("default", &["--resize", "nearest", "--gamut", "clip"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(count(&report(&r), "inferred"), 1);
    // the model sees another input: inferred again, not served the default pipeline's value
    let (o, r) = go("compat", &["--compat", "upstream"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        count(&report(&r), "inferred"),
        1,
        "served the default pipeline's value"
    );
    let (o, r) = go("compat-again", &["--compat", "upstream"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(count(&report(&r), "cached"), 1);
    let a = std::fs::read(tmp.path().join("default/coffee.jpg")).unwrap();
    let b = std::fs::read(tmp.path().join("compat/coffee.jpg")).unwrap();
    assert_ne!(a, b);
    assert_eq!(
        b,
        std::fs::read(tmp.path().join("compat-again/coffee.jpg")).unwrap()
    );
    // it sets the resize and gamut rules itself
    for extra in [["--resize", "bilinear"], ["--gamut", "fit"]] {
        let (o, _) = go(
            "conflict",
            &[&["--compat", "upstream"][..], &extra[..]].concat(),
        );
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
    }
}
