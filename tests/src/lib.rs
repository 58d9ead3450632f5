//! Helpers for end-to-end tests: start the real `tollbridge` binary on
//! ephemeral loopback ports, talk to it, signal it, and always stop it.
//!
//! The binary is built (or found up to date) once per test process with the
//! same cargo that runs the tests, so a test never runs a stale daemon.
//! `TOLLBRIDGE_BIN` points at a prebuilt binary instead.

// Test support: a failure to set up a test is the test failing, so this
// crate panics with a message instead of returning errors.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod edge;
pub mod phone;
pub mod postgres;
pub mod procfs;
mod sipp;
pub mod stripe_fake;
pub mod tls;

pub use sipp::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Path of the `tollbridge` binary, built on first use.
pub fn binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(build_binary).clone()
}

/// `tollbridge check-config PATH`: its exit code and what it printed on
/// stderr.
pub fn check_config(path: &std::path::Path) -> (Option<i32>, String) {
    let output = Command::new(binary())
        .arg("check-config")
        .arg(path)
        .output()
        .expect("run tollbridge check-config");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn build_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TOLLBRIDGE_BIN") {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/<this test> (or target/<profile>/<a bench
    // binary>) -> target/<profile>/tollbridge
    let exe = std::env::current_exe().expect("test executable path");
    let parent = exe.parent().expect("executable has a directory");
    let profile_dir = if parent.file_name().is_some_and(|n| n == "deps") {
        parent.parent().expect("target/<profile>/deps has a parent")
    } else {
        parent
    };
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut build = Command::new(cargo);
    // Cargo gives this test process the variables of *its* package; passed
    // on, they change some build scripts' inputs (ring reads
    // CARGO_PKG_VERSION_*) and every test run would rebuild half the tree.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let per_package = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
        ];
        if per_package.iter().any(|prefix| name.starts_with(prefix)) || name == "OUT_DIR" {
            build.env_remove(name.as_ref());
        }
    }
    build.args([
        "build",
        "--quiet",
        "-p",
        "tollbridge",
        "--bin",
        "tollbridge",
        "--manifest-path",
    ]);
    build.arg(&manifest);
    if release {
        build.arg("--release");
    }
    let status = build
        .status()
        .expect("cannot run cargo build for the tollbridge binary");
    assert!(status.success(), "cargo build -p tollbridge failed");
    let binary = profile_dir.join("tollbridge");
    assert!(binary.is_file(), "no binary at {}", binary.display());
    binary
}

/// A fake systemd notification socket, like the one systemd passes in
/// `$NOTIFY_SOCKET`.
pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    /// Binds a socket in a fresh temporary directory.
    pub fn new() -> NotifySocket {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        NotifySocket {
            socket,
            path,
            _dir: dir,
        }
    }

    /// The value for `$NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads messages until one contains `wanted` (e.g. `"READY=1"`) or
    /// `timeout` passes; returns everything read, the match last.
    pub fn wait_for(&self, wanted: &str, timeout: Duration) -> Result<Vec<String>, Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(seen);
            }
            self.socket
                .set_read_timeout(Some(left))
                .expect("set timeout");
            match self.socket.recv(&mut buffer) {
                Ok(n) => {
                    let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
                    let found = message.lines().any(|line| line == wanted);
                    seen.push(message);
                    if found {
                        return Ok(seen);
                    }
                }
                Err(_) => return Err(seen),
            }
        }
    }
}

impl Default for NotifySocket {
    fn default() -> Self {
        NotifySocket::new()
    }
}

/// How to start a daemon.
#[derive(Debug, Default)]
pub struct DaemonOptions {
    /// Config file contents; `None` runs on the built-in defaults.
    pub config: Option<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Ask for systemd's watchdog with this `WATCHDOG_USEC`; the daemon is
    /// then started through `sh` so `WATCHDOG_PID` can name its own pid, as
    /// systemd does.
    pub watchdog_usec: Option<u64>,
    /// A small disk: the daemon runs in a mount namespace of its own with
    /// a tmpfs of this many bytes at this directory (under its working
    /// directory), to fill up (`unshare` from util-linux; no root needed
    /// where user namespaces are allowed).
    pub small_disk: Option<(&'static str, u64)>,
}

/// A running `tollbridge run`, killed on drop if still running.
pub struct Daemon {
    child: Child,
    /// The working directory (holds the default database).
    pub dir: tempfile::TempDir,
    /// The config file, when one was given.
    pub config_path: Option<PathBuf>,
    /// Where its HTTP API listens.
    pub http: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts a daemon with JSON logs on `config` (which should use
    /// `127.0.0.1:0` listeners) and waits until it says where HTTP listens.
    pub fn start(config: &str) -> Daemon {
        Daemon::start_with(DaemonOptions {
            config: Some(config.to_owned()),
            ..DaemonOptions::default()
        })
    }

    /// Starts a daemon as `options` say.
    pub fn start_with(options: DaemonOptions) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = match (options.watchdog_usec, options.small_disk) {
            (None, None) => Command::new(binary()),
            (Some(_), _) => {
                let mut shell = Command::new("sh");
                shell
                    .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""])
                    .arg(binary());
                shell
            }
            (None, Some((mount, bytes))) => {
                let mut unshare = Command::new("unshare");
                unshare
                    .args(["--mount", "--map-root-user", "sh", "-c"])
                    .arg(
                        "mkdir -p \"$1\" && mount -t tmpfs -o size=\"$2\" tmpfs \"$1\" && shift 2 && exec \"$0\" \"$@\"",
                    )
                    .arg(binary())
                    .arg(dir.path().join(mount))
                    .arg(bytes.to_string());
                unshare
            }
        };
        command.arg("run").current_dir(dir.path());
        clean_environment(&mut command);
        if let Some(usec) = options.watchdog_usec {
            command.env("WATCHDOG_USEC", usec.to_string());
        }
        let config_path = options.config.map(|text| {
            let path = dir.path().join("tollbridge.toml");
            std::fs::write(&path, text).expect("write config");
            command.arg("--config").arg(&path);
            path
        });
        for (key, value) in &options.env {
            command.env(key, value);
        }
        Daemon::launch(command, dir, config_path)
    }

    /// Kills the daemon with SIGKILL (no drain, no clean close: a crash) and
    /// starts it again in the same directory with the same config file.
    pub fn crash_and_restart(mut self) -> Daemon {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut command = Command::new(binary());
        command.arg("run").current_dir(self.dir.path());
        clean_environment(&mut command);
        if let Some(path) = &self.config_path {
            command.arg("--config").arg(path);
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        Daemon::launch(command, dir, self.config_path.take())
    }

    /// Runs `command` (a prepared `tollbridge run`) and waits until it says
    /// where HTTP listens.
    fn launch(
        mut command: Command,
        dir: tempfile::TempDir,
        config_path: Option<PathBuf>,
    ) -> Daemon {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start tollbridge");
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = mpsc::channel();
        spawn_log_reader(stderr, logs.clone(), address_tx);
        let http = match address_rx.recv_timeout(Duration::from_secs(10)).ok() {
            Some(address) => address,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "tollbridge did not report an HTTP address within 10 s; logs:\n{}",
                    logs.lock().map(|l| l.join("\n")).unwrap_or_default()
                );
            }
        };
        Daemon {
            child,
            dir,
            config_path,
            http,
            logs,
        }
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`"TERM"`, `"HUP"`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.logs().iter().any(|line| line.contains(needle)) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The UDP address the daemon's SIP edge listens on (from its log).
    pub fn sip_udp(&self) -> Option<SocketAddr> {
        self.sip_listener("Udp")
    }

    /// Where the daemon's SIP TCP listener is, from its log.
    pub fn sip_tcp(&self) -> Option<SocketAddr> {
        self.sip_listener("Tcp")
    }

    /// Where the daemon's SIP TLS listener is, from its log.
    pub fn sip_tls(&self) -> Option<SocketAddr> {
        self.sip_listener("Tls")
    }

    fn sip_listener(&self, transport: &str) -> Option<SocketAddr> {
        self.logs().iter().find_map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            let fields = &value["fields"];
            (fields["message"] == "sip listening" && fields["transport"] == transport)
                .then(|| fields["address"].as_str()?.parse().ok())
                .flatten()
        })
    }

    /// `GET path` with an optional bearer token: (status, body).
    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        http_get(self.http, path, token).expect("HTTP request to tollbridge")
    }

    /// The value of an unlabelled metric on `/metrics` now (`name` in
    /// full, `tollbridge_...`); `None` when it is not there.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, metrics) = self.get("/metrics", None);
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    }

    /// `method path` with a bearer token and an optional JSON body, the
    /// answer parsed as JSON: (status, body).
    pub fn api(
        &self,
        method: &str,
        path: &str,
        token: &str,
        json: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let (status, body) = http_request(self.http, method, path, Some(token), json)
            .expect("HTTP request to tollbridge");
        let value = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
        (status, value)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn spawn_log_reader(
    stderr: impl Read + Send + 'static,
    logs: Arc<Mutex<Vec<String>>>,
    address: mpsc::Sender<SocketAddr>,
) {
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = http_address_in(&line) {
                let _ = address.send(addr);
            }
            if let Ok(mut logs) = logs.lock() {
                logs.push(line);
            }
        }
    });
}

/// The address in the "http listening" line, logged as JSON or logfmt.
fn http_address_in(line: &str) -> Option<SocketAddr> {
    if !line.contains("http listening") {
        return None;
    }
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(line) {
        return value["fields"]["address"]
            .as_str()
            .and_then(|a| a.parse().ok());
    }
    line.split_whitespace()
        .find_map(|pair| pair.strip_prefix("address="))
        .and_then(|a| a.trim_matches('"').parse().ok())
}

/// Removes what the test's own environment could leak into the daemon
/// (systemd's variables, a config path).
fn clean_environment(command: &mut Command) {
    for name in [
        "TOLLBRIDGE_CONFIG",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "STATE_DIRECTORY",
        "CREDENTIALS_DIRECTORY",
    ] {
        command.env_remove(name);
    }
}

/// A minimal HTTP/1.1 GET over a fresh connection: (status, body). Enough
/// for health checks and JSON; written here to keep the test crate free of
/// an HTTP client stack.
pub fn http_get(
    address: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    http_request(address, "GET", path, token, None)
}

/// A minimal HTTP/1.1 request with an optional JSON body: (status, body).
pub fn http_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    json: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    http_request_with(address, method, path, &headers, json)
}

/// A minimal HTTP/1.1 request with extra headers and an optional JSON
/// body: (status, body).
pub fn http_request_with(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    json: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let response = http_exchange(address, method, path, headers, json)?;
    Ok((
        response.status,
        String::from_utf8_lossy(&response.body).into_owned(),
    ))
}

/// An HTTP response as it came: status, headers (names lower case) and
/// the body's bytes.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers, names lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The body, as sent (no chunked coding: our server sends lengths).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 exchange with extra headers and an optional JSON
/// body, the response read to the end.
pub fn http_exchange(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    json: Option<&str>,
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let body = json.unwrap_or_default();
    let content = json
        .map(|b| {
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            )
        })
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{extra}{content}Connection: close\r\n\r\n{body}"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let not_http = || {
        std::io::Error::other(format!(
            "not an HTTP response: {:?}",
            String::from_utf8_lossy(&response)
        ))
    };
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(not_http)?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(not_http)?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: response[split + 4..].to_vec(),
    })
}

/// Now plus `offset` in RFC 3339, as the booking API takes a window's
/// ends.
pub fn rfc3339(offset: time::Duration) -> String {
    (time::OffsetDateTime::now_utc() + offset)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("a date within RFC 3339's years")
}

/// A config for tests: every listener on an ephemeral loopback port and
/// JSON logs; `http_keys` go into `[http]`, `sections` are appended.
pub fn test_config(http_keys: &str, sections: &str) -> String {
    format!(
        "[sip]\nlisten = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]\n\n\
         [http]\nlisten = \"127.0.0.1:0\"\n{http_keys}\n\n\
         [log]\nformat = \"json\"\nlevel = \"info\"\n\n{sections}\n"
    )
}
