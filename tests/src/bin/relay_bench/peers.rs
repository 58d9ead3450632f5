//! The relays ours is measured against, in the same run: the C floor the
//! bench builds and, when installed, rtpengine in userspace.

use std::net::SocketAddr;

use tollbridge_media::relay::Relay;

use super::daemon::DaemonRelay;
use super::floor::Floor;
use super::memory::idle_party;
use super::rtpengine::{self, Rtpengine};
use super::{FLOOR_PORTS, Outcome, Path, run, run_through};

/// Where rtpengine's RTP ports are: above the floor's, below the
/// kernel's ephemeral ports.
const RTPENGINE_PORTS: (u16, u16) = (24_000, 32_000);

/// Another relay the calls can go through.
#[derive(Clone, Copy)]
pub enum Other<'a> {
    Floor(&'a Floor),
    Rtpengine(&'a Rtpengine),
    /// Ours, as the real daemon with calls set up in SIP.
    Daemon(&'a DaemonRelay),
}

impl Other<'_> {
    /// Sets up call `index` between parties `a` and `b`: where `a` sends
    /// and where `b` sends.
    pub fn route(&self, index: usize, a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
        match self {
            Other::Floor(floor) => floor.addresses(index),
            Other::Rtpengine(rtpengine) => rtpengine.route(index, a, b),
            Other::Daemon(daemon) => daemon.route(index, a, b),
        }
    }

    /// Its process's user+sys CPU seconds so far.
    pub fn cpu_seconds(&self, ticks: f64) -> f64 {
        match self {
            Other::Floor(floor) => floor.cpu_seconds(ticks),
            Other::Rtpengine(rtpengine) => rtpengine.cpu_seconds(ticks),
            Other::Daemon(daemon) => daemon.cpu_seconds(ticks),
        }
    }
}

fn through(other: Other<'_>) -> Path<'_> {
    Path {
        relay: None,
        other: Some(other),
        recording: None,
        srtp: false,
    }
}

/// Which of ours runs beside the floor and rtpengine.
#[derive(Clone, Copy, PartialEq)]
pub enum Ours {
    /// The daemon's `Relay` in the bench's process, calls opened directly
    /// (`relay-bench floor`).
    InProcess,
    /// The real daemon, calls set up in SIP (`relay-bench daemon`).
    Daemon,
}

/// The C floor, rtpengine (when installed) and our relay, one after the
/// other at each size and round (`relay-bench floor|daemon [SECONDS]
/// [ROUNDS] [CALLS...]`): CPU per relayed packet of each, and the ratios
/// of ours; with the daemon, its resident memory per live call too.
pub fn side_by_side(
    runtime: &tokio::runtime::Runtime,
    relay: &Relay,
    threads: usize,
    ticks: f64,
    which: Ours,
) {
    let mut args = std::env::args().skip(2);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2);
    let mut sizes: Vec<usize> = args.filter_map(|s| s.parse().ok()).collect();
    if sizes.is_empty() {
        sizes = vec![50, 500, 1000];
    }
    let with_rtpengine = rtpengine::installed();
    if !with_rtpengine {
        println!("rtpengine is not installed (apt-get install rtpengine-daemon): not measured");
    }
    println!(
        "| path | calls | packets relayed | loss % | CPU µs/pkt | latency p50 µs | p99 µs | ÷ floor | ours ÷ rtpengine |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let per_packet = |o: &Outcome| o.relay_cpu * 1e6 / o.received.max(1) as f64;
    let ours_name = match which {
        Ours::InProcess => "tollbridge",
        Ours::Daemon => "tollbridge daemon",
    };
    // The daemon's (calls, RSS idle with the bookings, RSS with the calls up).
    let mut memory = Vec::new();
    for calls in sizes {
        let run_other =
            |other: Other<'_>| runtime.block_on(run_through(through(other), calls, seconds, ticks));
        for _ in 0..rounds {
            let below = run_other(Other::Floor(&Floor::start(FLOOR_PORTS, calls)));
            let theirs = with_rtpengine.then(|| {
                run_other(Other::Rtpengine(&Rtpengine::start(
                    threads,
                    RTPENGINE_PORTS,
                )))
            });
            let ours = match which {
                Ours::InProcess => runtime.block_on(run(Some(relay), calls, seconds, ticks, None)),
                Ours::Daemon => {
                    let daemon = DaemonRelay::start(calls, threads);
                    let outcome = run_other(Other::Daemon(&daemon));
                    memory.push((calls, daemon.idle_rss_kib, daemon.rss_kib()));
                    outcome
                }
            };
            let floor_cost = per_packet(&below);
            let mut rows = vec![("C floor", &below)];
            if let Some(theirs) = &theirs {
                rows.push(("rtpengine", theirs));
            }
            rows.push((ours_name, &ours));
            for (name, outcome) in rows {
                let loss = 100.0 * (outcome.sent - outcome.received.min(outcome.sent)) as f64
                    / outcome.sent.max(1) as f64;
                let over_floor = match name {
                    "C floor" => "-".to_string(),
                    _ => format!("{:.2}", per_packet(outcome) / floor_cost.max(1e-9)),
                };
                let over_rtpengine = match (name, &theirs) {
                    (name, Some(theirs)) if name == ours_name => {
                        format!("{:.2}", per_packet(&ours) / per_packet(theirs).max(1e-9))
                    }
                    _ => "-".to_string(),
                };
                println!(
                    "| {name} | {calls} | {} | {loss:.3} | {:.2} | {:.0} | {:.0} | {over_floor} | {over_rtpengine} |",
                    outcome.received,
                    per_packet(outcome),
                    outcome.p50_us,
                    outcome.p99_us,
                );
            }
        }
    }
    if !memory.is_empty() {
        println!(
            "\n| daemon: calls up | RSS idle with the bookings KiB | with the calls up KiB | per live call KiB |"
        );
        println!("|---|---|---|---|");
        for (calls, idle, up) in memory {
            println!(
                "| {calls} | {idle} | {up} | {:.1} |",
                up.saturating_sub(idle) as f64 / calls as f64
            );
        }
    }
}

/// rtpengine's resident memory per call it carries (both parties
/// signalled, no traffic), for `relay-bench memory`.
pub fn rtpengine_memory(sizes: &[usize], threads: usize) {
    if !rtpengine::installed() {
        println!("rtpengine is not installed: its memory is not measured");
        return;
    }
    println!("| rtpengine calls | RSS before KiB | with the calls open KiB | per live call KiB |");
    println!("|---|---|---|---|");
    for &calls in sizes {
        let rtpengine = Rtpengine::start(threads, RTPENGINE_PORTS);
        let before = rtpengine.rss_kib();
        for index in 0..calls {
            rtpengine.route(index, idle_party(index, 1), idle_party(index, 2));
        }
        let open = rtpengine.rss_kib();
        println!(
            "| {calls} | {before} | {open} | {:.1} |",
            open.saturating_sub(before) as f64 / calls as f64
        );
    }
}
