//! Soak benchmark: does the daemon keep memory per call? The real binary
//! bridges CALLS calls, CONCURRENT at a time, each talking TALK_MS with
//! PCMU streamed by SIPp's RTP engine and echoed by the expert (also
//! SIPp), one booking per call; the daemon's resident set (VmRSS from
//! /proc) is read after the first 100 calls, then at every tenth of the
//! run, and once more after it. A second phase sends REFUSED INVITEs to
//! an unbooked number (100, 404, ACK) and reads it before and after.
//!
//! `cargo run --release -p tollbridge-e2e --bin soak -- [CALLS] [CONCURRENT] [TALK_MS] [REFUSED]`
//! (defaults: 10000 20 1000 10000). Prints Markdown tables; BENCHMARKS.md
//! has the figures and the machine.
//!
//! `soak live [CALLS]` (default 500) holds CALLS bridged calls up at once
//! instead and reads the daemon's memory per live call.

// A benchmark tool: a failed setup step aborts it with a message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tollbridge_e2e::{Daemon, rfc3339, scenario_path, test_config};

#[path = "soak/live.rs"]
mod live;

const TOKEN: &str = "soak-token-0123456789abcdef";

fn free_port() -> u16 {
    tollbridge_e2e::free_port("127.0.0.1")
}

/// The daemon's resident set in KiB.
fn rss_kib(pid: u32) -> u64 {
    tollbridge_e2e::procfs::rss_kib(pid).expect("the daemon's /proc status")
}

/// Calls the daemon has ended, from its metrics.
fn calls_ended(daemon: &Daemon) -> u64 {
    let (_, metrics) = daemon.get("/metrics", None);
    metrics
        .lines()
        .filter(|l| l.starts_with("tollbridge_calls_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn called(n: u64) -> String {
    format!("+8150{n:09}")
}

fn caller(n: u64) -> String {
    format!("+8190{n:09}")
}

/// Starts SIPp in `dir`, its screen going to `dir/<log>`.
fn sipp(dir: &Path, log: &str, args: &[String]) -> Child {
    let screen = std::fs::File::create(dir.join(log)).unwrap();
    Command::new("sipp")
        .args(args)
        .args(["-nostdin", "-timeout", "7200s"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(screen)
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp (Debian: sip-tester)")
}

/// SIPp's final count of successful and failed calls, from its screen.
fn sipp_counts(dir: &Path, log: &str) -> (u64, u64) {
    let screen = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
    let last = |label: &str| {
        screen
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split('|').nth(2))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (last("Successful call"), last("Failed call"))
}

/// The daemon on its test config, an expert (SIPp, answering and echoing
/// RTP) for `calls` calls, and one booking per call with its caller in
/// `calls.csv` for SIPp's callers.
fn setup(calls: u64) -> (Daemon, tempfile::TempDir, Child) {
    let config = test_config(
        &format!("api_token = \"{TOKEN}\""),
        "[media]\naddress = \"127.0.0.1\"\nports = \"30000-39999\"\n",
    )
    .replace("[sip]\n", "[sip]\ninvites_per_second = 10000\n");
    let daemon = Daemon::start(&config);
    assert!(daemon.wait_for_log("sip listening", Duration::from_secs(10)));
    let dir = tempfile::tempdir().unwrap();
    // One second of PCMU silence, streamed in a loop by each caller.
    std::fs::write(dir.path().join("soak.ulaw"), vec![0xffu8; 8000]).unwrap();
    let expert_port = free_port();
    // The expert's SDP names the port SIPp echoes RTP on (-mp): every
    // call's callee leg sends there and gets its packets back.
    let echo_port = free_port();
    let expert = sipp(
        dir.path(),
        "expert.log",
        &[
            "-sf".into(),
            scenario_path("expert_answers.xml"),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            expert_port.to_string(),
            "-key".into(),
            "rtp_port".into(),
            echo_port.to_string(),
            "-mp".into(),
            echo_port.to_string(),
            "-rtp_echo".into(),
            "-m".into(),
            calls.to_string(),
        ],
    );
    let start = rfc3339(time::Duration::minutes(-5));
    let end = rfc3339(time::Duration::hours(12));
    let booked = Instant::now();
    let mut injection = String::from("SEQUENTIAL\n");
    for n in 1..=calls {
        let booking = serde_json::json!({
            "called": called(n),
            "callers": [caller(n)],
            "callee": {"uri": format!("sip:expert@127.0.0.1:{expert_port}")},
            "tariff": {"currency": "jpy", "price_per_minute": 100},
            "cap_seconds": 3600,
            "window": {"start": start, "end": end},
        });
        let (status, body) = daemon.api("POST", "/v1/bookings", TOKEN, Some(&booking.to_string()));
        assert_eq!(status, 201, "{body}");
        injection.push_str(&format!("{};{};\n", called(n), caller(n)));
    }
    std::fs::File::create(dir.path().join("calls.csv"))
        .unwrap()
        .write_all(injection.as_bytes())
        .unwrap();
    eprintln!("{calls} bookings in {:?}", booked.elapsed());

    (daemon, dir, expert)
}

/// SIPp's callers: `calls` calls from `calls.csv`, `concurrent` at a
/// time, `rate` new calls a second, each talking `talk_ms`.
fn callers(
    daemon: &Daemon,
    dir: &Path,
    calls: u64,
    concurrent: u64,
    rate: u64,
    talk_ms: u64,
) -> Child {
    let sip = daemon.sip_udp().unwrap();
    sipp(
        dir,
        "callers.log",
        &[
            sip.to_string(),
            "-sf".into(),
            scenario_path("soak_caller.xml"),
            "-inf".into(),
            "calls.csv".into(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            free_port().to_string(),
            "-mp".into(),
            free_port().to_string(),
            "-m".into(),
            calls.to_string(),
            "-l".into(),
            concurrent.to_string(),
            "-r".into(),
            rate.to_string(),
            "-d".into(),
            talk_ms.to_string(),
        ],
    )
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("live") {
        let mut args = std::env::args().skip(2);
        let calls = args.next().and_then(|a| a.parse().ok()).unwrap_or(500);
        live::per_call(calls);
        return;
    }
    let mut args = std::env::args().skip(1);
    let mut next = |default: u64| args.next().and_then(|a| a.parse().ok()).unwrap_or(default);
    let (calls, concurrent, talk_ms, refused) = (next(10_000), next(20), next(1000), next(10_000));
    let (mut daemon, dir, mut expert) = setup(calls);
    let pid = daemon.pid();
    let idle_rss = rss_kib(pid);
    let rate = (concurrent * 1000 / talk_ms.max(1)).max(1);
    let sip = daemon.sip_udp().unwrap();
    let started = Instant::now();
    let mut callers = callers(&daemon, dir.path(), calls, concurrent, rate, talk_ms);
    let mut samples: Vec<(u64, u64, Duration)> = Vec::new();
    let mut marks: Vec<u64> = [100, 1000]
        .into_iter()
        .chain((1..=10).map(|tenth| calls * tenth / 10))
        .filter(|mark| *mark <= calls)
        .collect();
    marks.sort_unstable();
    marks.dedup();
    let mut mark = 0;
    while mark < marks.len() {
        let ended = calls_ended(&daemon);
        if ended >= marks[mark] {
            samples.push((ended, rss_kib(pid), started.elapsed()));
            mark += 1;
            continue;
        }
        if let Ok(Some(_)) = callers.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = callers.wait();
    let _ = expert.wait();
    std::thread::sleep(Duration::from_secs(5));
    let ended = calls_ended(&daemon);
    let after = rss_kib(pid);

    let (ok, failed) = sipp_counts(dir.path(), "callers.log");
    println!(
        "### Bridged calls ({calls} calls, {concurrent} at a time, {talk_ms} ms of PCMU each way; SIPp: {ok} successful, {failed} failed)\n"
    );
    println!("| calls ended | daemon RSS (MiB) | vs. after 1,000 calls | elapsed |");
    println!("|---|---|---|---|");
    println!(
        "| 0 (idle, bookings made) | {:.1} | | |",
        idle_rss as f64 / 1024.0
    );
    // The first thousand calls fill the working set (transactions kept
    // 32 s after their final response, RFC 6026; SQLite's page cache).
    let base = samples
        .iter()
        .find(|(ended, _, _)| *ended >= 1000)
        .or(samples.last())
        .map_or(idle_rss, |s| s.1) as f64;
    for (ended, rss, elapsed) in &samples {
        println!(
            "| {ended} | {:.1} | {:+.1} % | {:.0} s |",
            *rss as f64 / 1024.0,
            (*rss as f64 / base - 1.0) * 100.0,
            elapsed.as_secs_f64()
        );
    }
    println!(
        "| {ended} (5 s after the last) | {:.1} | {:+.1} % | |",
        after as f64 / 1024.0,
        (after as f64 / base - 1.0) * 100.0
    );

    // Refused INVITEs: an unbooked number, answered 100 then 404.
    let before = rss_kib(pid);
    let refusals = Instant::now();
    let status = sipp(
        dir.path(),
        "refused.log",
        &[
            sip.to_string(),
            "-sf".into(),
            scenario_path("invite_refused.xml"),
            "-s".into(),
            "+81599999999".into(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            free_port().to_string(),
            "-m".into(),
            refused.to_string(),
            "-r".into(),
            "200".into(),
        ],
    )
    .wait()
    .unwrap();
    let just_after = rss_kib(pid);
    // Their transactions linger for Timer J/K; then they are gone too.
    std::thread::sleep(Duration::from_secs(40));
    let settled = rss_kib(pid);
    let (ok, failed) = sipp_counts(dir.path(), "refused.log");
    println!(
        "\n### Refused INVITEs ({refused} at 200/s; SIPp {status}: {ok} successful, {failed} failed)\n"
    );
    println!("| when | daemon RSS (MiB) |");
    println!("|---|---|");
    println!("| before | {:.1} |", before as f64 / 1024.0);
    println!(
        "| right after ({:.0} s) | {:.1} |",
        refusals.elapsed().as_secs_f64(),
        just_after as f64 / 1024.0
    );
    println!(
        "| 40 s later | {:.1} ({:+.1} % vs. before; {:.2} KiB per INVITE) |",
        settled as f64 / 1024.0,
        (settled as f64 / before as f64 - 1.0) * 100.0,
        (settled as f64 - before as f64) / refused.max(1) as f64
    );
    // A clean stop: whatever a tool such as heaptrack finds still
    // allocated at exit was never freed.
    daemon.signal("TERM");
    let _ = daemon.wait_exit(Duration::from_secs(120));
}
