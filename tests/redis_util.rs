//! Real `redis-server` processes for tests: a single node (optionally with a password, an ACL
//! user or TLS) and a 3-master cluster. Each binds 127.0.0.1 only, on a free port, with its own
//! temporary directory and no persistence, and is killed (and waited for) on drop.
#![allow(dead_code)]
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Panics with an install hint when `redis-server` (or `redis-cli`) is not on PATH.
pub fn require_redis() {
    for tool in ["redis-server", "redis-cli"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        assert!(
            found,
            "`{tool}` not found on PATH: the cache tests start real Redis servers; install \
             Redis (Debian/Ubuntu: `apt-get install redis-server`, which brings redis-cli)"
        );
    }
}

/// A loopback port nobody listens on right now (bind 127.0.0.1:0, read it, drop it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A free port whose cluster bus port (`port + 10000`) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().unwrap().port();
        if port > 55535 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

/// TLS files for a server (PEM paths).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// How to start one server.
#[derive(Debug, Clone, Default)]
pub struct RedisConfig {
    /// `--requirepass` (the `default` user's password).
    pub password: Option<String>,
    /// An ACL user `(name, password)` with full rights; the `default` user is switched off.
    pub acl_user: Option<(String, String)>,
    /// Serve TLS only (plain port off).
    pub tls: Option<TlsFiles>,
    /// With `tls`: clients must present a certificate signed by the CA (`--tls-auth-clients
    /// yes`, mutual TLS).
    pub tls_auth_clients: bool,
    /// Cluster mode (with `nodes.conf` in the server's directory).
    pub cluster: bool,
    /// A fixed port (no retry on another one); a free one by default.
    pub port: Option<u16>,
    /// More `--option value` arguments.
    pub extra_args: Vec<String>,
}

/// One running `redis-server`.
pub struct RedisServer {
    pub port: u16,
    pub config: RedisConfig,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// A server with no password.
    pub fn start() -> Self {
        Self::start_with(RedisConfig::default())
    }

    /// A server whose `default` user needs `password`.
    pub fn start_with_password(password: &str) -> Self {
        Self::start_with(RedisConfig {
            password: Some(password.to_owned()),
            ..Default::default()
        })
    }

    /// A server with one ACL user (and the `default` user off).
    pub fn start_with_user(user: &str, password: &str) -> Self {
        Self::start_with(RedisConfig {
            acl_user: Some((user.to_owned(), password.to_owned())),
            ..Default::default()
        })
    }

    /// Start a server; retries on another port when the chosen one was taken meanwhile.
    pub fn start_with(config: RedisConfig) -> Self {
        require_redis();
        let mut last_log = String::new();
        let tries = if config.port.is_some() { 1 } else { 8 };
        for _ in 0..tries {
            let port = match config.port {
                Some(p) => p,
                None if config.cluster => free_cluster_port(),
                None => free_port(),
            };
            let dir = tempfile::tempdir().expect("temp dir for redis-server");
            let mut server = Self {
                port,
                config: config.clone(),
                child: None,
                dir,
            };
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(log) => last_log = log,
            }
        }
        panic!("redis-server did not start ({tries} tries); last log:\n{last_log}");
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let dir = self.dir.path().to_owned();
        let log = dir.join("redis.log");
        let mut cmd = Command::new("redis-server");
        cmd.current_dir(&dir)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(&log);
        match &self.config.tls {
            Some(tls) => {
                cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(&tls.cert)
                    .arg("--tls-key-file")
                    .arg(&tls.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca)
                    .args([
                        "--tls-auth-clients",
                        if self.config.tls_auth_clients {
                            "yes"
                        } else {
                            "no"
                        },
                    ]);
            }
            None => {
                cmd.args(["--port", &self.port.to_string()]);
            }
        }
        if let Some(pw) = &self.config.password {
            cmd.args(["--requirepass", pw]);
            if self.config.cluster {
                cmd.args(["--masterauth", pw]);
            }
        }
        if let Some((user, pw)) = &self.config.acl_user {
            // One argument per ACL rule: redis-server joins them into one config line.
            let pass = format!(">{pw}");
            cmd.args(["--user", user, "on", &pass, "~*", "&*", "+@all"]);
            cmd.args(["--user", "default", "off"]);
        }
        if self.config.cluster {
            cmd.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"])
                .arg("--cluster-config-file")
                .arg(dir.join("nodes.conf"));
        }
        cmd.args(&self.config.extra_args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().ok().flatten() {
                let mut err = String::new();
                if let Some(mut e) = self.child.as_mut().unwrap().stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                self.child = None;
                return Err(format!(
                    "redis-server exited ({status}): {err}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ));
            }
            if self.answers() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "redis-server did not answer within 10 s\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Listening (TLS) or answering PING (any reply, even NOAUTH, means up).
    fn answers(&self) -> bool {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        if self.config.tls.is_some() {
            return true;
        }
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        matches!(s.read(&mut buf), Ok(n) if n > 0 && (buf[0] == b'+' || buf[0] == b'-'))
    }

    /// `redis://[user:pass@]127.0.0.1:<port>/0` (`rediss://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.config.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{}127.0.0.1:{}/0", self.userinfo(), self.port)
    }

    /// `user:pass@`, `default:pass@` or nothing.
    pub fn userinfo(&self) -> String {
        match (&self.config.acl_user, &self.config.password) {
            (Some((u, p)), _) => format!("{u}:{p}@"),
            (None, Some(p)) => format!("default:{p}@"),
            (None, None) => String::new(),
        }
    }

    /// The server's own directory (logs, nodes.conf).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `redis-cli`'s TLS options for this server (none without TLS): the CA, and with
    /// `--tls-auth-clients yes` the server's own certificate as the client's (it is made for
    /// both uses, as the cluster bus needs).
    fn cli_tls_args(&self, cmd: &mut Command) {
        if let Some(tls) = &self.config.tls {
            cmd.arg("--tls").arg("--cacert").arg(&tls.ca);
            cmd.arg("--cert").arg(&tls.cert).arg("--key").arg(&tls.key);
        }
    }

    /// Run `redis-cli` against this server; returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        self.cli_tls_args(&mut cmd);
        match (&self.config.acl_user, &self.config.password) {
            (Some((u, p)), _) => {
                cmd.args(["--user", u]).env("REDISCLI_AUTH", p);
            }
            (None, Some(p)) => {
                cmd.env("REDISCLI_AUTH", p);
            }
            _ => {}
        }
        let out = cmd.args(args).output().expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Send `signal` to the server (SIGSTOP freezes it: connections are accepted by the kernel,
    /// nothing answers; SIGCONT thaws it).
    pub fn signal(&self, signal: i32) {
        let pid = self.child.as_ref().expect("running").id();
        // SAFETY: kill(2) with a pid of our own child and a valid signal number
        assert_eq!(
            unsafe { libc::kill(pid as i32, signal) },
            0,
            "kill {signal}"
        );
    }

    /// Kill the server and wait for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three masters (and optionally a replica each), slots spread by `redis-cli --cluster
/// create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    pub password: Option<String>,
}

impl RedisCluster {
    pub fn start() -> Self {
        Self::start_with_password(None)
    }

    /// A cluster whose nodes all need `password` (`requirepass` and `masterauth`).
    pub fn start_with_password(password: Option<&str>) -> Self {
        Self::start_with(
            RedisConfig {
                password: password.map(str::to_owned),
                ..Default::default()
            },
            0,
        )
    }

    /// Three masters with `replicas` replicas each, every node started from `base` (in
    /// cluster mode; with `base.tls`, the cluster bus and replication are TLS too).
    pub fn start_with(base: RedisConfig, replicas: usize) -> Self {
        require_redis();
        let mut last = String::new();
        for _ in 0..3 {
            let nodes: Vec<RedisServer> = (0..3 * (1 + replicas))
                .map(|_| {
                    let mut config = RedisConfig {
                        cluster: true,
                        ..base.clone()
                    };
                    if config.tls.is_some() {
                        config.extra_args.extend(
                            ["--tls-cluster", "yes", "--tls-replication", "yes"].map(str::to_owned),
                        );
                    }
                    RedisServer::start_with(config)
                })
                .collect();
            let cluster = Self {
                nodes,
                password: base.password.clone(),
            };
            match cluster.create(replicas) {
                Ok(()) => return cluster,
                Err(e) => last = e,
            }
        }
        panic!("could not form a Redis cluster (3 tries): {last}");
    }

    fn create(&self, replicas: usize) -> Result<(), String> {
        let mut cmd = Command::new("redis-cli");
        self.nodes[0].cli_tls_args(&mut cmd);
        cmd.arg("--cluster").arg("create");
        for n in &self.nodes {
            cmd.arg(format!("127.0.0.1:{}", n.port));
        }
        cmd.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
        if let Some(p) = &self.password {
            cmd.env("REDISCLI_AUTH", p);
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run redis-cli: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let known = format!("cluster_known_nodes:{}", self.nodes.len());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self.nodes.iter().all(|n| {
                let info = n.cli(&["cluster", "info"]);
                info.contains("cluster_state:ok") && info.contains(&known)
            });
            let synced = replicas == 0
                || self.nodes.iter().all(|n| {
                    let info = n.cli(&["info", "replication"]);
                    info.contains("role:master") || info.contains("master_link_status:up")
                });
            if ok && synced {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("cluster_state did not become ok within 30 s".to_owned());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis-cluster://[default:pass@]127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`
    /// (`rediss-cluster://` with TLS).
    pub fn spec(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let userinfo = self
            .password
            .as_ref()
            .map(|p| format!("default:{p}@"))
            .unwrap_or_default();
        let scheme = if self.nodes[0].config.tls.is_some() {
            "rediss-cluster"
        } else {
            "redis-cluster"
        };
        format!("{scheme}://{userinfo}{}", hosts.join(","))
    }

    /// One `redis://` URL per node (for `redis::cluster::ClusterClient`).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }

    pub fn stop(&mut self) {
        for n in &mut self.nodes {
            n.stop();
        }
    }
}

/// Run the `openssl` command line tool in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("`openssl` not found on PATH: install it (Debian: `apt-get install openssl`)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1, made with the `openssl` command line tool.
pub fn make_tls_files(dir: &Path) -> TlsFiles {
    let run = |args: &[&str]| openssl(dir, args);
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=ddcolor test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
    TlsFiles {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        ca: dir.join("ca.pem"),
    }
}

/// A client certificate (and its key) for mutual TLS, signed by the CA of
/// [`make_tls_files`] in the same `dir`: `(client.pem, client.key)`.
pub fn make_client_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let run = |args: &[&str]| openssl(dir, args);
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    let subj = format!("/CN={name}");
    run(&[
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", &subj, "-keyout", &key, "-out", &csr,
    ]);
    std::fs::write(
        dir.join("client-ext.cnf"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
         extendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "client-ext.cnf",
        "-out",
        &pem,
    ]);
    (dir.join(pem), dir.join(key))
}
