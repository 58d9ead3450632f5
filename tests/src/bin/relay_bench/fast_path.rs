//! `relay-bench kernel`: the kernel fast path against the userspace relay
//! and against no relay at all, in one run, with the lean generator
//! ([`super::lean`]) on every core.
//!
//! Per-process CPU says little here: the kernel forwards a packet in
//! softirq, mostly on the time of the process that sent it (the
//! generator). So each row also gives the whole machine's busy CPU per
//! packet, and that minus the direct run's: what relaying costs the
//! machine, whoever pays it.

use std::net::UdpSocket;
use std::time::Duration;

use tollbridge_media::bridge::Side;
use tollbridge_media::leg::{LatchPolicy, Peer};
use tollbridge_media::ports::PortPool;
use tollbridge_media::relay::{FastPath, Relay};
use tollbridge_media::sdp::{Codec, Direction};

use super::lean::{self, Party, Traffic};
use super::{cpu_seconds, percentile};
use tollbridge_e2e::procfs;

/// Our relay with the fast path gets ports of its own, apart from the
/// userspace one's (10000-19999).
const FAST_PORTS: (u16, u16) = (40_000, 49_999);

/// One run's figures.
struct Row {
    traffic: Traffic,
    relay_cpu: f64,
    machine_cpu: f64,
    kernel_forwarded: u64,
}

fn peer(socket: &UdpSocket) -> Peer {
    Peer {
        rtp: Some(socket.local_addr().unwrap()),
        rtcp: None,
        direction: Direction::SendRecv,
        telephone_event: Some(101),
        codec: Some(Codec::Pcmu),
    }
}

/// `calls` calls for `seconds` through `relay`, or directly.
fn run(
    runtime: &tokio::runtime::Runtime,
    relay: Option<&Relay>,
    calls: usize,
    seconds: u64,
    ticks: f64,
) -> Row {
    let mut parties = Vec::with_capacity(calls * 2);
    let mut media = Vec::new();
    for _ in 0..calls {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (to_a, to_b) = match relay {
            Some(relay) => {
                let call = relay.open_call().unwrap();
                call.set_peer(Side::Caller, peer(&a));
                call.set_peer(Side::Callee, peer(&b));
                runtime.block_on(call.stats()).unwrap();
                let targets = (call.address(Side::Caller), call.address(Side::Callee));
                media.push(call);
                targets
            }
            None => (b.local_addr().unwrap(), a.local_addr().unwrap()),
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
    let (relay_before, _, _) = cpu_seconds(ticks);
    let machine_before = procfs::machine_busy_seconds(ticks).unwrap_or(f64::NAN);
    let traffic = lean::run(parties, Duration::from_secs(seconds), lean::threads());
    let (relay_after, _, _) = cpu_seconds(ticks);
    let machine_after = procfs::machine_busy_seconds(ticks).unwrap_or(f64::NAN);
    let mut kernel_forwarded = 0;
    for call in media {
        if let Some(stats) = runtime.block_on(call.close()) {
            kernel_forwarded += stats.caller.kernel_forwarded + stats.callee.kernel_forwarded;
        }
    }
    Row {
        traffic,
        relay_cpu: relay_after - relay_before,
        machine_cpu: machine_after - machine_before,
        kernel_forwarded,
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
    for calls in sizes {
        for _ in 0..rounds {
            let direct = run(runtime, None, calls, seconds, ticks);
            let userspace = run(runtime, Some(relay), calls, seconds, ticks);
            let kernel = run(runtime, Some(&fast), calls, seconds, ticks);
            let per_packet =
                |seconds: f64, row: &Row| seconds * 1e6 / row.traffic.received.max(1) as f64;
            let direct_cost = per_packet(direct.machine_cpu, &direct);
            for (name, row) in [
                ("direct", &direct),
                ("tollbridge, userspace", &userspace),
                ("tollbridge, kernel fast path", &kernel),
            ] {
                let Traffic {
                    sent,
                    received,
                    latencies_ns,
                    settled_ns,
                } = &row.traffic;
                let loss = 100.0 * (sent - received.min(sent)) as f64 / (*sent).max(1) as f64;
                let machine = per_packet(row.machine_cpu, row);
                let (relay_cpu, above, offloaded) = match name {
                    "direct" => ("-".to_string(), "-".to_string(), "-".to_string()),
                    _ => (
                        format!("{:.2}", per_packet(row.relay_cpu, row)),
                        format!("{:.2}", machine - direct_cost),
                        format!(
                            "{:.1}",
                            100.0 * row.kernel_forwarded as f64 / (*received).max(1) as f64
                        ),
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
