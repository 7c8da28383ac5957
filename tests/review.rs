//! The review loop as an archivist lives it: `colorize --report`, `ddcolor gallery` (from any
//! folder, with hostile file names and titles), flags saved as a `--files-from` list, and the
//! rerun that replaces exactly the flagged outputs.
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::batch::{ddcolor, report, run, stderr, tree};
use crate::util::{fixtures, golden};

/// `ddcolor colorize ARGS` with the golden model at 64 and no cache, run in `cwd`.
fn colorize_in(cwd: &Path, args: &[&str]) -> Output {
    let mut c = ddcolor();
    c.current_dir(cwd)
        .arg("colorize")
        .args(args)
        .arg("--weights")
        .arg(golden("ddcolor-test.safetensors"))
        .args(["--size", "64", "--device", "cpu", "--cache", "none"]);
    run(c)
}

fn gallery_in(cwd: &Path, reports: &[&Path], out: &Path, extra: &[&str]) -> Output {
    let mut c = ddcolor();
    c.current_dir(cwd)
        .arg("gallery")
        .args(reports)
        .arg("--output")
        .arg(out)
        .args(["--thumb-size", "64"])
        .args(extra);
    run(c)
}

/// A small album in `dir/album`: two photos at the top, one in a subfolder.
fn album(dir: &Path) {
    let a = dir.join("album");
    std::fs::create_dir_all(a.join("1950s")).unwrap();
    for (from, to) in [
        ("photos/cameraman.png", "cameraman.png"),
        ("photos/rocket.jpg", "rocket.jpg"),
        ("photos/1950s/cat-on-the-porch.jpg", "1950s/cat.jpg"),
    ] {
        std::fs::copy(fixtures(from), a.join(to)).unwrap();
    }
}

/// `colorize album --output colorized --report run.ndjson`, run in `dir/scans` over a small
/// album: the folder it ran in.
fn first_run(dir: &Path) -> PathBuf {
    let run_dir = dir.join("scans");
    album(&run_dir);
    let o = colorize_in(
        &run_dir,
        &["album", "--output", "colorized", "--report", "run.ndjson"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    run_dir
}

/// The page's data block, parsed, and the page itself.
fn page_data(review: &Path) -> (Value, String) {
    let html = std::fs::read_to_string(review.join("index.html")).unwrap();
    let open = "<script type=\"application/json\" id=\"data\">";
    let start = html.find(open).expect("the data block") + open.len();
    let len = html[start..].find("</script>").expect("its end");
    let data = serde_json::from_str(&html[start..start + len]).expect("the data block is JSON");
    (data, html)
}

fn items(data: &Value) -> &Vec<Value> {
    data["items"].as_array().unwrap()
}

#[test]
fn hostile_names_and_titles_stay_text() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("album");
    // a name that opens an HTML comment and a script, and a folder named `<` whose file name
    // makes the path `</script><img src=x onerror=...>.jpg`
    let names = [
        "<!--<script>.png".to_owned(),
        "</script><img src=x onerror=document.title='pwned'>.jpg".to_owned(),
        "line\u{2028}sep & \"quotes\" 'too'.png".to_owned(),
    ];
    for (n, from) in names.iter().zip([
        "photos/cameraman.png",
        "photos/rocket.jpg",
        "photos/cameraman.png",
    ]) {
        let p = a.join(n);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::copy(fixtures(from), &p).unwrap();
    }
    let r = tmp.path().join("run.ndjson");
    let o = colorize_in(
        tmp.path(),
        &["album", "--output", "out", "--report", r.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let title = "Album __DATA__ </title><script>alert(1)</script> & 'x'";
    let review = tmp.path().join("review");
    let o = gallery_in(tmp.path(), &[&r], &review, &["--title", title]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (data, html) = page_data(&review);
    // the page has its two script elements and no more; the data holds every name
    assert_eq!(html.matches("<script").count(), 2, "{html}");
    assert_eq!(html.matches("</script").count(), 2, "{html}");
    assert!(
        !html.contains("<img src=x"),
        "markup from a name reached the page"
    );
    assert!(
        !html.contains("<!--"),
        "a comment from a name reached the page"
    );
    let paths: Vec<&str> = items(&data)
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    for n in &names {
        let p = format!("album/{n}");
        assert!(paths.contains(&p.as_str()), "{p} not in {paths:?}");
    }
    // the title, escaped, in both places; the placeholder in it is not filled
    let escaped =
        "Album __DATA__ &lt;/title&gt;&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#39;x&#39;";
    assert_eq!(html.matches(escaped).count(), 2, "the title: {html}");
    assert_eq!(data["title"], title);
    // the policy: the inline script by its hash, no inline handlers
    let csp_at = html.find("Content-Security-Policy").expect("a CSP");
    let csp = html[csp_at..html[csp_at..].find('>').unwrap() + csp_at].replace("&#39;", "'");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let code_at = html.rfind("<script>").unwrap() + "<script>".len();
    let code = &html[code_at..code_at + html[code_at..].find("</script>").unwrap()];
    use base64::Engine as _;
    use sha2::Digest as _;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(code));
    assert!(csp.contains(&format!("'sha256-{hash}'")), "{csp}");
}

#[test]
fn the_gallery_works_from_any_folder_and_names_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = first_run(tmp.path());
    let rep = report(&run_dir.join("run.ndjson"));
    assert_eq!(rep[0]["root"], "album", "{rep:?}");
    assert_eq!(
        PathBuf::from(rep[0]["cwd"].as_str().unwrap()),
        run_dir.canonicalize().unwrap()
    );
    // from another folder, the report named by its absolute path
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let abs_report = run_dir.join("run.ndjson");
    let o = gallery_in(&elsewhere, &[&abs_report], Path::new("review"), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("6 thumbnails made"), "{}", stderr(&o));
    // a source that is gone is named, with where it was looked for, and the exit says so
    std::fs::remove_file(run_dir.join("album/1950s/cat.jpg")).unwrap();
    let o = gallery_in(&elsewhere, &[&abs_report], Path::new("review2"), &["-q"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("1 file named in the reports was not found")
            && err.contains(&run_dir.join("album/1950s/cat.jpg").display().to_string()),
        "{err}"
    );
    let (data, _) = page_data(&elsewhere.join("review2"));
    let cat = items(&data)
        .iter()
        .find(|i| i["path"] == "album/1950s/cat.jpg")
        .unwrap();
    assert!(
        cat["before_why"]
            .as_str()
            .unwrap()
            .starts_with("not found: "),
        "{cat}"
    );
}

#[test]
fn outputs_that_were_already_there_are_shown_and_do_not_hide_the_run_that_wrote_them() {
    let tmp = tempfile::tempdir().unwrap();
    album(tmp.path());
    let first = tmp.path().join("first.ndjson");
    let second = tmp.path().join("second.ndjson");
    for r in [&first, &second] {
        let o = colorize_in(
            tmp.path(),
            &["album", "--output", "out", "--report", r.to_str().unwrap()],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert!(report(&second).iter().all(|l| l["status"] == "skipped"));
    // the second report alone: every card has its output's thumbnail
    let o = gallery_in(tmp.path(), &[&second], Path::new("r2"), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (data, _) = page_data(&tmp.path().join("r2"));
    for i in items(&data) {
        assert!(i["after"].is_string(), "no output shown: {i}");
    }
    // both reports: the run that wrote each output, not the skip
    let o = gallery_in(tmp.path(), &[&first, &second], Path::new("r12"), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (data, _) = page_data(&tmp.path().join("r12"));
    assert_eq!(items(&data).len(), 3);
    for i in items(&data) {
        assert_eq!(i["status"], "inferred", "{i}");
    }
}

/// Flags saved from the page as the page saves them (each item's `rerun` line), then the
/// README's rerun: exactly the flagged outputs are replaced, in place, nothing else written.
#[test]
fn the_flagged_list_reruns_exactly_the_flagged_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = first_run(tmp.path());
    let o = gallery_in(
        &run_dir,
        &[Path::new("run.ndjson")],
        Path::new("review"),
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let (data, _) = page_data(&run_dir.join("review"));
    let flagged: Vec<&Value> = items(&data)
        .iter()
        .filter(|i| i["path"] == "album/1950s/cat.jpg" || i["path"] == "album/rocket.jpg")
        .collect();
    assert_eq!(flagged.len(), 2);
    let list: String = flagged
        .iter()
        .map(|i| format!("{}\n", i["rerun"].as_str().expect("a rerun line")))
        .collect();
    let before = tree(&run_dir.join("colorized"));
    assert_eq!(before.len(), 3);

    let rerun = |cwd: &Path, out: &str, saturation: &str| {
        std::fs::write(cwd.join("flagged.txt"), &list).unwrap();
        let o = colorize_in(
            cwd,
            &[
                "--files-from",
                "flagged.txt",
                "--overwrite",
                "--output",
                out,
                "--saturation",
                saturation,
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    };
    // as the README writes it: where the first run ran
    rerun(&run_dir, "colorized", "0.5");
    let after = tree(&run_dir.join("colorized"));
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "the rerun wrote somewhere else"
    );
    let changed: Vec<&PathBuf> = after
        .iter()
        .filter(|(k, v)| before[*k] != **v)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        changed,
        [Path::new("1950s/cat.jpg"), Path::new("rocket.jpg")],
        "exactly the flagged outputs are replaced"
    );
    // and from any other folder, naming the output folder by its absolute path
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let out = run_dir.join("colorized");
    rerun(&elsewhere, out.to_str().unwrap(), "1.5");
    let again = tree(&out);
    assert_eq!(
        again.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    assert_ne!(
        again[Path::new("rocket.jpg")],
        after[Path::new("rocket.jpg")]
    );
    assert_eq!(
        again[Path::new("cameraman.png")],
        before[Path::new("cameraman.png")]
    );
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        1,
        "only flagged.txt"
    );
}

/// `--files-from` with rsync's `/./`: the part after it is the mirrored path; a `..` after it
/// is refused; a leading `./` (as `find .` prints) is the current folder as before.
#[test]
fn a_files_from_entry_mirrors_what_follows_its_marker() {
    let tmp = tempfile::tempdir().unwrap();
    album(tmp.path());
    let abs = tmp.path().join("album");
    let list = format!(
        "{}/./1950s/cat.jpg\n./album/rocket.jpg\nalbum/./../album/cameraman.png\n",
        abs.display()
    );
    std::fs::write(tmp.path().join("list.txt"), list).unwrap();
    let r = tmp.path().join("r.ndjson");
    let o = colorize_in(
        tmp.path(),
        &[
            "--files-from",
            "list.txt",
            "--output",
            "out",
            "--report",
            r.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let got = tree(&tmp.path().join("out"));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        [Path::new("1950s/cat.jpg"), Path::new("album/rocket.jpg")]
    );
    let rep = report(&r);
    let failed: Vec<_> = rep.iter().filter(|l| l["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{rep:?}");
    assert!(
        failed[0]["error"].as_str().unwrap().contains("/./"),
        "{rep:?}"
    );
}
