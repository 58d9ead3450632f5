//! Benchmarks of the shared ledger through the real daemon.
//!
//! `cargo run --release -p tollbridge-e2e --bin cluster-bench -- setups [CALLS] [RATE]`
//! (defaults: 1,000 calls offered at 100 per second): bridged call setups
//! per second, the daemon on SQLite and on PostgreSQL side by side, two
//! rounds each, alternating. One booking per call; SIPp's caller
//! (`caller_hangs_up.xml`, 10 ms of talk) and expert (`expert_answers.xml`);
//! calls/s = calls SIPp completed / wall time from its first INVITE to its
//! exit.
//!
//! `cargo run --release -p tollbridge-e2e --bin cluster-bench -- takeover [TRIALS]`
//! (default 5): two nodes on one PostgreSQL with the default
//! `cluster.node_timeout` (10 s); a call through node A, A killed with
//! SIGKILL; the time from the kill to the later of the two BYEs node B
//! sends the parties. A new node A per trial.
//!
//! PostgreSQL is a throwaway server started here. Prints Markdown tables.

// A benchmark tool: a failed setup step aborts it with a message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use tollbridge_e2e::postgres::PostgresServer;
use tollbridge_e2e::{Daemon, SippPeer, rfc3339, test_config};

const TOKEN: &str = "cluster-bench-token-0123456789";
const NUMBER: &str = "+81500000007";

/// A daemon on `database` (a `[database]` section body), media on
/// `ports`, with more sections.
fn start(database: &str, ports: &str, more: &str) -> Daemon {
    let config = test_config(
        &format!("api_token = \"{TOKEN}\""),
        &format!(
            "[database]\n{database}\n\n\
             [media]\naddress = \"127.0.0.1\"\nports = \"{ports}\"\nport_quarantine = \"1s\"\n\n{more}\n"
        ),
    )
    .replace(
        "[sip]\nlisten = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]",
        "[sip]\nlisten = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]\ninvites_per_second = 10000",
    );
    let daemon = Daemon::start(&config);
    assert!(
        daemon.wait_for_log("sip listening", Duration::from_secs(20)),
        "{:?}",
        daemon.logs()
    );
    daemon
}

fn book(daemon: &Daemon, caller: &str, expert: &SippPeer) {
    let booking = serde_json::json!({
        "called": NUMBER,
        "callers": [caller],
        "callee": {"uri": format!("sip:expert@{}", expert.addr)},
        "tariff": {"currency": "jpy", "price_per_minute": 100},
        "cap_seconds": 600,
        "window": {"start": rfc3339(time::Duration::minutes(-5)), "end": rfc3339(time::Duration::hours(1))},
    });
    let (status, body) = daemon.api("POST", "/v1/bookings", TOKEN, Some(&booking.to_string()));
    assert_eq!(status, 201, "{body}");
}

/// One round: `calls` bridged calls offered at `rate` per second.
fn setups_round(daemon: &Daemon, calls: u32, rate: u32, round: u32) -> (bool, f64) {
    let limit = Duration::from_secs(u64::from(calls / rate.max(1)) + 120);
    let prefix = format!("+819{round:02}");
    let expert = SippPeer::start(
        "expert_answers.xml",
        None,
        "expert",
        &[("rtp_port", "9".into())],
        &["-m", &calls.to_string()],
        limit,
    );
    for n in 1..=calls {
        book(daemon, &format!("{prefix}{n}"), &expert);
    }
    let started = Instant::now();
    let caller = SippPeer::start(
        "caller_hangs_up.xml",
        daemon.sip_udp(),
        NUMBER,
        &[
            ("caller_prefix", prefix.clone()),
            ("rtp_port", "9".into()),
            ("formats", "0 96".into()),
        ],
        &[
            "-m",
            &calls.to_string(),
            "-r",
            &rate.to_string(),
            "-l",
            "200",
            "-d",
            "10",
        ],
        limit,
    );
    let run = caller.wait(limit);
    let elapsed = started.elapsed().as_secs_f64();
    let expert = expert.wait(Duration::from_secs(30));
    if !run.passed() {
        eprintln!(
            "{}",
            run.output.lines().take(40).collect::<Vec<_>>().join("\n")
        );
    }
    (run.passed() && expert.passed(), f64::from(calls) / elapsed)
}

fn setups(calls: u32, rate: u32) {
    let server = PostgresServer::start();
    let mut rows = Vec::new();
    for round in 0..4u32 {
        let postgres = round % 2 == 1;
        let (database, name) = if postgres {
            (
                format!("url = \"{}\"", server.create_database()),
                "PostgreSQL",
            )
        } else {
            ("path = \"bench.db\"".to_owned(), "SQLite")
        };
        let daemon = start(&database, "30000-33999", "");
        let (ok, rate_done) = setups_round(&daemon, calls, rate, round);
        rows.push((name, round / 2 + 1, ok, rate_done));
        drop(daemon);
        std::thread::sleep(Duration::from_secs(2));
    }
    println!("### Bridged call setups through the daemon ({calls} calls offered at {rate}/s)\n");
    println!("| backend | round | all connected | calls/s |");
    println!("|---|---|---|---|");
    for (name, round, ok, rate) in rows {
        println!("| {name} | {round} | {ok} | {rate:.1} |");
    }
}

fn takeover(trials: u32) {
    let server = PostgresServer::start();
    let url = server.create_database();
    let database = format!("url = \"{url}\"");
    let b = start(
        &database,
        "34000-34999",
        "[node]\nname = \"tb-b\"\n\n[billing]\ncheckpoint_interval = \"2s\"\n",
    );
    // B takes nodes over only after a node_timeout of its own heartbeats.
    std::thread::sleep(Duration::from_secs(11));
    let mut times = Vec::new();
    for trial in 1..=trials {
        let a = start(
            &database,
            "35000-35999",
            &format!("[node]\nname = \"tb-a{trial}\"\n"),
        );
        let expert = SippPeer::start(
            "expert_answers.xml",
            None,
            "expert",
            &[("rtp_port", "9".into())],
            &[],
            Duration::from_secs(60),
        );
        let caller_id = format!("+8198{trial:04}1");
        book(&a, &caller_id, &expert);
        let caller = SippPeer::start(
            "caller_waits_bye.xml",
            a.sip_udp(),
            NUMBER,
            &[
                ("caller_prefix", caller_id[..caller_id.len() - 1].to_owned()),
                ("rtp_port", "9".into()),
                ("formats", "0 96".into()),
            ],
            &[],
            Duration::from_secs(60),
        );
        caller
            .wait_for(Duration::from_secs(10), |t| {
                t.contains("SIP/2.0 200 OK").then_some(())
            })
            .expect("the call connects");
        // A random phase against A's heartbeat.
        std::thread::sleep(Duration::from_millis(1000 + u64::from(trial) * 173));
        a.signal("KILL");
        let killed = Instant::now();
        let bye = |peer: &SippPeer| {
            peer.wait_for(Duration::from_secs(30), |t| {
                t.contains("BYE sip:").then(Instant::now)
            })
            .expect("a BYE")
        };
        let last = bye(&caller).max(bye(&expert));
        times.push((last - killed).as_secs_f64() * 1000.0);
        drop(a);
    }
    println!(
        "### Takeover: kill -9 of the node carrying a call to both parties' BYE (node_timeout 10 s)\n"
    );
    println!("| trial | ms |");
    println!("|---|---|");
    for (n, ms) in times.iter().enumerate() {
        println!("| {} | {ms:.0} |", n + 1);
    }
    let max = times.iter().copied().fold(0.0, f64::max);
    println!("\nmax {max:.0} ms (target: node_timeout + 2 s = 12,000 ms)");
    drop(b);
}

fn main() {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("setups") => {
            let calls = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
            let rate = args.next().and_then(|s| s.parse().ok()).unwrap_or(100);
            setups(calls, rate);
        }
        Some("takeover") => {
            let trials = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
            takeover(trials);
        }
        _ => {
            eprintln!("usage: cluster-bench setups [CALLS] [RATE] | takeover [TRIALS]");
            std::process::exit(2);
        }
    }
}
