//! Every statement in the user's documents is true of the binary: each ```` ```sh ```` block of
//! README.md, GUIDE.md and FAQ.md runs as written and exits 0 (README "Development",
//! CONTRIBUTING.md "Tests"), and every Markdown link between the documents leads somewhere.
//!
//! Each document's blocks run with `bash -euo pipefail`, in order, each in a fresh folder holding
//! a copy of `examples/photos` (so the documents' relative paths work), with its own HOME and XDG
//! folders,
//! `ddcolor` on PATH (the binary under test), the test model in place of any download
//! (`DDCOLOR_WEIGHTS`), and `HF_ENDPOINT` on a closed loopback port, so nothing reaches the
//! internet. `cargo run --release --` becomes `ddcolor`; lines that build or install
//! (`cargo install`, `cargo test`, ...) are left out, and any other `cargo` is refused. A block
//! right after `<!-- readme-test: skip: REASON -->` is listed with its reason and not run; blocks
//! with another info string (`text`, `console`, `json`, `rust`) are not run either.
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SKIP_MARKER: &str = "<!-- readme-test: skip:";
/// Lines about building or installing: the test runs the binary cargo has already built.
const BUILD_LINES: [&str; 5] = [
    "cargo install",
    "cargo uninstall",
    "cargo build",
    "cargo test",
    "cargo bench",
];
/// A block that runs longer than this is killed, and fails.
const TIMEOUT: Duration = Duration::from_secs(300);
/// The documents whose blocks are run, each with the number of blocks that must at least run: a
/// document that lost its examples, or a parser that no longer finds them, fails instead of
/// passing with nothing run.
const README: (&str, usize) = ("README.md", 5);
const GUIDE: (&str, usize) = ("GUIDE.md", 4);
const FAQ: (&str, usize) = ("FAQ.md", 1);
/// The documents whose Markdown links and `#anchors` must resolve.
const LINKED: [&str; 5] = [
    "README.md",
    "GUIDE.md",
    "FAQ.md",
    "BENCHMARKS.md",
    "CONTRIBUTING.md",
];

/// One fenced code block of a document.
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    info: String,
    body: String,
    /// The reason of a skip marker right before the fence.
    skip: Option<String>,
}

/// The fenced blocks of a document, with their skip markers. A marker that does not stand on the
/// line right before a fence is an error (it would silently skip nothing, or the wrong block).
fn blocks(doc: &str) -> Result<Vec<Block>, String> {
    let mut out = Vec::new();
    let mut skip: Option<(usize, String)> = None;
    let mut lines = doc.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix(SKIP_MARKER) {
            let reason = rest
                .strip_suffix("-->")
                .ok_or(format!("line {}: the skip marker is not closed", i + 1))?
                .trim();
            if reason.is_empty() {
                return Err(format!("line {}: a skip marker needs a reason", i + 1));
            }
            skip = Some((i + 1, reason.to_owned()));
            continue;
        }
        if let Some(info) = t.strip_prefix("```") {
            let mut body = String::new();
            loop {
                let (_, l) = lines
                    .next()
                    .ok_or(format!("line {}: the block is not closed", i + 1))?;
                if l.trim() == "```" {
                    break;
                }
                body.push_str(l);
                body.push('\n');
            }
            out.push(Block {
                line: i + 1,
                info: info.trim().to_owned(),
                body,
                skip: skip.take().map(|(_, reason)| reason),
            });
            continue;
        }
        if let Some((at, _)) = skip {
            return Err(format!(
                "line {at}: a skip marker must stand on the line right before a ``` block"
            ));
        }
    }
    Ok(out)
}

/// The block as it is run, and the lines left out (building and installing).
fn script(b: &Block) -> (String, Vec<String>) {
    let mut run = String::new();
    let mut left_out = Vec::new();
    for (n, line) in b.body.lines().enumerate() {
        let line = line.replace("cargo run --release -- ", "ddcolor ");
        let t = line.trim_start();
        if BUILD_LINES.iter().any(|c| t.starts_with(c)) {
            left_out.push(t.to_owned());
            continue;
        }
        let code = if t.starts_with('#') {
            ""
        } else {
            t.split(" #").next().unwrap_or("")
        };
        assert!(
            !code.split_whitespace().any(|w| w == "cargo"),
            "line {}: `{t}` runs cargo inside the test; mark its block \
             `<!-- readme-test: skip: REASON -->` or make it a build line",
            b.line + 1 + n
        );
        run.push_str(&line);
        run.push('\n');
    }
    (run, left_out)
}

/// Copy the folder `from` (files and folders only) to `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().unwrap().is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// The last `n` characters of `s` (whole characters), marked when cut.
fn tail(s: &str, n: usize) -> String {
    let count = s.chars().count();
    if count <= n {
        return s.to_owned();
    }
    let cut: String = s.chars().skip(count - n).collect();
    format!("[...]{cut}")
}

/// Run one block of the document `doc` in a fresh sandbox; `Err` says what went wrong, with its
/// output.
fn run_block(doc: &str, b: &Block, script: &str) -> Result<Duration, String> {
    use std::os::unix::process::CommandExt;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let work = dir.join("work");
    copy_dir(&repo.join("examples/photos"), &work.join("examples/photos"));
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(crate::util::ddcolor_bin(), bin.join("ddcolor")).unwrap();
    for d in ["home", "cache", "data", "config"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let weights = crate::util::golden("ddcolor-test.safetensors")
        .canonicalize()
        .expect("../shared/golden/ddcolor-test.safetensors");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path =
        std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(&path)))
            .unwrap();
    let (out_file, err_file) = (dir.join("stdout"), dir.join("stderr"));
    let started = Instant::now();
    let mut child = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(&work)
        // nothing from the caller's environment (a DDCOLOR_CACHE, a Slurm task's variables)
        .env_clear()
        .env("PATH", path)
        .env("HOME", dir.join("home"))
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("DDCOLOR_WEIGHTS", &weights)
        .env(
            "HF_ENDPOINT",
            format!("http://127.0.0.1:{}", crate::redis_util::free_port()),
        )
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(std::fs::File::create(&err_file).unwrap())
        .process_group(0)
        .spawn()
        .expect("run bash");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > TIMEOUT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = started.elapsed();
    // the block's process group: whatever it left running, or all of it after a timeout
    // SAFETY: kill(2) with the group id of the child spawned above
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
    let status = match status {
        Some(s) if s.success() => return Ok(elapsed),
        Some(s) => s.to_string(),
        None => {
            let _ = child.wait();
            format!("killed after {} s", TIMEOUT.as_secs())
        }
    };
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
    let (stdout, stderr) = (read(&out_file), read(&err_file));
    Err(format!(
        "{doc} block at line {} ({status}):\n{script}--- stdout ---\n{}\n--- stderr ---\n{}",
        b.line,
        tail(&stdout, 4000),
        tail(&stderr, 4000)
    ))
}

/// Run every ```` ```sh ```` block of the document `name` (at least `min_run` of them).
fn shell_blocks_run((name, min_run): (&str, usize)) {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let all = blocks(&text).unwrap_or_else(|e| panic!("{name} {e}"));
    let mut ran = 0;
    let mut failures = Vec::new();
    for b in all.iter().filter(|b| b.info == "sh") {
        if let Some(reason) = &b.skip {
            eprintln!("{name}: line {}: skipped: {reason}", b.line);
            continue;
        }
        let (script, left_out) = script(b);
        for l in &left_out {
            eprintln!("{name}: line {}: left out: {l}", b.line);
        }
        match run_block(name, b, &script) {
            Ok(t) => eprintln!("{name}: line {}: ok ({:.1} s)", b.line, t.as_secs_f64()),
            Err(e) => {
                eprintln!("{name}: line {}: FAILED", b.line);
                failures.push(e);
            }
        }
        ran += 1;
    }
    let skipped = all.iter().filter(|b| b.info == "sh" && b.skip.is_some());
    eprintln!(
        "{name}: {ran} sh blocks run, {} skipped, {} blocks of other kinds not run",
        skipped.count(),
        all.iter().filter(|b| b.info != "sh").count()
    );
    assert!(
        failures.is_empty(),
        "{} {name} block(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(
        ran >= min_run,
        "only {ran} {name} blocks ran (at least {min_run} expected): were they marked skip, or \
         is the parser broken?"
    );
}

#[test]
fn readme_shell_blocks_run() {
    shell_blocks_run(README);
}

#[test]
fn guide_shell_blocks_run() {
    shell_blocks_run(GUIDE);
}

#[test]
fn faq_shell_blocks_run() {
    shell_blocks_run(FAQ);
}

#[test]
fn skip_markers_and_fences_are_parsed() {
    let text = "a\n<!-- readme-test: skip: needs a GPU -->\n```sh\nnvidia-smi\n```\n\n```sh\n\
                cargo install --path .\ncargo run --release -- --version\n```\n```text\nx\n```\n";
    let b = blocks(text).unwrap();
    assert_eq!(b.len(), 3);
    assert_eq!(b[0].skip.as_deref(), Some("needs a GPU"));
    assert_eq!((b[1].line, b[1].skip.as_deref()), (7, None));
    let (run, left_out) = script(&b[1]);
    assert_eq!(run, "ddcolor --version\n");
    assert_eq!(left_out, ["cargo install --path ."]);
    assert_eq!(b[2].info, "text");
    // a marker that skips nothing, or gives no reason, is refused
    assert!(blocks("<!-- readme-test: skip: x -->\n\n```sh\n```\n").is_err());
    assert!(blocks("<!-- readme-test: skip: -->\n```sh\n```\n").is_err());
}

/// GitHub's anchor for a heading: lowercase, letters, digits, `-` and `_` kept, spaces made `-`,
/// everything else (punctuation, backticks) dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Each line of a Markdown document outside fenced code blocks, with its 1-based number. A fence
/// opens on a line that starts with ```` ``` ```` and holds no other backtick, and closes on a
/// line that is only ```` ``` ````.
fn prose(doc: &str) -> Vec<(usize, &str)> {
    let mut fence = false;
    let mut out = Vec::new();
    for (i, line) in doc.lines().enumerate() {
        let t = line.trim();
        if fence {
            fence = t != "```";
        } else if t
            .strip_prefix("```")
            .is_some_and(|rest| !rest.contains('`'))
        {
            fence = true;
        } else {
            out.push((i + 1, line));
        }
    }
    out
}

/// The anchors of a document's headings, a repeated heading's with GitHub's `-1`, `-2`, ...
fn anchors(doc: &str) -> HashSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = HashSet::new();
    for (_, line) in prose(doc) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        let Some(text) = line[hashes..].strip_prefix(' ') else {
            continue;
        };
        if !(1..=6).contains(&hashes) {
            continue;
        }
        let a = anchor(text);
        let n = seen.entry(a.clone()).or_insert(0);
        out.insert(if *n == 0 { a } else { format!("{a}-{n}") });
        *n += 1;
    }
    out
}

/// `line` without its code spans (a run of backticks up to the next run of the same length).
fn without_code(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find('`') {
        out.push_str(&rest[..at]);
        let ticks = rest[at..].chars().take_while(|&c| c == '`').count();
        let after = &rest[at + ticks..];
        let fence = "`".repeat(ticks);
        // the closing run: the same number of backticks, not part of a longer run
        let close = (0..after.len()).find(|&i| {
            after[i..].starts_with(&fence)
                && !after[i + ticks..].starts_with('`')
                && (i == 0 || !after[..i].ends_with('`'))
        });
        match close {
            Some(i) => rest = &after[i + ticks..],
            None => {
                out.push_str(&rest[at..]);
                return out;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The targets of a document's inline links and images (`[text](target)`), with their lines;
/// none from code blocks or code spans.
fn links(doc: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in prose(doc) {
        let text = without_code(line);
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            let target = &rest[at + 2..];
            let Some(end) = target.find(')') else { break };
            out.push((n, target[..end].trim().to_owned()));
            rest = &target[end..];
        }
    }
    out
}

/// Every relative link of the documents `names` (paths under `root`) that leads nowhere: a file
/// that does not exist, or an `#anchor` that no heading of the Markdown file it names has.
/// Links to other sites are not followed.
fn dead_links(root: &Path, names: &[&str]) -> Vec<String> {
    let mut dead = Vec::new();
    let mut cache: HashMap<std::path::PathBuf, Option<HashSet<String>>> = HashMap::new();
    for name in names {
        let path = root.join(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                dead.push(format!("{name}: {e}"));
                continue;
            }
        };
        for (line, target) in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, frag) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target.as_str(), None),
            };
            let file = if file.is_empty() {
                path.clone()
            } else {
                path.parent().unwrap_or(root).join(file)
            };
            if !file.exists() {
                dead.push(format!("{name}:{line}: {target}: no such file"));
                continue;
            }
            let Some(frag) = frag else { continue };
            let headings = cache.entry(file.clone()).or_insert_with(|| {
                (file.extension().is_some_and(|e| e == "md"))
                    .then(|| std::fs::read_to_string(&file).ok())
                    .flatten()
                    .map(|t| anchors(&t))
            });
            match headings {
                Some(h) if h.contains(frag) => {}
                Some(_) => dead.push(format!("{name}:{line}: {target}: no such heading")),
                None => dead.push(format!(
                    "{name}:{line}: {target}: an anchor into a file that is not Markdown"
                )),
            }
        }
    }
    dead
}

/// The split into README, guide, FAQ, benchmarks and contributing left no dead link: every
/// relative link and `#anchor` between them (and to the files they name) resolves.
#[test]
fn links_between_the_documents_resolve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dead = dead_links(root, &LINKED);
    assert!(dead.is_empty(), "dead links:\n{}", dead.join("\n"));
    // the README leads on to each of the others
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let targets: Vec<String> = links(&readme).into_iter().map(|(_, t)| t).collect();
    for doc in &LINKED[1..] {
        assert!(
            targets
                .iter()
                .any(|t| t == doc || t.starts_with(&format!("{doc}#"))),
            "README.md does not link {doc}"
        );
    }
}

#[test]
fn dead_links_and_anchors_are_found() {
    assert_eq!(
        anchor("Reviewing the results: `ddcolor gallery`"),
        "reviewing-the-results-ddcolor-gallery"
    );
    assert_eq!(
        anchor("Pre- and post-processing of a large scan"),
        "pre--and-post-processing-of-a-large-scan"
    );
    assert_eq!(
        anchor("`--compat upstream` against the authors' pipeline (issue #17)"),
        "--compat-upstream-against-the-authors-pipeline-issue-17"
    );
    let tmp = tempfile::tempdir().unwrap();
    let write = |n: &str, t: &str| std::fs::write(tmp.path().join(n), t).unwrap();
    write(
        "A.md",
        "# A\n\n## Same\n\n## Same\n\n[ok](B.md#b-two) [ok](#same-1) [ok](B.md) `[no](C.md)`\n\
         ```sh\n# not a heading\n[no](D.md)\n```\n[dead](C.md) [dead](B.md#nowhere)\n\
         [dead](#not-a-heading) [web](https://example.org/x.md#y) ![img](B.md#b-two)\n",
    );
    write("B.md", "# B\n\n### B, two!\n");
    let dead = dead_links(tmp.path(), &["A.md", "B.md"]);
    assert_eq!(
        dead,
        [
            "A.md:12: C.md: no such file",
            "A.md:12: B.md#nowhere: no such heading",
            "A.md:13: #not-a-heading: no such heading",
        ],
        "{dead:?}"
    );
}
