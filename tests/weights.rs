//! Weights by name: found on the machine (./weights, the data dir, a Hugging Face hub cache) or
//! downloaded from a hub (here a loopback stand-in, `hub_server`), with resume, verification,
//! token and offline instructions; plus completions and the man page.
//!
//! Every child process gets its own HOME, data dir, hub cache and working directory, and an
//! HF_ENDPOINT on 127.0.0.1 (a closed port unless a test serves one): nothing leaves the host.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::hub_server::{Faults, HubFile, HubServer};
use crate::util::golden;

const REPO: &str = "piddnad/ddcolor_paper_tiny";
const TOKEN: &str = "hf_test_token_123";

/// A sandbox for one test: folders, and the `ddcolor` command that uses them.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let s = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        for d in ["work", "home", "data", "hf"] {
            std::fs::create_dir_all(s.dir.path().join(d)).unwrap();
        }
        s
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Where downloads land: `$XDG_DATA_HOME/ddcolor/weights/paper_tiny/`.
    fn model_dir(&self) -> PathBuf {
        self.path("data/ddcolor/weights/paper_tiny")
    }

    /// `ddcolor` with this sandbox's environment and `endpoint` as HF_ENDPOINT.
    fn cmd(&self, endpoint: &str) -> Command {
        let mut c = Command::new(crate::util::ddcolor_bin());
        c.current_dir(self.path("work"))
            .env("HOME", self.path("home"))
            .env("XDG_DATA_HOME", self.path("data"))
            .env("XDG_CACHE_HOME", self.path("home/.cache"))
            .env("HF_HOME", self.path("hf"))
            .env("HF_ENDPOINT", endpoint)
            .env("DDCOLOR_CACHE", "none");
        for v in [
            "DDCOLOR_WEIGHTS",
            "DDCOLOR_MODEL",
            "DDCOLOR_WEIGHTS_DIR",
            "HF_HUB_CACHE",
            "HUGGINGFACE_HUB_CACHE",
            "HF_TOKEN",
            "HUGGING_FACE_HUB_TOKEN",
            "HF_HUB_OFFLINE",
            "ALL_PROXY",
            "all_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
        ] {
            c.env_remove(v);
        }
        c
    }

    /// `colorize` of the golden gray image at size 64 into `work/out`.
    fn colorize(&self, endpoint: &str, extra: &[&str]) -> Output {
        let mut c = self.cmd(endpoint);
        c.arg("colorize")
            .arg(golden("e2e-gray.png"))
            .args(["--output", "out", "--size", "64", "--device", "cpu"])
            .args(extra);
        c.output().unwrap()
    }

    /// `weights fetch paper_tiny`.
    fn fetch_tiny(&self, endpoint: &str) -> Output {
        self.cmd(endpoint)
            .args(["weights", "fetch", "paper_tiny"])
            .output()
            .unwrap()
    }
}

/// An endpoint on a loopback port that nothing listens on.
fn closed_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

fn checkpoint() -> Vec<u8> {
    std::fs::read(golden("ddcolor-test-raw.bin")).unwrap()
}

fn config() -> Vec<u8> {
    std::fs::read(golden("ddcolor-test.json")).unwrap()
}

fn hub_files() -> Vec<HubFile> {
    vec![
        HubFile::new(REPO, "pytorch_model.bin", checkpoint(), true),
        HubFile::new(REPO, "config.json", config(), false),
    ]
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn cdn_requests(server: &HubServer) -> Vec<crate::hub_server::Request> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/cdn/"))
        .collect()
}

/// No stray files beside a completed download.
fn assert_only_final_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".part"), "left behind: {name}");
    }
}

#[test]
fn fetch_with_token_then_colorize_offline_with_the_fetched_model() {
    let sb = Sandbox::new();
    let server = HubServer::start(
        hub_files(),
        Faults {
            token: Some(TOKEN.into()),
            ..Faults::default()
        },
    );
    // without the token the hub refuses, and the message says what to set
    let o = sb.fetch_tiny(&server.endpoint());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));
    assert!(stderr(&o).contains("HF_TOKEN"), "{}", stderr(&o));
    assert!(!sb.model_dir().join("pytorch_model.bin").exists());

    let o = sb
        .cmd(&server.endpoint())
        .env("HF_TOKEN", TOKEN)
        .args(["weights", "fetch", "paper_tiny"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let dest = sb.model_dir().join("pytorch_model.bin");
    assert!(
        stdout(&o).contains(dest.to_str().unwrap()),
        "{}",
        stdout(&o)
    );
    assert!(stderr(&o).contains("SHA-256 verified"), "{}", stderr(&o));
    assert!(
        std::fs::read(&dest).unwrap() == checkpoint(),
        "bytes differ"
    );
    assert_eq!(
        std::fs::read(sb.model_dir().join("config.json")).unwrap(),
        config()
    );
    assert_only_final_files(&sb.model_dir());

    // the token went to the hub on every /resolve/ request, and never to the storage
    let reqs = server.requests();
    let resolves: Vec<_> = reqs
        .iter()
        .filter(|r| r.path.contains("/resolve/"))
        .collect();
    assert_eq!(
        resolves.len(),
        3,
        "refused, then checkpoint and config: {reqs:?}"
    );
    for r in resolves.iter().rev().take(2) {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{r:?}"
        );
    }
    let cdn = cdn_requests(&server);
    assert_eq!(cdn.len(), 1, "{reqs:?}");
    assert_eq!(
        cdn[0].header("authorization"),
        None,
        "token leaked to storage"
    );
    assert_eq!(cdn[0].header("range"), None);

    // the hub is gone: colorize finds the fetched model in the data dir
    let endpoint = server.endpoint();
    drop(server);
    let o = sb.colorize(&endpoint, &["--model", "paper_tiny"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(dest.to_str().unwrap()),
        "{}",
        stderr(&o)
    );
    assert!(sb.path("work/out/e2e-gray.png").is_file());

    // and `weights list` says where it is
    let o = sb
        .cmd(&endpoint)
        .args(["weights", "list"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let list = stdout(&o);
    let line = list
        .lines()
        .find(|l| l.starts_with("paper_tiny"))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        line.contains("ConvNeXt-T") && line.contains("220 MB"),
        "{list}"
    );
    assert!(line.contains(dest.to_str().unwrap()), "{list}");
    assert!(list.contains("modelscope (default)"), "{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with("paper ") && l.trim_end().ends_with('-')),
        "{list}"
    );
}

#[test]
fn colorize_downloads_on_first_use() {
    let sb = Sandbox::new();
    let server = HubServer::start(hub_files(), Faults::default());
    let o = sb.colorize(&server.endpoint(), &["--model", "paper_tiny"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("downloading"), "{}", stderr(&o));
    assert!(sb.path("work/out/e2e-gray.png").is_file());
    assert!(std::fs::read(sb.model_dir().join("pytorch_model.bin")).unwrap() == checkpoint());
    // a second run downloads nothing
    let before = server.requests().len();
    let o = sb.colorize(
        &server.endpoint(),
        &["--model", "paper_tiny", "--overwrite"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(server.requests().len(), before);
}

/// A download whose stderr is closed (`colorize ... 2>&1 | head -2`, the reader gone): the
/// messages are dropped, the model is downloaded and the image written, exit 0 (#25).
#[test]
fn a_download_with_a_closed_stderr_finishes() {
    let sb = Sandbox::new();
    let server = HubServer::start(hub_files(), Faults::default());
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut c = sb.cmd(&server.endpoint());
    c.arg("colorize")
        .arg(golden("e2e-gray.png"))
        .args(["--output", "out", "--size", "64", "--device", "cpu"])
        .args(["--model", "paper_tiny"])
        .stdout(std::process::Stdio::null())
        .stderr(writer);
    let status = c.status().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(sb.path("work/out/e2e-gray.png").is_file());
    assert!(std::fs::read(sb.model_dir().join("pytorch_model.bin")).unwrap() == checkpoint());
}

#[test]
fn an_interrupted_transfer_resumes_with_a_range_request() {
    let sb = Sandbox::new();
    let server = HubServer::start(
        hub_files(),
        Faults {
            cut_first_transfer: true,
            ..Faults::default()
        },
    );
    let o = sb.fetch_tiny(&server.endpoint());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("retrying"), "{}", stderr(&o));
    let cut = server.cut_at().expect("the first transfer was cut");
    let cdn = cdn_requests(&server);
    assert_eq!(cdn.len(), 2, "{cdn:?}");
    assert_eq!(cdn[0].header("range"), None);
    assert_eq!(
        cdn[1].header("range"),
        Some(format!("bytes={cut}-").as_str()),
        "the second request resumes where the first stopped"
    );
    assert!(
        std::fs::read(sb.model_dir().join("pytorch_model.bin")).unwrap() == checkpoint(),
        "the resumed file is not byte-identical"
    );
    assert_only_final_files(&sb.model_dir());
}

#[test]
fn a_partial_file_from_an_earlier_run_is_resumed() {
    let sb = Sandbox::new();
    let server = HubServer::start(hub_files(), Faults::default());
    std::fs::create_dir_all(sb.model_dir()).unwrap();
    let ck = checkpoint();
    std::fs::write(
        sb.model_dir().join("pytorch_model.bin.part"),
        &ck[..100_000],
    )
    .unwrap();
    let o = sb.fetch_tiny(&server.endpoint());
    assert!(o.status.success(), "{}", stderr(&o));
    let cdn = cdn_requests(&server);
    assert_eq!(cdn.len(), 1, "{cdn:?}");
    assert_eq!(cdn[0].header("range"), Some("bytes=100000-"));
    assert!(std::fs::read(sb.model_dir().join("pytorch_model.bin")).unwrap() == ck);
    assert_only_final_files(&sb.model_dir());
}

#[test]
fn a_corrupted_transfer_is_rejected_and_leaves_nothing() {
    let sb = Sandbox::new();
    let server = HubServer::start(
        hub_files(),
        Faults {
            corrupt: true,
            ..Faults::default()
        },
    );
    let o = sb.fetch_tiny(&server.endpoint());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("SHA-256"), "{err}");
    assert!(err.contains("does not match"), "{err}");
    assert!(
        err.contains(&HubFile::new(REPO, "x", checkpoint(), true).sha256()),
        "{err}"
    );
    assert!(!sb.model_dir().join("pytorch_model.bin").exists());
    assert!(!sb.model_dir().join("pytorch_model.bin.part").exists());
    // colorize fails the same way, before writing anything
    let o = sb.colorize(&server.endpoint(), &["--model", "paper_tiny"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!sb.path("work/out").exists());
    assert!(!sb.model_dir().join("pytorch_model.bin").exists());
}

/// The layout huggingface_hub writes: blobs named by digest, snapshots of symbolic links.
fn build_hub_cache(
    hub: &Path,
    repo_dir: &str,
    file: &str,
    bytes: &[u8],
    with_ref: bool,
) -> PathBuf {
    let rev = "4f3c2a1b0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b";
    let root = hub.join(repo_dir);
    let snap = root.join("snapshots").join(rev);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(root.join("blobs")).unwrap();
    if with_ref {
        std::fs::create_dir_all(root.join("refs")).unwrap();
        std::fs::write(root.join("refs/main"), rev).unwrap();
    }
    let blob = crate::hub_server::sha256_hex(bytes);
    std::fs::write(root.join("blobs").join(&blob), bytes).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(format!("../../blobs/{blob}"), snap.join(file)).unwrap();
    #[cfg(not(unix))]
    std::fs::write(snap.join(file), bytes).unwrap();
    std::fs::write(snap.join("config.json"), config()).unwrap();
    snap.join(file)
}

#[test]
fn a_hugging_face_hub_cache_is_used_without_any_download() {
    let sb = Sandbox::new();
    let offline = closed_endpoint();
    let in_cache = build_hub_cache(
        &sb.path("hf/hub"),
        "models--piddnad--ddcolor_paper_tiny",
        "pytorch_model.bin",
        &checkpoint(),
        true,
    );
    let o = sb.colorize(&offline, &["--model", "paper_tiny"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(in_cache.to_str().unwrap()),
        "{}",
        stderr(&o)
    );
    assert!(sb.path("work/out/e2e-gray.png").is_file());

    let o = sb.cmd(&offline).args(["weights", "list"]).output().unwrap();
    assert!(stdout(&o).contains("hub cache"), "{}", stdout(&o));
    // fetch has nothing to do
    let o = sb.fetch_tiny(&offline);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("already here"), "{}", stdout(&o));
    assert!(!sb.model_dir().exists());
    // bench times it too
    let o = sb
        .cmd(&offline)
        .args([
            "bench",
            "--model",
            "paper_tiny",
            "--size",
            "64",
            "--runs",
            "1",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("\"median_ms\""), "{}", stdout(&o));

    // HF_HUB_CACHE names the cache directly; without refs/main the newest snapshot counts;
    // the authors' .pth in piddnad/DDColor-models counts as well
    let sb = Sandbox::new();
    let pth = build_hub_cache(
        &sb.path("elsewhere"),
        "models--piddnad--DDColor-models",
        "ddcolor_paper_tiny.pth",
        &std::fs::read(golden("ddcolor-test.pth")).unwrap(),
        false,
    );
    let o = sb
        .cmd(&offline)
        .env("HF_HUB_CACHE", sb.path("elsewhere"))
        .args(["weights", "list"])
        .output()
        .unwrap();
    assert!(stdout(&o).contains(pth.to_str().unwrap()), "{}", stdout(&o));
    let mut c = sb.cmd(&offline);
    c.env("HF_HUB_CACHE", sb.path("elsewhere"))
        .arg("colorize")
        .arg(golden("e2e-gray.png"))
        .args(["--output", "out", "--size", "64", "--model", "paper_tiny"]);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn local_weights_folder_and_the_default_model() {
    let sb = Sandbox::new();
    let offline = closed_endpoint();
    // the default model (modelscope) in ./weights/<name>/pytorch_model.bin
    std::fs::create_dir_all(sb.path("work/weights/modelscope")).unwrap();
    std::fs::copy(
        golden("ddcolor-test-raw.bin"),
        sb.path("work/weights/modelscope/pytorch_model.bin"),
    )
    .unwrap();
    let o = sb.colorize(&offline, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("weights/modelscope/pytorch_model.bin"),
        "{}",
        stderr(&o)
    );
    // ./weights/ddcolor_<name>.pth, the authors' file name
    std::fs::copy(
        golden("ddcolor-test.pth"),
        sb.path("work/weights/ddcolor_artistic.pth"),
    )
    .unwrap();
    let o = sb.colorize(&offline, &["--model", "artistic", "--overwrite"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("ddcolor_artistic.pth"),
        "{}",
        stderr(&o)
    );
    // --weights wins over --model; a folder means its pytorch_model.bin
    let o = sb.colorize(
        &offline,
        &[
            "--model",
            "paper",
            "--weights",
            "weights/modelscope",
            "--overwrite",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = sb.colorize(&offline, &["--weights", "no/such/file.bin"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no such file"), "{}", stderr(&o));
}

#[test]
fn offline_the_error_says_which_file_goes_where_and_how_to_get_it() {
    let sb = Sandbox::new();
    let offline = closed_endpoint();
    let dest = sb.model_dir().join("pytorch_model.bin");
    for o in [
        sb.colorize(&offline, &["--model", "paper_tiny"]),
        sb.fetch_tiny(&offline),
    ] {
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("cannot reach"), "{err}");
        assert!(err.contains(dest.to_str().unwrap()), "{err}");
        assert!(
            err.contains(&format!(
                "huggingface-cli download {REPO} pytorch_model.bin config.json --local-dir {}",
                sb.model_dir().display()
            )),
            "{err}"
        );
        assert!(
            err.contains(&format!(
                "curl -L --create-dirs -o {} {offline}/{REPO}/resolve/main/pytorch_model.bin",
                dest.display()
            )),
            "{err}"
        );
        assert!(err.contains("--weights"), "{err}");
        assert!(!dest.exists());
        assert!(!sb.path("work/out").exists());
    }
    // HF_HUB_OFFLINE: no attempt at all, the same instructions
    let o = sb
        .cmd(&offline)
        .env("HF_HUB_OFFLINE", "1")
        .args(["weights", "fetch", "paper_tiny"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("HF_HUB_OFFLINE"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("huggingface-cli download"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn completions_for_every_shell_and_the_man_page() {
    let sb = Sandbox::new();
    let offline = closed_endpoint();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let o = sb
            .cmd(&offline)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let s = stdout(&o);
        assert!(s.len() > 500, "{shell}: {s}");
        assert!(s.contains("colorize"), "{shell}");
        if ["bash", "zsh", "fish"].contains(&shell) {
            assert!(s.contains("paper_tiny"), "{shell}: --model values");
        }
    }
    let o = sb.cmd(&offline).arg("man").output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let page = stdout(&o);
    assert!(page.contains("\n.TH ddcolor 1 "), "{page}");
    assert!(page.contains("colorize"));
    // roff writes a hyphen of an option as \-
    for opt in ["cache", "model", "weights"] {
        assert!(
            page.contains(&format!("\\-\\-{opt}")) || page.contains(&format!("--{opt}")),
            "--{opt} missing from the man page"
        );
    }
    for s in ["HF_ENDPOINT", "HF_TOKEN", "EXIT STATUS", "weights fetch"] {
        assert!(page.contains(s), "{s} missing from the man page");
    }
}

/// clap checks its definitions (duplicate flags, bad defaults) only in debug builds; the tests
/// run in release, so ask for the check here.
#[test]
fn the_command_line_definition_is_consistent() {
    <ddcolor::cli::Cli as clap::CommandFactory>::command().debug_assert();
}
