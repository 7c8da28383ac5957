//! A stand-in for the Hugging Face hub on 127.0.0.1, for the download tests.
//!
//! `/<owner>/<repo>/resolve/<revision>/<file>` answers as the hub does: a large (LFS) file with
//! a 302 to the storage, `http://127.0.0.1:<other port>/cdn/<sha256>` (another origin, as the
//! hub's CDN is), carrying `X-Linked-Etag` (the SHA-256) and `X-Linked-Size`; a small file with
//! 200 and an `ETag`. `/cdn/<sha256>` serves the bytes, honouring `Range: bytes=N-`.
//! Faults on demand: cut the first transfer halfway, corrupt every transfer, require a token.
//! Every request is logged for the tests to inspect.
#![allow(dead_code)]
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// A file the server holds.
#[derive(Clone)]
pub struct HubFile {
    /// `piddnad/ddcolor_paper_tiny`
    pub repo: String,
    /// `pytorch_model.bin`
    pub name: String,
    pub bytes: Vec<u8>,
    /// Served through a redirect, as the hub does for LFS files.
    pub lfs: bool,
}

impl HubFile {
    pub fn new(repo: &str, name: &str, bytes: Vec<u8>, lfs: bool) -> Self {
        Self {
            repo: repo.into(),
            name: name.into(),
            bytes,
            lfs,
        }
    }

    pub fn sha256(&self) -> String {
        sha256_hex(&self.bytes)
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What goes wrong, on purpose.
#[derive(Clone, Default)]
pub struct Faults {
    /// The first body transfer sends the full Content-Length but only half the bytes, then
    /// closes the connection.
    pub cut_first_transfer: bool,
    /// Every body transfer has one byte changed (the ETag stays that of the real file).
    pub corrupt: bool,
    /// `/resolve/` requests without `Authorization: Bearer <token>` get 401.
    pub token: Option<String>,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

struct State {
    files: Vec<HubFile>,
    faults: Faults,
    requests: Mutex<Vec<Request>>,
    transfers: AtomicUsize,
    /// Where the cut transfer stopped (bytes of the file).
    cut_at: Mutex<Option<u64>>,
    cdn_port: u16,
}

pub struct HubServer {
    /// The hub.
    pub port: u16,
    /// The storage the hub redirects large files to.
    pub cdn_port: u16,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl HubServer {
    pub fn start(files: Vec<HubFile>, faults: Faults) -> Self {
        let bind = || TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let (hub, cdn) = (bind(), bind());
        let port = hub.local_addr().unwrap().port();
        let cdn_port = cdn.local_addr().unwrap().port();
        let state = Arc::new(State {
            files,
            faults,
            requests: Mutex::new(Vec::new()),
            transfers: AtomicUsize::new(0),
            cut_at: Mutex::new(None),
            cdn_port,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let threads = [hub, cdn]
            .into_iter()
            .map(|listener| {
                let (st, sp) = (state.clone(), stop.clone());
                std::thread::spawn(move || {
                    for conn in listener.incoming() {
                        if sp.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(conn) = conn else { continue };
                        let st = st.clone();
                        std::thread::spawn(move || {
                            let _ = handle(conn, &st);
                        });
                    }
                })
            })
            .collect();
        Self {
            port,
            cdn_port,
            state,
            stop,
            threads,
        }
    }

    /// `http://127.0.0.1:PORT`, for HF_ENDPOINT.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Where the cut transfer stopped, if one was cut.
    pub fn cut_at(&self) -> Option<u64> {
        *self.state.cut_at.lock().unwrap()
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for port in [self.port, self.cdn_port] {
            let _ = TcpStream::connect(("127.0.0.1", port));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn respond(out: &mut TcpStream, status: &str, headers: &[(String, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(body);
    let _ = out.flush();
}

fn handle(mut conn: TcpStream, st: &State) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let req = Request {
        method,
        path,
        headers,
    };
    st.requests.lock().unwrap().push(req.clone());

    let text = |s: &str| vec![("Content-Length".to_owned(), s.len().to_string())];
    if let Some(sha) = req.path.strip_prefix("/cdn/") {
        let Some(f) = st.files.iter().find(|f| f.sha256() == sha) else {
            respond(
                &mut conn,
                "404 Not Found",
                &text("no such blob"),
                b"no such blob",
            );
            return Ok(());
        };
        // the storage's own ETag is not the SHA-256 (as S3 / Xet are not)
        serve_bytes(&mut conn, st, &req, f, "\"cdn-etag\"");
        return Ok(());
    }
    // /<owner>/<repo>/resolve/<rev>/<file>
    let segs: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    if segs.len() != 5 || segs[2] != "resolve" {
        respond(&mut conn, "404 Not Found", &text("not found"), b"not found");
        return Ok(());
    }
    if let Some(t) = &st.faults.token {
        if req.header("authorization") != Some(format!("Bearer {t}").as_str()) {
            respond(&mut conn, "401 Unauthorized", &text("token"), b"token");
            return Ok(());
        }
    }
    let repo = format!("{}/{}", segs[0], segs[1]);
    let Some(f) = st
        .files
        .iter()
        .find(|f| f.repo == repo && f.name == segs[4])
    else {
        respond(
            &mut conn,
            "404 Not Found",
            &text("entry not found"),
            b"entry not found",
        );
        return Ok(());
    };
    let sha = f.sha256();
    if f.lfs {
        let headers = vec![
            (
                "Location".to_owned(),
                format!("http://127.0.0.1:{}/cdn/{sha}", st.cdn_port),
            ),
            ("X-Linked-Etag".to_owned(), format!("\"{sha}\"")),
            ("X-Linked-Size".to_owned(), f.bytes.len().to_string()),
            ("X-Repo-Commit".to_owned(), "0123456789abcdef".to_owned()),
            // the hub's ETag on the redirect is the pointer file's git id, not the digest
            ("ETag".to_owned(), format!("\"{}\"", "a".repeat(40))),
            ("Content-Length".to_owned(), "0".to_owned()),
        ];
        respond(&mut conn, "302 Found", &headers, b"");
    } else {
        serve_bytes(&mut conn, st, &req, f, &format!("\"{sha}\""));
    }
    Ok(())
}

fn serve_bytes(conn: &mut TcpStream, st: &State, req: &Request, f: &HubFile, etag: &str) {
    let len = f.bytes.len() as u64;
    let start = req
        .header("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, _)| a.parse::<u64>().ok());
    if start.is_some_and(|s| s >= len) {
        let headers = vec![
            ("Content-Range".to_owned(), format!("bytes */{len}")),
            ("Content-Length".to_owned(), "0".to_owned()),
        ];
        respond(conn, "416 Range Not Satisfiable", &headers, b"");
        return;
    }
    let from = start.unwrap_or(0);
    let mut body = f.bytes[from as usize..].to_vec();
    if st.faults.corrupt && !body.is_empty() {
        let i = body.len() / 2;
        body[i] ^= 0x5a;
    }
    let mut headers = vec![
        ("ETag".to_owned(), etag.to_owned()),
        ("Content-Length".to_owned(), body.len().to_string()),
        ("Accept-Ranges".to_owned(), "bytes".to_owned()),
    ];
    let status = if start.is_some() {
        headers.push((
            "Content-Range".to_owned(),
            format!("bytes {from}-{}/{len}", len - 1),
        ));
        "206 Partial Content"
    } else {
        "200 OK"
    };
    let first = st.transfers.fetch_add(1, Ordering::SeqCst) == 0;
    if first && st.faults.cut_first_transfer {
        let half = body.len() / 2;
        *st.cut_at.lock().unwrap() = Some(from + half as u64);
        respond(conn, status, &headers, &body[..half]);
        // close our side, then wait for the client to give up (no reset: the half arrives)
        let _ = conn.shutdown(Shutdown::Write);
        let mut sink = [0u8; 1024];
        while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
        return;
    }
    respond(conn, status, &headers, &body);
}
