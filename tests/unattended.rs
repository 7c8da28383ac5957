//! The unattended archive: the guide's cron entry run as cron runs it, an empty or unmounted
//! archive that must not look like success, runs that do nothing leave nothing behind, help
//! and progress that fit a terminal, and scans whose notes survive.
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::batch::{colorize_cmd, ddcolor, report, run, stderr};
use crate::util::{ddcolor_bin, fixtures, golden};

/// The one entry of GUIDE.md's ```` ```crontab ```` block (its Recipes): (schedule, command).
fn guide_cron_entry() -> (String, String) {
    let guide =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("GUIDE.md")).unwrap();
    let start = guide
        .find("```crontab\n")
        .expect("a ```crontab block in GUIDE.md");
    let body = &guide[start + "```crontab\n".len()..];
    let body = &body[..body.find("```").expect("closed")];
    let entries: Vec<&str> = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        // `NAME=value` lines set cron's environment
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| !w.contains('='))
        })
        .collect();
    assert_eq!(entries.len(), 1, "one crontab entry: {body}");
    let line = entries[0];
    assert!(
        !line.ends_with('\\'),
        "crontab has no continuation lines: {line}"
    );
    let fields: Vec<&str> = line.split_whitespace().collect();
    for f in &fields[..5] {
        assert!(
            !f.is_empty() && f.chars().all(|c| c.is_ascii_digit() || "*/,-".contains(c)),
            "bad schedule field {f:?} in {line}"
        );
    }
    assert!(!line.contains('%'), "% is a newline to cron: {line}");
    // the command: the line after its five schedule fields, as cron hands it to sh
    let mut rest = line;
    for _ in 0..5 {
        rest = rest.trim_start();
        rest = &rest[rest.find(char::is_whitespace).unwrap()..];
    }
    (fields[..5].join(" "), rest.trim().to_owned())
}

/// A HOME as `cargo install` leaves it: the binary in `~/.cargo/bin`, the weights where a
/// first run downloads them (the test model in place of the download).
fn cron_home(dir: &Path) -> PathBuf {
    let home = dir.join("home");
    let bin = home.join(".cargo/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(ddcolor_bin(), bin.join("ddcolor")).unwrap();
    let w = home.join(".local/share/ddcolor/weights/modelscope");
    std::fs::create_dir_all(&w).unwrap();
    std::fs::copy(
        golden("ddcolor-test.safetensors"),
        w.join("pytorch_model.bin"),
    )
    .unwrap();
    home
}

/// Run `command` as cron does: `/bin/sh -c`, the environment cron gives (PATH=/usr/bin:/bin,
/// HOME, SHELL, LOGNAME) and nothing else; the system paths of the entry moved under `root`.
fn as_cron(command: &str, root: &Path, home: &Path) -> Output {
    let mut cmd = command.to_owned();
    for p in ["/archive/", "/var/log/", "/var/lib/"] {
        cmd = cmd.replace(p, &format!("{}{p}", root.display()));
    }
    assert!(cmd.contains(&root.display().to_string()), "{cmd}");
    Command::new("/usr/bin/env")
        .args(["-i", "PATH=/usr/bin:/bin", "SHELL=/bin/sh", "LOGNAME=root"])
        .arg(format!("HOME={}", home.display()))
        // a test machine's HF endpoint: closed, so a download attempt fails fast
        .arg(format!(
            "HF_ENDPOINT=http://127.0.0.1:{}",
            crate::redis_util::free_port()
        ))
        .args(["/bin/sh", "-c", &cmd])
        .current_dir(home)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map(|v| v.trim().parse().unwrap())
}

#[test]
fn the_guide_cron_entry_runs_under_cron() {
    let (schedule, command) = guide_cron_entry();
    assert_eq!(schedule.split(' ').count(), 5);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let scans = root.join("archive/scans");
    std::fs::create_dir_all(scans.join("box1")).unwrap();
    std::fs::copy(fixtures("photos/rocket.jpg"), scans.join("box1/rocket.jpg")).unwrap();
    std::fs::copy(
        fixtures("photos/cameraman.png"),
        scans.join("cameraman.png"),
    )
    .unwrap();
    let home = cron_home(tmp.path());

    // the first night: the report's and the metrics file's folders do not exist yet
    let o = as_cron(&command, &root, &home);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stderr.is_empty(), "--quiet: {}", stderr(&o));
    assert!(root.join("archive/colorized/box1/rocket.jpg").is_file());
    let reported = report(&root.join("var/log/ddcolor/last.ndjson"));
    assert_eq!(reported.len(), 2);
    let prom = root.join("var/lib/node_exporter/ddcolor.prom");
    let text = std::fs::read_to_string(&prom).unwrap();
    let first = metric(&text, "ddcolor_last_success_timestamp_seconds").expect("a success");
    assert_eq!(metric(&text, "ddcolor_inputs_found"), Some(2.0));

    // the next night the share is not mounted: an empty folder. Said, exit 4, not a success.
    std::fs::remove_dir_all(&scans).unwrap();
    std::fs::create_dir_all(&scans).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let o = as_cron(&command, &root, &home);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("nothing to colorize: no file at all was found"),
        "{}",
        stderr(&o)
    );
    let text = std::fs::read_to_string(&prom).unwrap();
    assert_eq!(metric(&text, "ddcolor_inputs_found"), Some(0.0));
    assert_eq!(
        metric(&text, "ddcolor_last_success_timestamp_seconds"),
        Some(first),
        "an empty run advanced the success timestamp"
    );
    assert!(metric(&text, "ddcolor_last_run_timestamp_seconds").unwrap() > first);
}

#[test]
fn an_empty_input_is_not_a_success_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(tmp.path().join("list.txt"), "").unwrap();
    let prom = tmp.path().join("m.prom");
    let go = |inputs: &[&str], extra: &[&str]| {
        let mut c = ddcolor();
        c.current_dir(tmp.path())
            .arg("colorize")
            .args(inputs)
            .args(["--output", "out", "--cache", "none", "--quiet"])
            .arg("--weights")
            .arg(golden("ddcolor-test.safetensors"))
            .arg("--metrics-file")
            .arg(&prom)
            .args(extra);
        run(c)
    };
    for inputs in [&["empty"][..], &["--files-from", "list.txt"][..]] {
        let o = go(inputs, &[]);
        assert_eq!(o.status.code(), Some(4), "{inputs:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("nothing to colorize"), "{}", stderr(&o));
        let text = std::fs::read_to_string(&prom).unwrap();
        assert_eq!(
            metric(&text, "ddcolor_last_success_timestamp_seconds"),
            None
        );
        // nothing was made for it
        assert!(!tmp.path().join("out").exists(), "an empty output folder");
    }
    // a folder with files but no image in it: the same
    std::fs::write(empty.join("notes.txt"), "box 12").unwrap();
    let o = go(&["empty"], &[]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("left out"), "{}", stderr(&o));
    // --allow-empty: a success
    let o = go(&["--files-from", "list.txt"], &["--allow-empty"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(metric(&text, "ddcolor_last_success_timestamp_seconds").is_some());
}

#[test]
fn runs_that_do_nothing_leave_no_folders_behind() {
    let tmp = tempfile::tempdir().unwrap();
    // a mistyped input: exit 1, no output folder
    let out = tmp.path().join("deep/out");
    let o = run(colorize_cmd(
        &[&tmp.path().join("no-such-album")],
        &out,
        "none",
        &tmp.path().join("r.ndjson"),
    ));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        !tmp.path().join("deep").exists(),
        "an empty output folder was left"
    );
    // weights that are not a checkpoint: exit 2, no output folder
    let mut c = ddcolor();
    c.arg("colorize")
        .arg(fixtures("photos/rocket.jpg"))
        .arg("--output")
        .arg(&out)
        .arg("--weights")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .args(["--cache", "none", "--size", "64"]);
    let o = run(c);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        !tmp.path().join("deep").exists(),
        "an empty output folder was left"
    );
    // an output folder that was there is kept, empty or not
    std::fs::create_dir_all(&out).unwrap();
    let o = run(colorize_cmd(
        &[&tmp.path().join("no-such-album")],
        &out,
        "none",
        &tmp.path().join("r.ndjson"),
    ));
    assert_eq!(o.status.code(), Some(1));
    assert!(out.is_dir());
}

#[test]
fn failed_downloads_leave_no_folder_and_every_model_is_tried() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("weights");
    let fetch = |names: &[&str]| {
        let mut c = ddcolor();
        c.args(["weights", "fetch"])
            .args(names)
            .env("DDCOLOR_WEIGHTS_DIR", &data)
            .env(
                "HF_ENDPOINT",
                format!("http://127.0.0.1:{}", crate::redis_util::free_port()),
            )
            .env_remove("HF_HUB_OFFLINE")
            .current_dir(tmp.path());
        run(c)
    };
    let o = fetch(&["artistic", "paper"]);
    assert_ne!(o.status.code(), Some(0));
    let err = stderr(&o);
    assert!(
        err.contains("model artistic") && err.contains("model paper"),
        "both tried: {err}"
    );
    assert!(err.contains("2 of 2 models could not be fetched"), "{err}");
    for m in ["artistic", "paper"] {
        assert!(
            !data.join(m).exists(),
            "an empty weights/{m} folder was left"
        );
    }
}

/// Run `args` under a pseudo-terminal of `cols` columns; what it printed, as the screen's lines
/// (carriage returns and escape sequences resolved to the text last drawn on each line).
fn in_terminal(args: &[&str], cols: u16, env: &[(&str, &str)]) -> (i32, Vec<String>) {
    let script = r#"
import os, pty, sys, struct, fcntl, termios, select
cols = int(sys.argv[1]); argv = sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))
out = b""
while True:
    try:
        r, _, _ = select.select([fd], [], [], 120)
        if not r: break
        chunk = os.read(fd, 65536)
    except OSError:
        break
    if not chunk: break
    out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let mut c = Command::new("python3");
    c.args(["-c", script, &cols.to_string()])
        .arg(ddcolor_bin())
        .args(args)
        .env_remove("COLUMNS")
        .env_remove("DDCOLOR_WEIGHTS")
        .env_remove("DDCOLOR_CACHE");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    // strip CSI escapes; each \r starts the line again, \n ends it
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            // a pty ends lines with \r\n; a lone \r redraws the line (kept as a frame of its own)
            '\r' if chars.peek() == Some(&'\n') => {}
            '\r' => {
                if !line.is_empty() {
                    lines.push(std::mem::take(&mut line));
                }
            }
            '\n' => lines.push(std::mem::take(&mut line)),
            c => line.push(c),
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    (o.status.code().unwrap_or(-1), lines)
}

#[test]
fn help_fits_an_80_column_terminal_and_short_help_keeps_whole_sentences() {
    for args in [
        &["colorize", "--help"][..],
        &["colorize", "-h"],
        &["gallery", "--help"],
        &["--help"],
    ] {
        let (code, lines) = in_terminal(args, 80, &[]);
        assert_eq!(code, 0, "{args:?}");
        let long: Vec<&String> = lines.iter().filter(|l| l.chars().count() > 80).collect();
        assert!(
            long.is_empty(),
            "{args:?}: lines over 80 columns: {long:#?}"
        );
    }
    // -h: each flag's text is whole sentences: an entry starts at `-x, --flag  text` (or
    // `[PATHS]...  text`), continues on the indented lines below it; the bracketed defaults
    // clap adds are left out
    let (_, lines) = in_terminal(&["colorize", "-h"], 100, &[]);
    let mut entries: Vec<String> = Vec::new();
    for l in &lines {
        let t = l.trim();
        let starts = l.starts_with("  ") && (t.starts_with('-') || t.starts_with('['));
        if starts {
            entries.push(t.find("  ").map_or("", |at| t[at..].trim()).to_owned());
        } else if l.starts_with("      ") && !entries.is_empty() {
            let e = entries.last_mut().unwrap();
            e.push(' ');
            e.push_str(t);
        } else if t.is_empty() || !l.starts_with(' ') {
            entries.push(String::new());
        }
    }
    let entries: Vec<String> = entries
        .into_iter()
        .filter(|e| !e.is_empty())
        .map(|e| match e.find(" [") {
            Some(at)
                if e[at..].starts_with(" [env:")
                    || e[at..].starts_with(" [default:")
                    || e[at..].starts_with(" [possible") =>
            {
                e[..at].to_owned()
            }
            _ => e,
        })
        .collect();
    assert!(entries.len() > 20, "{lines:#?}");
    for entry in &entries {
        let cut = entry.ends_with(',')
            || entry.ends_with(" (")
            || entry.ends_with(" the")
            || entry.ends_with(" a")
            || entry.ends_with(" or")
            || entry.ends_with(" and")
            || entry.ends_with(':')
            || entry.matches('(').count() != entry.matches(')').count()
            || entry.matches('`').count() % 2 == 1;
        assert!(!cut, "-h cuts a sentence: {entry:?}");
    }
}

#[test]
fn the_progress_line_fits_the_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let album = fixtures("photos");
    let weights = golden("ddcolor-test.safetensors");
    let (code, lines) = in_terminal(
        &[
            "colorize",
            album.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--weights",
            weights.to_str().unwrap(),
            "--size",
            "64",
            "--cache",
            "none",
            "--device",
            "cpu",
        ],
        80,
        &[],
    );
    assert_eq!(code, 0, "{lines:#?}");
    // a frame of the bar: from its spinner (the character before ` [00:`) to the end of what
    // was drawn (a message printed above the bar may come first, padded to whole rows)
    let bar: Vec<String> = lines
        .iter()
        .filter_map(|l| {
            let at = l.find(" [00:")?;
            let start = l[..at].char_indices().last().map_or(0, |(i, _)| i);
            Some(l[start..].to_owned())
        })
        .collect();
    assert!(!bar.is_empty(), "no progress line drawn: {lines:#?}");
    let long: Vec<&String> = bar.iter().filter(|l| l.chars().count() > 80).collect();
    assert!(long.is_empty(), "progress lines over 80 columns: {long:#?}");
    // messages go above the bar, never into its line
    assert!(
        bar.iter().all(|l| !l.contains("ddcolor:")),
        "a message inside the progress line: {bar:#?}"
    );
}

/// A JPEG with a COM segment inserted after SOI by hand (no code of ours makes it).
fn with_comment(jpeg: &[u8], comment: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xFE]);
    out.extend_from_slice(&((comment.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(comment);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn comments(jpeg: &[u8]) -> Vec<Vec<u8>> {
    let mut found = Vec::new();
    let mut i = 2;
    while i + 4 <= jpeg.len() && jpeg[i] == 0xFF && jpeg[i + 1] != 0xDA {
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        if jpeg[i + 1] == 0xFE {
            found.push(jpeg[i + 4..i + 2 + len].to_vec());
        }
        i += 2 + len;
    }
    found
}

#[test]
fn jpeg_comments_are_kept_and_no_resolution_is_invented() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    std::fs::create_dir_all(&album).unwrap();
    let notes: [&[u8]; 2] = [
        b"Box 12, folder 3: donated by the Okafor family",
        b"scanned 1998 \xe9",
    ];
    let mut jpeg = std::fs::read(fixtures("photos/rocket.jpg")).unwrap();
    let own = comments(&jpeg);
    for n in notes.iter().rev() {
        jpeg = with_comment(&jpeg, n);
    }
    std::fs::write(album.join("noted.jpg"), &jpeg).unwrap();
    // a 16-bit TIFF without any resolution tag
    let tif = album.join("plain.tif");
    {
        let img = image::open(fixtures("photos/coffee-scan-16bit.tif"))
            .unwrap()
            .to_luma16();
        let f = std::fs::File::create(&tif).unwrap();
        let mut enc = tiff::encoder::TiffEncoder::new(f).unwrap();
        enc.write_image::<tiff::encoder::colortype::Gray16>(
            img.width(),
            img.height(),
            img.as_raw(),
        )
        .unwrap();
    }
    // the tiff crate writes 1/1 without a unit into every image: drop it from the source
    // (checked below by reading the tags back)
    let src = std::fs::read(&tif).unwrap();
    std::fs::write(&tif, ddcolor::meta::drop_tiff_resolution(src)).unwrap();
    assert!(!has_resolution(&std::fs::read(&tif).unwrap()));

    let out = tmp.path().join("out");
    let o = run(colorize_cmd(
        &[&album],
        &out,
        "none",
        &tmp.path().join("r.ndjson"),
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let mut want: Vec<Vec<u8>> = notes.iter().map(|n| n.to_vec()).collect();
    want.extend(own);
    assert_eq!(
        comments(&std::fs::read(out.join("noted.jpg")).unwrap()),
        want
    );
    let written = std::fs::read(out.join("plain.tif")).unwrap();
    assert!(!has_resolution(&written), "the output gained a resolution");
    // and a TIFF output of a source with a resolution keeps it
    let o = run(colorize_cmd(
        &[&fixtures("photos/coffee-scan-16bit.tif")],
        &tmp.path().join("out2"),
        "none",
        &tmp.path().join("r2.ndjson"),
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let src_has = has_resolution(&std::fs::read(fixtures("photos/coffee-scan-16bit.tif")).unwrap());
    assert_eq!(
        has_resolution(&std::fs::read(tmp.path().join("out2/coffee-scan-16bit.tif")).unwrap()),
        src_has
    );
}

/// IFD0 of a little-endian TIFF: its tags.
fn ifd0_tags(t: &[u8]) -> Vec<u16> {
    assert!(t.starts_with(b"II*\0"));
    let at = u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize;
    let n = usize::from(u16::from_le_bytes([t[at], t[at + 1]]));
    (0..n)
        .map(|k| u16::from_le_bytes([t[at + 2 + 12 * k], t[at + 3 + 12 * k]]))
        .collect()
}

fn has_resolution(t: &[u8]) -> bool {
    ifd0_tags(t).iter().any(|t| matches!(t, 282 | 283 | 296))
}

#[test]
fn a_dry_run_names_each_original_before_its_copies() {
    let tmp = tempfile::tempdir().unwrap();
    // many copies, so that the readers race: a copy hashed first must still come second
    let album = tmp.path().join("album");
    std::fs::create_dir_all(&album).unwrap();
    for k in 0..48 {
        let from = [
            "photos/rocket.jpg",
            "photos/cameraman.png",
            "photos/coffee.jpg",
        ][k % 3];
        let ext = Path::new(from).extension().unwrap().to_str().unwrap();
        std::fs::copy(fixtures(from), album.join(format!("{k:02}.{ext}"))).unwrap();
    }
    let mut c = colorize_cmd(
        &[&album],
        &tmp.path().join("out"),
        "none",
        &tmp.path().join("r.ndjson"),
    );
    c.arg("--dry-run");
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let mut originals = std::collections::HashSet::new();
    let mut lines = 0;
    for l in stdout.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        let bytes = std::fs::read(f[1]).unwrap();
        match f[0] {
            "infer" => assert!(originals.insert(bytes), "two originals: {stdout}"),
            "duplicate" => assert!(
                originals.contains(&bytes),
                "a copy before its original:\n{stdout}"
            ),
            other => panic!("{other}: {stdout}"),
        }
        lines += 1;
    }
    assert_eq!((lines, originals.len()), (48, 3), "{stdout}");
}

#[test]
fn the_failure_line_points_to_a_report_only_when_there_is_one() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = fixtures("bad/truncated.jpg");
    let mut c = ddcolor();
    c.arg("colorize")
        .arg(&bad)
        .arg("--output")
        .arg(tmp.path().join("out"))
        .arg("--weights")
        .arg(golden("ddcolor-test.safetensors"))
        .args(["--size", "64", "--cache", "none"]);
    let o = run(c);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("1 file failed: the messages above say why"),
        "{err}"
    );
    assert!(!err.contains("report"), "no --report was given: {err}");
    let o = run(colorize_cmd(
        &[&bad],
        &tmp.path().join("out"),
        "none",
        &tmp.path().join("r.ndjson"),
    ));
    assert!(stderr(&o).contains("lines in the report"), "{}", stderr(&o));
}
