//! Downloads from the Hugging Face hub: `{endpoint}/{repo}/resolve/{revision}/{file}`.
//!
//! A file is written to `<dest>.part`, resumed with an HTTP `Range` request after an
//! interruption (in this process, or a later one), checked against the size and SHA-256 that
//! the hub announces (`X-Linked-Size` / `X-Linked-Etag` on its redirect to the storage, else
//! `Content-Length` / `ETag`; an LFS file's ETag is its SHA-256), and renamed to `dest` only
//! when complete and verified. An advisory lock on `<dest>.lock` makes concurrent processes
//! download it once. Redirects are followed here, so that `HF_TOKEN` goes to the hub only,
//! never to the storage it redirects to.
//!
//! Why this and not the `hf-hub` crate: [`super`].
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::ProgressBar;

use super::models::REVISION;
use crate::{hash, progress};

/// The public hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
const MAX_HOPS: usize = 10;
const CHUNK: usize = 1 << 20;

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// No answer at all: offline, DNS, firewall, refused.
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url}: HTTP {status}{hint}")]
    Status {
        url: String,
        status: u16,
        hint: String,
    },
    #[error(
        "{url}: transfer interrupted at {got} of {total} bytes ({reason}); the same command \
         resumes it from {}",
        crate::text::shown(part)
    )]
    Interrupted {
        url: String,
        got: u64,
        total: String,
        reason: String,
        part: PathBuf,
    },
    /// The bytes are not what the hub announced; nothing was kept.
    #[error(
        "{url}: the downloaded {what} does not match what the hub announced (got {got}, \
         expected {want}); the download was discarded and {} was not written",
        crate::text::shown(dest)
    )]
    Mismatch {
        url: String,
        dest: PathBuf,
        what: &'static str,
        got: String,
        want: String,
    },
    #[error("{url}: {reason}")]
    Protocol { url: String, reason: String },
    #[error("{}: {source}", crate::text::shown(path))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl HubError {
    /// The hub (or the storage behind it) could not be reached: the user needs the offline
    /// instructions.
    pub fn is_offline(&self) -> bool {
        matches!(self, HubError::Unreachable { .. })
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> HubError + '_ {
    move |source| HubError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What the hub says about a file: its size and SHA-256 (when the ETag is one).
#[derive(Debug, Clone, Default)]
struct Meta {
    size: Option<u64>,
    sha256: Option<String>,
}

/// `"abc..."`, `W/"abc..."` -> the SHA-256 in lower case, if the ETag is one (LFS files);
/// a git blob id (40 hex digits, small files) or anything else is not.
pub fn sha256_from_etag(etag: &str) -> Option<String> {
    let e = etag.trim();
    let e = e.strip_prefix("W/").unwrap_or(e).trim_matches('"');
    (e.len() == 64 && e.bytes().all(|b| b.is_ascii_hexdigit())).then(|| e.to_ascii_lowercase())
}

/// The origin (scheme, host, port; a default port left out) of a URL, by the URL standard
/// (the `url` crate, already in the tree through redis); `None` for what is not a URL.
fn origin(url: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()
        .map(|u| u.origin().ascii_serialization())
}

/// Resolve a `Location` header against the URL it came from, as a browser does (absolute,
/// scheme-relative, absolute-path, relative with `..`); `None` if either is not a URL.
fn join(base: &str, location: &str) -> Option<String> {
    url::Url::parse(base)
        .and_then(|b| b.join(location.trim()))
        .ok()
        .map(String::from)
}

/// `Content-Range: bytes a-b/total` or `bytes */total` -> (a, total).
fn content_range(v: &str) -> (Option<u64>, Option<u64>) {
    let v = v.trim().strip_prefix("bytes").unwrap_or(v).trim();
    let (range, total) = v.split_once('/').unwrap_or((v, "*"));
    let start = range
        .split_once('-')
        .and_then(|(a, _)| a.trim().parse().ok());
    (start, total.trim().parse().ok())
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// `<dest>.part`, where a download is written until it is complete.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// Whether the open file `f` is the file at `path` now (the `same-file` crate, already in
/// the tree through walkdir: device and inode on Unix, the file index on Windows).
fn same_file(f: &std::fs::File, path: &Path) -> bool {
    let (Ok(f), Ok(p)) = (
        f.try_clone().and_then(same_file::Handle::from_file),
        same_file::Handle::from_path(path),
    ) else {
        return false;
    };
    f == p
}

fn lock_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// A Hugging Face hub (or a mirror): where files are downloaded from, with which token.
#[derive(Debug, Clone)]
pub struct Hub {
    endpoint: String,
    token: Option<String>,
    offline: bool,
    retries: u32,
    agent: ureq::Agent,
}

impl Hub {
    /// `endpoint` without a trailing slash; `token` sent as a bearer token to it; `offline`:
    /// never download.
    pub fn new(endpoint: &str, token: Option<String>, offline: bool) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(format!("ddcolor/{}", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build();
        Self {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            token: token.filter(|t| !t.is_empty()),
            offline,
            retries: 5,
            agent: config.into(),
        }
    }

    /// `HF_ENDPOINT` (default [`DEFAULT_ENDPOINT`]), `HF_TOKEN` (or the older
    /// `HUGGING_FACE_HUB_TOKEN`), `HF_HUB_OFFLINE` (1/true/yes/on).
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        Self::new(
            &var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned()),
            var("HF_TOKEN").or_else(|| var("HUGGING_FACE_HUB_TOKEN")),
            offline,
        )
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn offline(&self) -> bool {
        self.offline
    }

    /// `{endpoint}/{repo}/resolve/main/{file}`.
    pub fn url(&self, repo: &str, file: &str) -> String {
        format!("{}/{repo}/resolve/{REVISION}/{file}", self.endpoint)
    }

    /// Download `file` of `repo` to `dest`, with a progress bar on stderr when it is a
    /// terminal and not `quiet`. An existing `dest` (another process may have just written it)
    /// is kept unless `replace`. Returns the size.
    pub fn download(
        &self,
        repo: &str,
        file: &str,
        dest: &Path,
        quiet: bool,
        replace: bool,
    ) -> Result<u64, HubError> {
        let url = self.url(repo, file);
        let dir = dest.parent().filter(|d| !d.as_os_str().is_empty());
        // made here: removed again if the download fails before anything arrives
        let made = dir.filter(|d| !d.exists());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let lock_file = lock_path(dest);
        let mut said = false;
        let lock = loop {
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_file)
                .map_err(io_err(&lock_file))?;
            if lock.try_lock().is_err() {
                if !quiet && !said {
                    said = true;
                    crate::say!(
                        "ddcolor: waiting for another process downloading {}",
                        crate::text::shown(dest)
                    );
                }
                lock.lock().map_err(io_err(&lock_file))?;
            }
            // its holder removes the lock file before unlocking it: a lock taken on a file
            // that is no longer at the path is no lock; take the one there now
            if same_file(&lock, &lock_file) {
                break lock;
            }
        };
        let result = if dest.is_file() && !replace {
            Ok(file_len(dest))
        } else {
            let short = repo.rsplit('/').next().unwrap_or(repo);
            self.download_locked(&url, &format!("{short}/{file}"), dest, quiet)
        };
        // no lock file left behind, whatever happened (removed while still held)
        let _ = std::fs::remove_file(&lock_file);
        let _ = lock.unlock();
        if let (Err(_), Some(dir)) = (&result, made) {
            // only if empty: a partial download stays for the next try to resume
            let part = part_path(dest);
            if std::fs::metadata(&part).is_ok_and(|m| m.len() == 0) {
                let _ = std::fs::remove_file(&part);
            }
            let _ = std::fs::remove_dir(dir);
        }
        result
    }

    fn download_locked(
        &self,
        url: &str,
        label: &str,
        dest: &Path,
        quiet: bool,
    ) -> Result<u64, HubError> {
        let part = part_path(dest);
        let bar = progress::stderr_bar(None, quiet);
        let visible = !bar.is_hidden();
        bar.set_style(
            progress::style(
                "{msg} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .progress_chars("=> "),
        );
        bar.set_message(label.to_owned());
        let say = |msg: String| {
            if visible {
                bar.println(msg);
            } else if !quiet {
                crate::say!("{msg}");
            }
        };
        if !visible && !quiet {
            crate::say!(
                "ddcolor: downloading {url}\n  to {}",
                crate::text::shown(dest)
            );
        }
        let mut meta = Meta::default();
        let mut tries = 0u32;
        // bytes that arrived in this process: after some, a failure to connect is a dropped
        // connection worth retrying, not an offline machine
        let mut received = 0u64;
        let mut restarted = false;
        loop {
            let started_at = file_len(&part);
            match self.attempt(url, &part, &bar, &mut meta, &mut received) {
                Ok(()) => {}
                Err(e) if tries < self.retries && retryable(&e, received) => {
                    tries += 1;
                    let wait = Duration::from_secs(1 << (tries - 1).min(3));
                    say(format!(
                        "ddcolor: {e}; retrying in {} s ({tries}/{})",
                        wait.as_secs(),
                        self.retries
                    ));
                    std::thread::sleep(wait);
                    continue;
                }
                Err(e) => {
                    bar.finish_and_clear();
                    return Err(e);
                }
            }
            let len = file_len(&part);
            if let Some(want) = meta.size.filter(|&w| w != len) {
                let _ = std::fs::remove_file(&part);
                bar.finish_and_clear();
                return Err(HubError::Mismatch {
                    url: url.to_owned(),
                    dest: dest.to_owned(),
                    what: "size",
                    got: format!("{len} bytes"),
                    want: format!("{want} bytes"),
                });
            }
            if let Some(want) = &meta.sha256 {
                bar.set_message(format!("{label} (verifying)"));
                let got = hash::sha256_file(&part).map_err(io_err(&part))?;
                if &got != want {
                    let _ = std::fs::remove_file(&part);
                    if started_at > 0 && !restarted {
                        // The partial file may have been of another revision: once more, whole.
                        restarted = true;
                        say(format!(
                            "ddcolor: the resumed download of {url} did not verify; \
                             downloading it again from the start"
                        ));
                        meta = Meta::default();
                        continue;
                    }
                    bar.finish_and_clear();
                    return Err(HubError::Mismatch {
                        url: url.to_owned(),
                        dest: dest.to_owned(),
                        what: "file's SHA-256",
                        got,
                        want: want.clone(),
                    });
                }
            }
            std::fs::rename(&part, dest).map_err(io_err(dest))?;
            if let Some(dir) = dest.parent() {
                // make the rename durable (best effort; not possible on every platform)
                let _ = File::open(dir).and_then(|d| d.sync_all());
            }
            bar.finish_and_clear();
            if !quiet {
                crate::say!(
                    "ddcolor: downloaded {} ({len} bytes{})",
                    crate::text::shown(dest),
                    if meta.sha256.is_some() {
                        ", SHA-256 verified"
                    } else {
                        ""
                    }
                );
            }
            return Ok(len);
        }
    }

    /// One request chain: follow the hub's redirects (reading its size and digest), then
    /// append the body to `part` from where it ends.
    fn attempt(
        &self,
        url: &str,
        part: &Path,
        bar: &ProgressBar,
        meta: &mut Meta,
        received: &mut u64,
    ) -> Result<(), HubError> {
        let mut offset = file_len(part);
        if meta.size.is_some_and(|s| offset > s) {
            offset = 0;
        }
        let hub_origin = origin(&self.endpoint);
        let mut cur = url.to_owned();
        for _ in 0..MAX_HOPS {
            let at_hub = hub_origin.is_some() && origin(&cur) == hub_origin;
            let mut req = self.agent.get(&cur);
            if at_hub {
                if let Some(t) = &self.token {
                    req = req.header("Authorization", format!("Bearer {t}"));
                }
            }
            if offset > 0 {
                req = req.header("Range", format!("bytes={offset}-"));
            }
            let resp = req.call().map_err(|e| HubError::Unreachable {
                url: cur.clone(),
                reason: e.to_string(),
            })?;
            let status = resp.status().as_u16();
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let content_length = header("content-length").and_then(|v| v.trim().parse().ok());
            if at_hub {
                // The hub's own answer describes the file; the storage it redirects to may
                // use other ETags (an S3 MD5, a Xet hash).
                if let Some(e) = header("x-linked-etag") {
                    meta.sha256 = meta.sha256.take().or_else(|| sha256_from_etag(&e));
                }
                if let Some(s) = header("x-linked-size").and_then(|v| v.trim().parse().ok()) {
                    meta.size = meta.size.or(Some(s));
                }
                if matches!(status, 200 | 206) {
                    if let Some(e) = header("etag") {
                        meta.sha256 = meta.sha256.take().or_else(|| sha256_from_etag(&e));
                    }
                }
            }
            match status {
                300..=399 => {
                    let loc = header("location").ok_or_else(|| HubError::Protocol {
                        url: cur.clone(),
                        reason: format!("HTTP {status} without a Location"),
                    })?;
                    cur = join(&cur, &loc).ok_or_else(|| HubError::Protocol {
                        url: cur.clone(),
                        reason: format!("HTTP {status} to a Location that is not a URL: {loc}"),
                    })?;
                    continue;
                }
                200 | 206 => {}
                416 => {
                    // Range not satisfiable: the part file is complete, or stale.
                    let (_, total) = header("content-range")
                        .map(|v| content_range(&v))
                        .unwrap_or_default();
                    let total = meta.size.or(total);
                    if total == Some(offset) {
                        meta.size = total;
                        return Ok(());
                    }
                    let _ = std::fs::remove_file(part);
                    return Err(HubError::Interrupted {
                        url: cur,
                        got: 0,
                        total: total.map_or("?".into(), |t| t.to_string()),
                        reason: "the partial file did not fit the file on the hub; it was \
                                 removed"
                            .into(),
                        part: part.to_owned(),
                    });
                }
                _ => {
                    return Err(HubError::Status {
                        hint: self.status_hint(status),
                        url: cur,
                        status,
                    })
                }
            }
            let mut start = 0;
            if status == 206 {
                let (s, total) = header("content-range")
                    .map(|v| content_range(&v))
                    .unwrap_or_default();
                meta.size = meta.size.or(total);
                start = s.unwrap_or(u64::MAX);
                if start != offset {
                    let _ = std::fs::remove_file(part);
                    return Err(HubError::Interrupted {
                        url: cur,
                        got: 0,
                        total: "?".into(),
                        reason: format!("asked for bytes from {offset}, got them from {start}"),
                        part: part.to_owned(),
                    });
                }
            } else if meta.size.is_none() {
                meta.size = content_length;
            }
            let total = meta.size;
            let mut file = OpenOptions::new()
                .create(true)
                .write(true)
                .append(start > 0)
                .truncate(start == 0)
                .open(part)
                .map_err(io_err(part))?;
            bar.set_length(total.unwrap_or(0));
            bar.set_position(start);
            bar.reset_eta();
            let mut pos = start;
            let mut body = resp.into_body();
            let mut reader = body.as_reader();
            let mut buf = vec![0u8; CHUNK];
            let interrupted = |pos: u64, reason: String| HubError::Interrupted {
                url: cur.clone(),
                got: pos,
                total: total.map_or("?".into(), |t| t.to_string()),
                reason,
                part: part.to_owned(),
            };
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let _ = file.sync_all();
                        return Err(interrupted(pos, e.to_string()));
                    }
                };
                file.write_all(&buf[..n]).map_err(io_err(part))?;
                pos += n as u64;
                *received += n as u64;
                bar.set_position(pos);
            }
            file.sync_all().map_err(io_err(part))?;
            if let Some(t) = total {
                if pos < t {
                    return Err(interrupted(pos, "the connection closed early".into()));
                }
            }
            return Ok(());
        }
        Err(HubError::Protocol {
            url: url.to_owned(),
            reason: format!("more than {MAX_HOPS} redirects"),
        })
    }

    fn status_hint(&self, status: u16) -> String {
        match (status, self.token.is_some()) {
            (401 | 403, false) => {
                " (the hub wants a token: set HF_TOKEN to an access token that can read it)".into()
            }
            (401 | 403, true) => " (HF_TOKEN was sent and refused)".into(),
            (404, _) => format!(" (not on {}: check HF_ENDPOINT)", self.endpoint),
            _ => String::new(),
        }
    }
}

/// Worth another try: the transfer broke off, the server had a passing failure, or the
/// connection dropped after bytes had arrived in this process (so the network is there).
fn retryable(e: &HubError, received: u64) -> bool {
    match e {
        HubError::Interrupted { .. } => true,
        HubError::Status { status, .. } => *status >= 500 || *status == 429,
        HubError::Unreachable { .. } => received > 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_that_are_sha256_digests() {
        let d = "a".repeat(64);
        assert_eq!(sha256_from_etag(&format!("\"{d}\"")), Some(d.clone()));
        assert_eq!(
            sha256_from_etag(&format!("W/\"{}\"", d.to_uppercase())),
            Some(d)
        );
        // a git blob id (40 hex digits) is not a SHA-256
        assert_eq!(sha256_from_etag(&format!("\"{}\"", "b".repeat(40))), None);
        assert_eq!(sha256_from_etag("\"xyz\""), None);
    }

    #[test]
    fn locations_resolve_like_a_browser() {
        let base = "https://huggingface.co/piddnad/x/resolve/main/pytorch_model.bin";
        let j = |l: &str| join(base, l).unwrap();
        assert_eq!(j("https://cdn.example/a?b=c"), "https://cdn.example/a?b=c");
        assert_eq!(j("//cdn.example/a"), "https://cdn.example/a");
        assert_eq!(
            j("/api/resolve-cache/x"),
            "https://huggingface.co/api/resolve-cache/x"
        );
        assert_eq!(
            j("config.json"),
            "https://huggingface.co/piddnad/x/resolve/main/config.json"
        );
        assert_eq!(
            j("../../raw/main/x.bin"),
            "https://huggingface.co/piddnad/x/raw/main/x.bin"
        );
        assert_eq!(
            j("?download=true"),
            "https://huggingface.co/piddnad/x/resolve/main/pytorch_model.bin?download=true"
        );
        assert_eq!(join("not a url", "/x"), None);
        let o = |u: &str| origin(u).unwrap();
        assert_eq!(o("http://127.0.0.1:8080/a/b"), "http://127.0.0.1:8080");
        assert_eq!(o("HTTPS://HuggingFace.co"), "https://huggingface.co");
        // the default port is the same origin
        assert_eq!(
            o("https://huggingface.co:443/x"),
            o("https://huggingface.co/y")
        );
    }

    #[test]
    fn content_ranges_parse() {
        assert_eq!(content_range("bytes 100-199/200"), (Some(100), Some(200)));
        assert_eq!(content_range("bytes */200"), (None, Some(200)));
        assert_eq!(content_range("bytes 0-9/*"), (Some(0), None));
    }
}
