//! `soak live [CALLS]`: the daemon's memory per live bridged call. Books
//! CALLS bookings, has SIPp bring CALLS calls up at 50 a second and keep
//! them talking (PCMU streamed by the callers, echoed by the expert), and
//! reads the daemon's VmRSS when every call is up and again 40 s later,
//! when the calls' INVITE transactions have expired (32 s after their
//! final response, RFC 6026) and what is left is what a long call keeps.

use std::time::{Duration, Instant};

use tollbridge_e2e::Daemon;

use super::{callers, rss_kib, setup};

/// New calls a second while the calls come up.
const RATE: u64 = 50;

/// Calls in progress, from the daemon's metrics.
fn active_calls(daemon: &Daemon) -> u64 {
    let (_, metrics) = daemon.get("/metrics", None);
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("tollbridge_active_calls "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// Runs the measurement and prints its table.
pub fn per_call(calls: u64) {
    let (mut daemon, dir, mut expert) = setup(calls);
    let pid = daemon.pid();
    let ramp = Duration::from_secs(calls / RATE + 1);
    let settle = Duration::from_secs(40);
    // Every call talks until well after the second reading.
    let talk = ramp + settle + Duration::from_secs(20);
    let idle = rss_kib(pid);
    let ticks = tollbridge_e2e::procfs::clock_ticks();
    let stat = std::path::PathBuf::from(format!("/proc/{pid}/stat"));
    let cpu = || tollbridge_e2e::procfs::cpu_seconds(&stat, ticks).map_or(0.0, |(_, s)| s);
    let idle_cpu = cpu();
    let mut callers = callers(
        &daemon,
        dir.path(),
        calls,
        calls,
        RATE,
        talk.as_millis() as u64,
    );
    let deadline = Instant::now() + ramp + Duration::from_secs(30);
    loop {
        let live = active_calls(&daemon);
        if live >= calls {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {live} of {calls} calls came up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let all_up = rss_kib(pid);
    std::thread::sleep(settle);
    let still_live = active_calls(&daemon);
    let settled = rss_kib(pid);
    let _ = callers.wait();
    let _ = expert.wait();
    std::thread::sleep(Duration::from_secs(5));
    let after = rss_kib(pid);
    let used_cpu = cpu() - idle_cpu;
    let per_call = |rss: u64| rss.saturating_sub(idle) as f64 / calls as f64;
    println!("### {calls} live bridged calls (SIPp, PCMU both ways)\n");
    println!("| when | live calls | daemon RSS (KiB) | per live call (KiB) |");
    println!("|---|---|---|---|");
    println!("| idle, {calls} bookings made | 0 | {idle} | |");
    println!(
        "| every call up | {calls} | {all_up} | {:.1} |",
        per_call(all_up)
    );
    println!(
        "| 40 s later | {still_live} | {settled} | {:.1} |",
        per_call(settled)
    );
    println!(
        "| 5 s after they ended | {} | {after} | |",
        active_calls(&daemon)
    );
    println!("\nDaemon CPU (user+sys) from idle to 5 s after the calls ended: {used_cpu:.2} s");
    let (_, metrics) = daemon.get("/metrics", None);
    println!("\nHow the calls ended:\n");
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("tollbridge_calls_total{"))
    {
        println!("    {line}");
    }
    daemon.signal("TERM");
    let _ = daemon.wait_exit(Duration::from_secs(120));
}
