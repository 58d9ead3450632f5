//! Two nodes behind Kamailio's dispatcher, configured with the example
//! in `examples/kamailio/` (only its listen address, list path and probe
//! interval changed): 20 calls through Kamailio, one node stopped in the
//! middle as an operator stops it (SIGTERM: it drains), and every call
//! placed after that lands on the live node and connects. The real
//! `kamailio` from Debian, real daemons on one PostgreSQL ledger, SIPp as
//! both phones; everything on 127.0.0.1.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;
use tollbridge_e2e::free_port;
use tollbridge_e2e::postgres::PostgresServer;

const CALLS: u32 = 20;
/// `ds_ping_interval` in the test's copy of the example.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Kamailio running the example config; killed on drop.
struct Kamailio {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Kamailio {
    fn start(nodes: &[SocketAddr]) -> Kamailio {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port("127.0.0.1");
        let list = dir.path().join("dispatcher.list");
        let mut entries = String::from("# setid destination flags priority\n");
        for node in nodes {
            entries.push_str(&format!("1 sip:{node} 0 0\n"));
        }
        std::fs::write(&list, entries).unwrap();
        let example =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kamailio/kamailio.cfg");
        let config = std::fs::read_to_string(example).unwrap();
        let config = replace_once(
            &config,
            "#!define LISTEN udp:0.0.0.0:5060",
            &format!("#!define LISTEN udp:127.0.0.1:{port}"),
        );
        let config = replace_once(
            &config,
            "#!define DISPATCHER_LIST \"/etc/kamailio/dispatcher.list\"",
            &format!("#!define DISPATCHER_LIST \"{}\"", list.display()),
        );
        let config = replace_once(
            &config,
            "#!define PROBE_INTERVAL 5",
            &format!("#!define PROBE_INTERVAL {}", PROBE_INTERVAL.as_secs()),
        );
        let path = dir.path().join("kamailio.cfg");
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("kamailio.log")).unwrap();
        let child = Command::new(kamailio_binary())
            .arg("-f")
            .arg(&path)
            .args(["-DD", "-E", "-m", "32", "-M", "8"])
            .arg("-Y")
            .arg(dir.path())
            .arg("-w")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            // Its own process group: Kamailio forks workers, and all of
            // them go when the group is signalled.
            .process_group(0)
            .spawn()
            .expect("start kamailio (Debian package kamailio; scripts/test installs it)");
        let kamailio = Kamailio {
            child,
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        // Up once its first probes have reached the nodes.
        std::thread::sleep(PROBE_INTERVAL * 2);
        kamailio
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kamailio.log")).unwrap_or_default()
    }
}

impl Drop for Kamailio {
    /// Stops Kamailio and every worker it forked: SIGTERM to the process
    /// group, then SIGKILL to whatever is left of it.
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "the example has one {from:?}"
    );
    text.replace(from, to)
}

fn kamailio_binary() -> &'static str {
    if Path::new("/usr/sbin/kamailio").exists() {
        "/usr/sbin/kamailio"
    } else {
        "kamailio"
    }
}

fn start_node(name: &str, url: &str) -> Daemon {
    let daemon = start_daemon_sections(
        "drain_timeout = \"60s\"",
        "30s",
        &format!(
            "[database]\nurl = \"{url}\"\n\n[node]\nname = \"{name}\"\n\n[cluster]\nnode_timeout = \"3s\"\n"
        ),
    );
    assert!(daemon.sip_udp().is_some());
    daemon
}

fn created_at(call: &Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        call["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

#[test]
fn through_kamailios_dispatcher_calls_after_a_node_stops_land_on_the_live_one() {
    let url = PostgresServer::shared().create_database();
    let a = start_node("tb-a", &url);
    let b = start_node("tb-b", &url);
    let kamailio = Kamailio::start(&[a.sip_udp().unwrap(), b.sip_udp().unwrap()]);

    let expert = SippPeer::start(
        "expert_answers.xml",
        None,
        "expert",
        &[("rtp_port", "9".to_owned())],
        &["-m", &CALLS.to_string()],
        Duration::from_secs(120),
    );
    for n in 1..=CALLS {
        book(&a, &[format!("+81900006{n}")], None, &expert_uri(&expert));
    }
    // Two calls a second, each talking half a second.
    let callers = SippPeer::start(
        "caller_via_proxy.xml",
        Some(kamailio.addr),
        NUMBER,
        &[
            ("caller_prefix", "+81900006".to_owned()),
            ("rtp_port", "9".to_owned()),
            ("formats", "0 96".to_owned()),
        ],
        &["-m", &CALLS.to_string(), "-r", "2", "-d", "500", "-l", "4"],
        Duration::from_secs(120),
    );
    std::thread::sleep(Duration::from_secs(4));
    a.signal("TERM");
    let stopped = time::OffsetDateTime::now_utc();

    let run = callers.wait(Duration::from_secs(120));
    assert!(
        run.passed(),
        "every call connects:\n{}\nkamailio:\n{}",
        run.output,
        kamailio.log()
    );
    assert_passed("expert", expert);

    let (_, body) = b.api(
        "GET",
        &format!("/v1/calls?called=%2B{}&limit=100", &NUMBER[1..]),
        TOKEN,
        None,
    );
    let calls = body["calls"].as_array().unwrap();
    assert_eq!(calls.len(), CALLS as usize, "{body}");
    assert!(calls.iter().all(|c| c["status"] == "completed"), "{body}");
    let on = |node: &str| calls.iter().filter(|c| c["node"] == node).count();
    assert!(on("tb-a") >= 1, "round robin used both nodes first: {body}");
    let after_probe = stopped + PROBE_INTERVAL;
    let late: Vec<&Value> = calls
        .iter()
        .filter(|c| created_at(c) > after_probe)
        .collect();
    assert!(
        late.len() >= 5,
        "calls placed after the stop: {}",
        late.len()
    );
    assert!(
        late.iter().all(|c| c["node"] == "tb-b"),
        "every call after the probe interval lands on the live node: {body}"
    );
    println!(
        "{} calls on tb-a before it stopped, {} on tb-b",
        on("tb-a"),
        on("tb-b")
    );
}
