//! Benchmark of the media relay: N concurrent bridged G.711 calls, both
//! directions, one 172-byte RTP packet per direction every 20 ms, through
//! the relay (the daemon's own `Relay`: its threads, port pool and call
//! tables) and, as the baseline in the same run, directly between the same
//! endpoints with no relay.
//!
//! `cargo run --release -p tollbridge-e2e --bin relay-bench -- [SECONDS] [CALLS...]`
//! (defaults: 10 s at 50, 200 and 500 calls; `RELAY_THREADS=N` sets the
//! relay's threads, default 1). Prints a Markdown table: relay CPU time
//! per relayed packet (the `tb-media-N` threads' user+sys from /proc over
//! the packets they forwarded), the load generator's own CPU per
//! packet, loss, and one-way latency percentiles; "added" is the relay's
//! median minus the direct run's median.
//!
//! `relay-bench prompts [FRAMES]` measures instead the CPU cost of one
//! prompt frame played in `replace` and in `mix` mode (the other party's
//! audio decoded, mixed under the prompt and re-encoded), side by side.
//!
//! `relay-bench floor [SECONDS] [ROUNDS] [CALLS...]` runs the calls
//! through a minimal C relay the bench builds (the floor: one `recvfrom`
//! and one `sendto` per packet, epoll), through rtpengine in userspace
//! when it is installed (Debian's `rtpengine-daemon`), and through ours,
//! one after the other.
//!
//! `relay-bench daemon [SECONDS] [ROUNDS] [CALLS...]` does the same with
//! ours as the real daemon (its release build, `RELAY_THREADS` relay
//! threads): one booking per call through its API, every call set up in
//! SIP (the caller's INVITE and the expert's answer naming the
//! generator's sockets), CPU per packet from the daemon's `tb-media-N`
//! threads, and its resident memory per live call.
//!
//! `relay-bench srtp [SECONDS] [ROUNDS] [CALLS...]` runs the calls with
//! plain RTP and with SRTP on both legs (AES_CM_128_HMAC_SHA1_80, the
//! parties encrypting and decrypting with their own keys, the relay
//! decrypting and re-encrypting every packet), alternately.
//!
//! `relay-bench kernel [SECONDS] [ROUNDS] [CALLS...]` runs the calls
//! directly (no relay), through our relay in userspace and through our
//! relay with the kernel fast path on `lo` (`media.fast_path`; needs
//! root), one after the other: besides the relay threads' CPU, the whole
//! machine's (the kernel forwards in softirq, mostly in the sending
//! process's time), and what it costs above the direct run. `DAEMON=1`
//! adds the real daemon with the fast path, calls set up in SIP.
//!
//! `relay-bench memory [CALLS...]` reads the relay's resident memory per
//! live call. `PIN=1` puts the relay thread (or the C floor) on CPU 0 and
//! the generator on CPU 1.
//!
//! `relay-bench recording [SECONDS] [CALLS] [ROUNDS]` runs the same calls
//! with recording off and with every call recorded, alternately (default
//! 10 s, 500 calls, 2 rounds of each): the relay's CPU per packet in both,
//! the recorder thread's (`tb-recorder`) per relayed packet, frames the
//! recorder's queue dropped, and the disk bytes per recorded minute.

// A benchmark tool: a failed setup step aborts it with a message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tollbridge_media::bridge::Side;
use tollbridge_media::leg::RtpHeader;
use tollbridge_media::leg::{LatchPolicy, Peer};
use tollbridge_media::ports::PortPool;
use tollbridge_media::prompt::{PromptName, Prompts};
use tollbridge_media::recording::Recorder;
use tollbridge_media::relay::{CallMedia, Relay};
use tollbridge_media::sdp::{Codec, Direction};
use tollbridge_media::srtp::{MasterKey, Protector, Suite, Unprotector};
use tollbridge_media::stream::{FRAME as PROMPT_FRAME, OutStream, PROMPT_PACKET, PromptMode};

#[path = "relay_bench/daemon.rs"]
mod daemon;
#[path = "relay_bench/fast_path.rs"]
mod fast_path;
#[path = "relay_bench/floor.rs"]
mod floor;
#[path = "relay_bench/lean.rs"]
mod lean;
#[path = "relay_bench/memory.rs"]
mod memory;
#[path = "relay_bench/peers.rs"]
mod peers;
#[path = "relay_bench/pinning.rs"]
mod pinning;
#[path = "relay_bench/rtpengine.rs"]
mod rtpengine;

use tollbridge_e2e::procfs;

const PACKET: usize = 172;
const FRAME: Duration = Duration::from_millis(20);

/// user+sys seconds of this process's threads, split into the relay
/// threads (`tb-media-N`), the recorder (`tb-recorder`) and everything
/// else.
fn cpu_seconds(ticks: f64) -> (f64, f64, f64) {
    let mut relay = 0.0;
    let mut recorder = 0.0;
    let mut rest = 0.0;
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Some((name, used)) = procfs::cpu_seconds(&entry.path().join("stat"), ticks) else {
            continue;
        };
        if name.starts_with("tb-media") {
            relay += used;
        } else if name.starts_with("tb-recorder") {
            recorder += used;
        } else {
            rest += used;
        }
    }
    (relay, recorder, rest)
}

struct Stats {
    sent: AtomicU64,
    received: AtomicU64,
    latencies_ns: std::sync::Mutex<Vec<u64>>,
}

/// One party of one call: its socket and where it sends; on an SRTP leg,
/// its own key (it encrypts with) and the relay's for it (it decrypts
/// with).
struct Party {
    socket: Arc<UdpSocket>,
    target: SocketAddr,
    srtp: Option<(Protector, Unprotector)>,
}

impl Party {
    fn plain(socket: Arc<UdpSocket>, target: SocketAddr) -> Party {
        Party {
            socket,
            target,
            srtp: None,
        }
    }
}

async fn receive(
    socket: Arc<UdpSocket>,
    origin: Instant,
    stats: Arc<Stats>,
    stop: Instant,
    mut open: Option<Unprotector>,
) {
    let mut buf = [0u8; 2048];
    let mut latencies = Vec::with_capacity(1024);
    while let Ok(Ok((n, _))) = tokio::time::timeout(
        stop.saturating_duration_since(Instant::now()),
        socket.recv_from(&mut buf),
    )
    .await
    {
        let n = match &mut open {
            Some(open) => match open.unprotect_rtp(&mut buf[..n]) {
                Ok(n) => n,
                Err(_) => continue,
            },
            None => n,
        };
        if n < 20 {
            continue;
        }
        let sent_ns = u64::from_be_bytes(buf[12..20].try_into().unwrap());
        let now_ns = origin.elapsed().as_nanos() as u64;
        latencies.push(now_ns.saturating_sub(sent_ns));
        stats.received.fetch_add(1, Ordering::Relaxed);
    }
    stats.latencies_ns.lock().unwrap().extend(latencies);
}

struct Outcome {
    sent: u64,
    received: u64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    relay_cpu: f64,
    recorder_cpu: f64,
    generator_cpu: f64,
    /// Recorded: files' bytes, audio seconds, frames the queue dropped.
    recorded: Option<(u64, f64, u64)>,
}

/// Where a run's calls are recorded, if they are.
struct Recording<'a> {
    recorder: &'a Recorder,
    dir: &'a std::path::Path,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

/// Runs `calls` calls for `seconds`, through `relay` or directly, each
/// recorded when `recording` says where.
async fn run(
    relay: Option<&Relay>,
    calls: usize,
    seconds: u64,
    ticks: f64,
    recording: Option<&Recording<'_>>,
) -> Outcome {
    let path = Path {
        relay,
        other: None,
        recording,
        srtp: false,
    };
    run_through(path, calls, seconds, ticks).await
}

/// What the packets go through: our relay (its calls recorded, or SRTP on
/// both legs), another relay (the C floor, rtpengine), or nothing.
struct Path<'a> {
    relay: Option<&'a Relay>,
    other: Option<peers::Other<'a>>,
    recording: Option<&'a Recording<'a>>,
    srtp: bool,
}

/// A bench party's SDP: PCMU and telephone-event 101 at `rtp`.
fn peer(rtp: SocketAddr) -> Peer {
    Peer {
        rtp: Some(rtp),
        rtcp: None,
        direction: Direction::SendRecv,
        telephone_event: Some(101),
        codec: Some(tollbridge_media::sdp::Codec::Pcmu),
    }
}

/// The keys of one SRTP leg: the party's side and the relay's.
fn srtp_leg(suite: Suite) -> ((Protector, Unprotector), tollbridge_media::relay::LegSrtp) {
    let (theirs, ours) = (
        MasterKey::generate().unwrap(),
        MasterKey::generate().unwrap(),
    );
    (
        (
            Protector::new(suite, &theirs),
            Unprotector::new(suite, &ours),
        ),
        tollbridge_media::relay::LegSrtp {
            receive: Some(Unprotector::new(suite, &theirs)),
            send: Some(Protector::new(suite, &ours)),
        },
    )
}

/// [`run`] along `path`.
async fn run_through(path: Path<'_>, calls: usize, seconds: u64, ticks: f64) -> Outcome {
    let Path {
        relay,
        other,
        recording,
        srtp,
    } = path;
    let mut parties: Vec<Party> = Vec::with_capacity(calls * 2);
    let mut media: Vec<CallMedia> = Vec::new();
    let mut files = Vec::new();
    for index in 0..calls {
        let a = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        match (relay, other) {
            (_, Some(other)) => {
                let (to_a, to_b) = other.route(index, a_addr, b_addr);
                parties.push(Party::plain(a, to_a));
                parties.push(Party::plain(b, to_b));
            }
            (Some(relay), None) => {
                let call = relay.open_call().unwrap();
                call.set_peer(Side::Caller, peer(a_addr));
                call.set_peer(Side::Callee, peer(b_addr));
                if let Some(recording) = recording {
                    let path = recording.dir.join(format!("{index}.wav"));
                    let (tap, done) = recording.recorder.begin(path, Instant::now()).unwrap();
                    call.record(tap);
                    files.push(done);
                }
                let (a_keys, b_keys) = if srtp {
                    let suite = Suite::AesCm128HmacSha1_80;
                    let (a_keys, caller_leg) = srtp_leg(suite);
                    let (b_keys, callee_leg) = srtp_leg(suite);
                    call.secure(Side::Caller, caller_leg);
                    call.secure(Side::Callee, callee_leg);
                    (Some(a_keys), Some(b_keys))
                } else {
                    (None, None)
                };
                call.stats().await.unwrap();
                parties.push(Party {
                    socket: a,
                    target: call.address(Side::Caller),
                    srtp: a_keys,
                });
                parties.push(Party {
                    socket: b,
                    target: call.address(Side::Callee),
                    srtp: b_keys,
                });
                media.push(call);
            }
            (None, None) => {
                parties.push(Party::plain(a, b_addr));
                parties.push(Party::plain(b, a_addr));
            }
        }
    }
    let stats = Arc::new(Stats {
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        latencies_ns: std::sync::Mutex::new(Vec::new()),
    });
    let origin = Instant::now();
    let duration = Duration::from_secs(seconds);
    let stop_receiving = origin + duration + Duration::from_millis(500);
    let receivers: Vec<_> = parties
        .iter()
        .map(|p| {
            tokio::spawn(receive(
                p.socket.clone(),
                origin,
                stats.clone(),
                stop_receiving,
                p.srtp.as_ref().map(|(_, open)| open.clone()),
            ))
        })
        .collect();
    let (relay_before, recorder_before, rest_before) = cpu_seconds(ticks);
    let other_before = other.map_or(0.0, |o| o.cpu_seconds(ticks));
    // Each party sends every 20 ms, the parties spread evenly over the frame.
    let mut packet = [0u8; PACKET + tollbridge_media::srtp::MAX_OVERHEAD];
    let mut next = vec![Duration::ZERO; parties.len()];
    for (i, slot) in next.iter_mut().enumerate() {
        *slot = FRAME * i as u32 / parties.len() as u32;
    }
    let mut seq = vec![0u16; parties.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while origin.elapsed() < duration {
        tick.tick().await;
        let now = origin.elapsed();
        for (i, party) in parties.iter_mut().enumerate() {
            if next[i] > now {
                continue;
            }
            packet[0] = 0x80;
            packet[1] = 0;
            next[i] += FRAME;
            seq[i] = seq[i].wrapping_add(1);
            packet[2..4].copy_from_slice(&seq[i].to_be_bytes());
            packet[4..8].copy_from_slice(&(u32::from(seq[i]) * 160).to_be_bytes());
            packet[8..12].copy_from_slice(&(i as u32).to_be_bytes());
            // The send time rides where the relay never looks: the payload.
            packet[12..20].copy_from_slice(&(origin.elapsed().as_nanos() as u64).to_be_bytes());
            packet[20..PACKET].fill(0);
            let len = match &mut party.srtp {
                Some((seal, _)) => seal.protect_rtp(&mut packet, PACKET).unwrap(),
                None => PACKET,
            };
            if party
                .socket
                .try_send_to(&packet[..len], party.target)
                .is_ok()
            {
                stats.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    for receiver in receivers {
        receiver.await.unwrap();
    }
    for call in media {
        call.close().await;
    }
    // The recorder's work includes closing, syncing and hashing the files.
    let mut recorded = None;
    if !files.is_empty() {
        let (mut bytes, mut audio, mut dropped) = (0, 0.0, 0);
        for done in files {
            let outcome = done.await.unwrap();
            bytes += outcome.bytes;
            audio += outcome.duration.as_secs_f64();
            dropped += outcome.dropped_frames;
            let _ = std::fs::remove_file(&outcome.path);
        }
        recorded = Some((bytes, audio, dropped));
    }
    let (relay_after, recorder_after, rest_after) = cpu_seconds(ticks);
    let other_after = other.map_or(0.0, |o| o.cpu_seconds(ticks));
    let mut latencies = std::mem::take(&mut *stats.latencies_ns.lock().unwrap());
    latencies.sort_unstable();
    let received = stats.received.load(Ordering::Relaxed);
    Outcome {
        sent: stats.sent.load(Ordering::Relaxed),
        received,
        p50_us: percentile(&latencies, 0.5),
        p99_us: percentile(&latencies, 0.99),
        max_us: latencies.last().map_or(f64::NAN, |v| *v as f64 / 1000.0),
        relay_cpu: match other {
            Some(_) => other_after - other_before,
            None => relay_after - relay_before,
        },
        recorder_cpu: recorder_after - recorder_before,
        generator_cpu: rest_after - rest_before,
        recorded,
    }
}

/// Recording off and on, alternately, at `calls` calls: the relay's CPU
/// per packet in each, what the recorder costs, and the disk it fills.
fn recording_cost(runtime: &tokio::runtime::Runtime, relay: &Relay, ticks: f64) {
    let mut args = std::env::args().skip(2);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let calls: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(500);
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2);
    let recorder = Recorder::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let recording = Recording {
        recorder: &recorder,
        dir: dir.path(),
    };
    println!(
        "| recording | calls | packets relayed | loss % | relay CPU µs/pkt | recorder CPU µs/pkt | frames dropped | disk bytes per recorded minute |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for _ in 0..rounds {
        for on in [false, true] {
            let outcome = runtime.block_on(run(
                Some(relay),
                calls,
                seconds,
                ticks,
                on.then_some(&recording),
            ));
            let relayed = outcome.received.max(1) as f64;
            let loss = 100.0 * (outcome.sent - outcome.received.min(outcome.sent)) as f64
                / outcome.sent.max(1) as f64;
            let (recorder_cpu, dropped, per_minute) = match outcome.recorded {
                Some((bytes, audio, dropped)) => (
                    format!("{:.2}", outcome.recorder_cpu * 1e6 / relayed),
                    dropped.to_string(),
                    format!("{:.0}", bytes as f64 * 60.0 / audio.max(1e-9)),
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            println!(
                "| {} | {calls} | {} | {loss:.3} | {:.2} | {recorder_cpu} | {dropped} | {per_minute} |",
                if on { "every call" } else { "off" },
                outcome.received,
                outcome.relay_cpu * 1e6 / relayed,
            );
        }
    }
}

/// ns of CPU per prompt frame in each mode, the other party talking
/// throughout (so mix has something to mix every frame).
fn prompt_cost(frames: u32) {
    let prompt = Prompts::built_in("en").unwrap().get(PromptName::Warning);
    let mut costs = Vec::new();
    for mode in [PromptMode::Replace, PromptMode::Mix] {
        let mut stream = OutStream::default();
        let mut out = [0u8; PROMPT_PACKET];
        let mut prompt_only = [0u8; 160];
        let mut packet = [0x33u8; PACKET];
        packet[0] = 0x80;
        packet[1] = 0;
        let mut now = Instant::now();
        let started = Instant::now();
        for _ in 0..frames {
            if !stream.is_playing() {
                stream.play(prompt.clone(), mode, Codec::Pcmu, now);
            }
            let header = RtpHeader::read(&packet).unwrap();
            std::hint::black_box(stream.forward(&mut packet, header, true, now));
            std::hint::black_box(stream.poll_frame(now, &mut out, 1, &mut prompt_only));
            now += PROMPT_FRAME;
        }
        let ns = started.elapsed().as_nanos() as f64 / f64::from(frames);
        costs.push((mode, ns));
    }
    println!("| mode | frames | ns per frame | relative to replace |");
    println!("|---|---|---|---|");
    let replace = costs[0].1;
    for (mode, ns) in costs {
        println!("| {mode:?} | {frames} | {ns:.0} | {:.1} × |", ns / replace);
    }
}

/// Plain RTP and SRTP on both legs, alternately at each size (`relay-bench
/// srtp [SECONDS] [ROUNDS] [CALLS...]`): the relay's CPU per packet in
/// each, and SRTP's over plain.
fn srtp_cost(runtime: &tokio::runtime::Runtime, relay: &Relay, ticks: f64) {
    let mut args = std::env::args().skip(2);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2);
    let mut sizes: Vec<usize> = args.filter_map(|s| s.parse().ok()).collect();
    if sizes.is_empty() {
        sizes = vec![50, 500];
    }
    println!(
        "| legs | calls | packets relayed | loss % | relay CPU µs/pkt | latency p50 µs | p99 µs | SRTP / plain |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for calls in sizes {
        for _ in 0..rounds {
            let mut plain_cost = f64::NAN;
            for srtp in [false, true] {
                let path = Path {
                    relay: Some(relay),
                    other: None,
                    recording: None,
                    srtp,
                };
                let outcome = runtime.block_on(run_through(path, calls, seconds, ticks));
                let per_packet = outcome.relay_cpu * 1e6 / outcome.received.max(1) as f64;
                let loss = 100.0 * (outcome.sent - outcome.received.min(outcome.sent)) as f64
                    / outcome.sent.max(1) as f64;
                let ratio = if srtp {
                    format!("{:.2}", per_packet / plain_cost)
                } else {
                    plain_cost = per_packet;
                    "-".into()
                };
                println!(
                    "| {} | {calls} | {} | {loss:.3} | {per_packet:.2} | {:.0} | {:.0} | {ratio} |",
                    if srtp { "SRTP both" } else { "plain" },
                    outcome.received,
                    outcome.p50_us,
                    outcome.p99_us,
                );
            }
        }
    }
}

/// Where the C floor's ports start: the relay's pool is 10000–19999, both
/// below the kernel's ephemeral ports, which the generator's sockets take.
const FLOOR_PORTS: u16 = 20_000;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("prompts") {
        let frames = std::env::args()
            .nth(2)
            .and_then(|s| s.parse().ok())
            .unwrap_or(1_000_000);
        prompt_cost(frames);
        return;
    }
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let mut sizes: Vec<usize> = args.filter_map(|s| s.parse().ok()).collect();
    if sizes.is_empty() {
        sizes = vec![50, 200, 500];
    }
    let ticks = procfs::clock_ticks();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = PortPool::new("127.0.0.1".parse().unwrap(), 10000, 19999, Duration::ZERO);
    let threads: usize = std::env::var("RELAY_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let relay = Relay::start(
        pool,
        LatchPolicy::SignalledIp,
        "127.0.0.1".parse().unwrap(),
        threads,
    )
    .unwrap();
    println!("relay threads: {threads}");
    pinning::relay_and_generator();
    if std::env::args().nth(1).as_deref() == Some("memory") {
        let sizes: Vec<usize> = std::env::args()
            .skip(2)
            .filter_map(|s| s.parse().ok())
            .collect();
        memory::per_call(&runtime, &relay, &sizes);
        peers::rtpengine_memory(&sizes, threads);
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("recording") {
        recording_cost(&runtime, &relay, ticks);
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("srtp") {
        srtp_cost(&runtime, &relay, ticks);
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("floor") {
        peers::side_by_side(&runtime, &relay, threads, ticks, peers::Ours::InProcess);
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("kernel") {
        fast_path::side_by_side(&runtime, &relay, threads, ticks);
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("daemon") {
        peers::side_by_side(&runtime, &relay, threads, ticks, peers::Ours::Daemon);
        return;
    }
    println!(
        "| path | calls | packets sent | received | loss % | relay CPU µs/pkt | generator CPU µs/pkt | latency p50 µs | p99 µs | max µs | added p50 µs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for calls in sizes {
        let direct = runtime.block_on(run(None, calls, seconds, ticks, None));
        let relayed = runtime.block_on(run(Some(&relay), calls, seconds, ticks, None));
        for (name, outcome) in [("direct (baseline)", &direct), ("relay", &relayed)] {
            let loss = 100.0 * (outcome.sent - outcome.received.min(outcome.sent)) as f64
                / outcome.sent.max(1) as f64;
            let relay_cpu = if name == "relay" {
                format!(
                    "{:.2}",
                    outcome.relay_cpu * 1e6 / outcome.received.max(1) as f64
                )
            } else {
                "-".into()
            };
            let added = if name == "relay" {
                format!("{:.0}", relayed.p50_us - direct.p50_us)
            } else {
                "-".into()
            };
            println!(
                "| {name} | {calls} | {} | {} | {loss:.3} | {relay_cpu} | {:.2} | {:.0} | {:.0} | {:.0} | {added} |",
                outcome.sent,
                outcome.received,
                outcome.generator_cpu * 1e6 / outcome.sent.max(1) as f64,
                outcome.p50_us,
                outcome.p99_us,
                outcome.max_us,
            );
        }
    }
    // A closed call's task drops its sockets right after its last reply.
    let deadline = Instant::now() + Duration::from_secs(2);
    while relay.pairs_in_use() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(relay.pairs_in_use(), 0, "the bench leaked relay ports");
}
