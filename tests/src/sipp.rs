//! SIPp as the suites' SIP peer: a run's outcome, a process killed on
//! drop with its logs kept for diagnosis, scenarios from `tests/sipp/`, a
//! server (the expert's phone) and a client run to completion.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// What a SIPp run ended with.
#[derive(Debug)]
pub struct SippRun {
    /// SIPp's exit code (0: every call succeeded).
    pub code: Option<i32>,
    /// Its output, error log and message trace, for diagnosis.
    pub output: String,
}

impl SippRun {
    /// True when SIPp reported success.
    pub fn passed(&self) -> bool {
        self.code == Some(0)
    }
}

/// One SIPp process with its logs in a temporary directory; killed on
/// drop if still running.
struct SippProcess {
    child: Child,
    dir: tempfile::TempDir,
}

impl SippProcess {
    /// Starts `sipp` with `args` for one call, a global `timeout`, and its
    /// error log and message trace kept for [`SippProcess::wait`].
    fn spawn(args: &[String], timeout: Duration) -> SippProcess {
        SippProcess::spawn_calls(args, timeout, true)
    }

    /// [`SippProcess::spawn`], adding `-m 1` only when `one_call`.
    fn spawn_calls(args: &[String], timeout: Duration, one_call: bool) -> SippProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(dir.path().join("output.log")).expect("sipp output file");
        let log_err = log.try_clone().expect("sipp output file");
        let child = Command::new("sipp")
            .args(args)
            .args(if one_call { &["-m", "1"][..] } else { &[][..] })
            .args([
                "-nostdin",
                "-timeout",
                &format!("{}s", timeout.as_secs().max(1)),
            ])
            .args(["-timeout_error", "-trace_err", "-trace_msg"])
            .arg("-error_file")
            .arg(dir.path().join("errors.log"))
            .arg("-message_file")
            .arg(dir.path().join("messages.log"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .expect("cannot start sipp: install the sip-tester package (scripts/test does)");
        SippProcess { child, dir }
    }

    /// Waits up to `timeout` for SIPp to exit (then kills it) and collects
    /// its logs.
    fn wait(mut self, timeout: Duration) -> SippRun {
        let deadline = Instant::now() + timeout;
        let code = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status.code(),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break None;
                }
            }
        };
        let mut output =
            std::fs::read_to_string(self.dir.path().join("output.log")).unwrap_or_default();
        for (title, file) in [("error log", "errors.log"), ("messages", "messages.log")] {
            if let Ok(text) = std::fs::read_to_string(self.dir.path().join(file)) {
                output.push_str(&format!("\n--- sipp {title} ---\n{text}"));
            }
        }
        SippRun { code, output }
    }
}

impl Drop for SippProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The path of a SIPp scenario in `tests/sipp/`.
pub fn scenario_path(scenario: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sipp")
        .join(scenario)
        .display()
        .to_string()
}

/// A port free on `ip` for both UDP and TCP (SIPp binds the one its
/// transport needs; a relay's media sockets in another test are UDP).
/// SIPp's own "random" port still writes 5060 into its messages, so tests
/// pick one and hand it over.
pub fn free_port(ip: &str) -> u16 {
    for _ in 0..100 {
        let udp = std::net::UdpSocket::bind((ip, 0)).expect("a UDP socket for a free port");
        let port = udp.local_addr().map(|a| a.port()).unwrap_or(0);
        if port != 0 && std::net::TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on {ip}");
}

/// A SIPp instance running a server (UAS) scenario in the background.
pub struct SippServer {
    process: SippProcess,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl SippServer {
    /// Starts SIPp with `scenario` from `tests/sipp/` on 127.0.0.1 and a
    /// free port, over `transport` (`"u1"` UDP, `"t1"` TCP), for one call.
    pub fn start(scenario: &str, transport: &str, timeout: Duration) -> SippServer {
        let port = free_port("127.0.0.1");
        let args = [
            "-sf".to_owned(),
            scenario_path(scenario),
            "-i".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            port.to_string(),
            "-t".to_owned(),
            transport.to_owned(),
        ];
        let process = SippProcess::spawn(&args, timeout);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Wait until it listens (TCP: accepts; UDP: give it a moment).
        let deadline = Instant::now() + Duration::from_secs(5);
        while transport == "t1" && TcpStream::connect(addr).is_err() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if transport != "t1" {
            thread::sleep(Duration::from_millis(300));
        }
        SippServer { process, addr }
    }

    /// Waits for SIPp to finish its one call and reports how it went.
    pub fn wait(self, timeout: Duration) -> SippRun {
        self.process.wait(timeout)
    }
}

/// Runs SIPp (`sip-tester`) with a scenario from `tests/sipp/` against
/// `remote` over UDP, for one call, bound to `local_ip` on a free port,
/// and kills it after `timeout`.
pub fn run_sipp(
    scenario: &str,
    remote: SocketAddr,
    local_ip: &str,
    service: &str,
    timeout: Duration,
) -> SippRun {
    run_sipp_over(scenario, remote, local_ip, service, "u1", timeout)
}

/// [`run_sipp`] over a chosen SIPp transport (`"u1"` UDP, `"t1"` TCP).
pub fn run_sipp_over(
    scenario: &str,
    remote: SocketAddr,
    local_ip: &str,
    service: &str,
    transport: &str,
    timeout: Duration,
) -> SippRun {
    let args = [
        remote.to_string(),
        "-sf".to_owned(),
        scenario_path(scenario),
        "-p".to_owned(),
        free_port(local_ip).to_string(),
        "-i".to_owned(),
        local_ip.to_owned(),
        "-s".to_owned(),
        service.to_owned(),
        "-t".to_owned(),
        transport.to_owned(),
    ];
    SippProcess::spawn(&args, timeout).wait(timeout + Duration::from_secs(5))
}

/// A SIPp instance (either role) running in the background with scenario
/// keys (`-key name value`, used as `[name]` in the scenario), whose message
/// trace can be read while it runs.
pub struct SippPeer {
    process: SippProcess,
    /// Where it listens for SIP.
    pub addr: SocketAddr,
}

impl SippPeer {
    /// Starts SIPp on 127.0.0.1 and a free port with `scenario` from
    /// `tests/sipp/`: a server when `remote` is `None`, else a client
    /// calling `service` at `remote`. `extra` holds more SIPp arguments
    /// (`-m`, `-r`, `-rtp_echo`...); without `-m`, one call.
    pub fn start(
        scenario: &str,
        remote: Option<SocketAddr>,
        service: &str,
        keys: &[(&str, String)],
        extra: &[&str],
        timeout: Duration,
    ) -> SippPeer {
        let port = free_port("127.0.0.1");
        let mut args: Vec<String> = remote.map(|r| r.to_string()).into_iter().collect();
        args.extend(
            [
                "-sf",
                &scenario_path(scenario),
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-s",
                service,
                "-t",
                "u1",
            ]
            .map(str::to_owned),
        );
        for (key, value) in keys {
            args.extend(["-key".to_owned(), (*key).to_owned(), value.clone()]);
        }
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let calls = extra.iter().position(|a| *a == "-m").is_some();
        let process = SippProcess::spawn_calls(&args, timeout, !calls);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if remote.is_none() {
            thread::sleep(Duration::from_millis(300));
        }
        SippPeer { process, addr }
    }

    /// The message trace so far.
    pub fn messages(&self) -> String {
        std::fs::read_to_string(self.process.dir.path().join("messages.log")).unwrap_or_default()
    }

    /// SIPp's own output and error log so far (for a failing test).
    pub fn output(&self) -> String {
        let mut text =
            std::fs::read_to_string(self.process.dir.path().join("output.log")).unwrap_or_default();
        text.push_str(
            &std::fs::read_to_string(self.process.dir.path().join("errors.log"))
                .unwrap_or_default(),
        );
        text
    }

    /// Waits until the message trace matches `find`, up to `timeout`.
    pub fn wait_for<T>(&self, timeout: Duration, find: impl Fn(&str) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(found) = find(&self.messages()) {
                return Some(found);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits for SIPp to finish and reports how it went.
    pub fn wait(self, timeout: Duration) -> SippRun {
        self.process.wait(timeout)
    }
}
