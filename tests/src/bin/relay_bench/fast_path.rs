//! `relay-bench kernel`: the kernel fast path against the userspace relay
//! and against no relay at all, in one run, with the lean generator
//! ([`super::lean`]) on every core; with `DAEMON=1`, also the real daemon
//! (its release build) with `media.fast_path = ["lo"]` and every call set
//! up in SIP.
//!
//! Per-process CPU says little here: the kernel forwards a packet in
//! softirq, mostly on the time of the process that sent it (the
//! generator). So each row also gives the whole machine's busy CPU per
//! packet, and that minus the direct run's: what relaying costs the
//! machine, whoever pays it.

use std::net::UdpSocket;
use std::time::Duration;

use tollbridge_media::bridge::Side;
use tollbridge_media::leg::LatchPolicy;
use tollbridge_media::ports::PortPool;
use tollbridge_media::relay::{FastPath, Relay};

use super::daemon::DaemonRelay;
use super::lean::{self, Party, Traffic};
use super::{cpu_seconds, peer, percentile};
use tollbridge_e2e::procfs;

/// Our relay with the fast path gets ports of its own, apart from the
/// userspace one's (10000-19999).
const FAST_PORTS: (u16, u16) = (40_000, 49_999);

/// One run's figures.
struct Row {
    traffic: Traffic,
    relay_cpu: f64,
    machine_cpu: f64,
    offloaded: Offloaded,
}

/// How much went through the kernel.
enum Offloaded {
    /// Packets the kernel forwarded (our relay in process counts them).
    Packets(u64),
    /// The share of the calls' directions in the kernel at the end (the
    /// daemon's gauge).
    Directions(f64),
}

/// Where the calls go.
#[derive(Clone, Copy)]
enum Through<'a> {
    Direct,
    /// Our relay in this process.
    Relay(&'a Relay),
    /// The real daemon, calls set up in SIP.
    Daemon(&'a DaemonRelay),
}

/// `calls` calls for `seconds` along `through`.
fn run(
    runtime: &tokio::runtime::Runtime,
    through: Through<'_>,
    calls: usize,
    seconds: u64,
    ticks: f64,
) -> Row {
    let mut parties = Vec::with_capacity(calls * 2);
    let mut media = Vec::new();
    for index in 0..calls {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (to_a, to_b) = match through {
            Through::Relay(relay) => {
                let call = relay.open_call().unwrap();
                call.set_peer(Side::Caller, peer(a.local_addr().unwrap()));
                call.set_peer(Side::Callee, peer(b.local_addr().unwrap()));
                runtime.block_on(call.stats()).unwrap();
                let targets = (call.address(Side::Caller), call.address(Side::Callee));
                media.push(call);
                targets
            }
            Through::Daemon(daemon) => {
                daemon.route(index, a.local_addr().unwrap(), b.local_addr().unwrap())
            }
            Through::Direct => (b.local_addr().unwrap(), a.local_addr().unwrap()),
        };
        parties.push(Party {
            socket: a,
            target: to_a,
        });
        parties.push(Party {
            socket: b,
            target: to_b,
        });
    }
    let relay_seconds = || match through {
        Through::Daemon(daemon) => daemon.cpu_seconds(ticks),
        _ => cpu_seconds(ticks).0,
    };
    let relay_before = relay_seconds();
    let machine_before = procfs::machine_busy_seconds(ticks).unwrap_or(f64::NAN);
    let traffic = lean::run(parties, Duration::from_secs(seconds), lean::threads());
    let relay_after = relay_seconds();
    let machine_after = procfs::machine_busy_seconds(ticks).unwrap_or(f64::NAN);
    // The daemon's calls are still up: its gauge says how many directions
    // the kernel carries; ours count what the kernel forwarded.
    let offloaded = match through {
        Through::Daemon(daemon) => {
            Offloaded::Directions(daemon.kernel_routes() as f64 / (2 * calls) as f64)
        }
        _ => {
            let mut forwarded = 0;
            for call in media {
                if let Some(stats) = runtime.block_on(call.close()) {
                    forwarded += stats.caller.kernel_forwarded + stats.callee.kernel_forwarded;
                }
            }
            Offloaded::Packets(forwarded)
        }
    };
    Row {
        traffic,
        relay_cpu: relay_after - relay_before,
        machine_cpu: machine_after - machine_before,
        offloaded,
    }
}

pub fn side_by_side(runtime: &tokio::runtime::Runtime, relay: &Relay, threads: usize, ticks: f64) {
    let mut args = std::env::args().skip(2);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2);
    let mut sizes: Vec<usize> = args.filter_map(|s| s.parse().ok()).collect();
    if sizes.is_empty() {
        sizes = vec![500, 1000, 2000];
    }
    let pool = PortPool::new(
        "127.0.0.1".parse().unwrap(),
        FAST_PORTS.0,
        FAST_PORTS.1,
        Duration::ZERO,
    );
    let mut fast = Relay::start(
        pool,
        LatchPolicy::SignalledIp,
        "127.0.0.1".parse().unwrap(),
        threads,
    )
    .unwrap();
    fast.use_fast_path(FastPath::attach(&["lo".to_owned()]).expect("the fast path loads (root)"))
        .unwrap();
    println!("generator threads: {}", lean::threads());
    println!(
        "| path | calls | packets relayed | kernel-forwarded % | loss % | relay threads CPU µs/pkt | machine CPU µs/pkt | machine above direct µs/pkt | latency p50 µs | p99 µs | max µs | after 1 s: p99 µs | max µs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let with_daemon = std::env::var("DAEMON").is_ok_and(|v| v == "1");
    for calls in sizes {
        for _ in 0..rounds {
            let direct = run(runtime, Through::Direct, calls, seconds, ticks);
            let mut rows = vec![
                ("direct", direct),
                (
                    "tollbridge, userspace",
                    run(runtime, Through::Relay(relay), calls, seconds, ticks),
                ),
                (
                    "tollbridge, kernel fast path",
                    run(runtime, Through::Relay(&fast), calls, seconds, ticks),
                ),
            ];
            if with_daemon {
                let daemon = DaemonRelay::start_with(calls, threads, true);
                let row = run(runtime, Through::Daemon(&daemon), calls, seconds, ticks);
                rows.push(("tollbridge daemon, kernel fast path", row));
            }
            let per_packet =
                |seconds: f64, row: &Row| seconds * 1e6 / row.traffic.received.max(1) as f64;
            let direct_cost = per_packet(rows[0].1.machine_cpu, &rows[0].1);
            for (name, row) in &rows {
                let Traffic {
                    sent,
                    received,
                    latencies_ns,
                    settled_ns,
                } = &row.traffic;
                let loss = 100.0 * (sent - received.min(sent)) as f64 / (*sent).max(1) as f64;
                let machine = per_packet(row.machine_cpu, row);
                let (relay_cpu, above, offloaded) = match *name {
                    "direct" => ("-".to_string(), "-".to_string(), "-".to_string()),
                    _ => (
                        format!("{:.2}", per_packet(row.relay_cpu, row)),
                        format!("{:.2}", machine - direct_cost),
                        match row.offloaded {
                            Offloaded::Packets(forwarded) => format!(
                                "{:.1}",
                                100.0 * forwarded as f64 / (*received).max(1) as f64
                            ),
                            Offloaded::Directions(share) => {
                                format!("{:.1} (of directions)", 100.0 * share)
                            }
                        },
                    ),
                };
                let max =
                    |sorted: &Vec<u64>| sorted.last().map_or(f64::NAN, |v| *v as f64 / 1000.0);
                println!(
                    "| {name} | {calls} | {received} | {offloaded} | {loss:.3} | {relay_cpu} | {machine:.2} | {above} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                    percentile(latencies_ns, 0.5),
                    percentile(latencies_ns, 0.99),
                    max(latencies_ns),
                    percentile(settled_ns, 0.99),
                    max(settled_ns),
                );
            }
        }
    }
}
