//! Benchmark of the SIP edge: signalling-only call setups per second and
//! INVITE→200 latency driven by SIPp, side by side with SIPp's own UAS as
//! the baseline peer in the same run; and INVITE→100 latency measured in
//! microseconds by a probe that sends INVITEs while SIPp's load runs (SIPp
//! times responses in whole milliseconds, too coarse for a 100 Trying).
//!
//! `cargo run --release -p tollbridge-e2e --bin sip-edge-bench -- [CALLS] [RATE...]`
//! (defaults: 2000 calls at 100, 200 and 400 calls per second). Prints
//! Markdown tables; BENCHMARKS.md has the figures and the machine.

// A benchmark tool: a failed setup step aborts it with a message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tollbridge_sip::acl::Acl;
use tollbridge_sip::edge::{EdgeConfig, InboundCall, LegEvent, Listener, SipEdge, Transport};
use tollbridge_sip::gate::{GateRules, UnknownSourcePolicy};
use tollbridge_sip::wire::Limits;

const SDP: &str = "v=0\r\no=tollbridge 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

/// The number the bench handler refuses at once (the probe's calls).
const PROBE_NUMBER: &str = "+81300000000";

/// One SIPp run's outcome.
struct Outcome {
    successful: u64,
    failed: u64,
    elapsed: Duration,
    answer_ms: Vec<f64>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn free_port() -> u16 {
    tollbridge_e2e::free_port("127.0.0.1")
}

/// Runs SIPp's UAC with the bench scenario against `target`.
fn run_uac(target: SocketAddr, calls: u64, rate: u64) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let output = Command::new("sipp")
        .arg(target.to_string())
        .arg("-sf")
        .arg(tollbridge_e2e::scenario_path("bench_call.xml"))
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &free_port().to_string(),
            "-s",
            "+81311110001",
            "-nostdin",
        ])
        .args([
            "-r",
            &rate.to_string(),
            "-m",
            &calls.to_string(),
            "-l",
            "5000",
        ])
        .args(["-timeout", "120s", "-trace_rtt", "-rtt_freq", "1"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("cannot run sipp (apt-get install sip-tester)");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let cumulative = |label: &str| -> u64 {
        stdout
            .lines()
            .rfind(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split('|').nth(2))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let mut answer_ms = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
        if !entry.file_name().to_string_lossy().ends_with("_rtt.csv") {
            continue;
        }
        for line in std::fs::read_to_string(entry.path())
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let fields: Vec<&str> = line.split(';').collect();
            let (Some(ms), Some(rtd)) = (
                fields.get(1).and_then(|v| v.parse::<f64>().ok()),
                fields.get(2),
            ) else {
                continue;
            };
            if rtd.trim() == "1" {
                answer_ms.push(ms);
            }
        }
    }
    answer_ms.sort_by(f64::total_cmp);
    Outcome {
        successful: cumulative("Successful call"),
        failed: cumulative("Failed call"),
        elapsed,
        answer_ms,
    }
}

/// Answers every call at once and waits for its end, like call control
/// with nothing to look up.
async fn answer_all(mut calls: tokio::sync::mpsc::Receiver<InboundCall>) {
    while let Some(call) = calls.recv().await {
        tokio::spawn(async move {
            let mut leg = call.leg;
            if call.called.as_deref() == Some(PROBE_NUMBER) {
                let _ = leg.reject(603);
                return;
            }
            if leg.answer(SDP.as_bytes().to_vec()).is_err() {
                return;
            }
            while let Some(event) = leg.next_event().await {
                if matches!(
                    event,
                    LegEvent::HungUp | LegEvent::Cancelled | LegEvent::Ended(_)
                ) {
                    break;
                }
            }
        });
    }
}

fn row(peer: &str, rate: u64, outcome: &Outcome) {
    println!(
        "| {peer} | {rate} | {} | {} | {:.0} | {:.0} | {:.0} |",
        outcome.successful,
        outcome.failed,
        outcome.successful as f64 / outcome.elapsed.as_secs_f64(),
        percentile(&outcome.answer_ms, 0.5),
        percentile(&outcome.answer_ms, 0.99),
    );
}

/// Sends `count` INVITEs one after another from its own socket and times
/// each 100 Trying in microseconds; ACKs the 603 that follows.
fn probe_trying(edge: SocketAddr, count: usize) -> Vec<f64> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let me = socket.local_addr().unwrap();
    let mut buffer = [0u8; 4096];
    let mut micros = Vec::with_capacity(count);
    for i in 0..count {
        let head = |method: &str, to_tag: &str, cseq: &str| {
            format!(
                "{method} sip:{PROBE_NUMBER}@{edge} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKprobe{i};rport\r\n\
                 From: <sip:+819012345678@{me}>;tag=p{i}\r\nTo: <sip:{PROBE_NUMBER}@{edge}>{to_tag}\r\n\
                 Call-ID: probe-{i}-{me}\r\nCSeq: {cseq}\r\nContact: <sip:p@{me}>\r\nMax-Forwards: 70\r\n\
                 Content-Length: 0\r\n\r\n"
            )
        };
        let sent = Instant::now();
        socket
            .send_to(head("INVITE", "", "1 INVITE").as_bytes(), edge)
            .unwrap();
        let mut got_trying = false;
        while let Ok((n, _)) = socket.recv_from(&mut buffer) {
            let text = String::from_utf8_lossy(&buffer[..n]);
            if text.starts_with("SIP/2.0 100") && !got_trying {
                micros.push(sent.elapsed().as_secs_f64() * 1e6);
                got_trying = true;
            } else if text.starts_with("SIP/2.0 603") {
                let tag = text
                    .lines()
                    .find(|l| l.starts_with("To:"))
                    .and_then(|l| l.split(";tag=").nth(1))
                    .map(|t| format!(";tag={}", t.trim()))
                    .unwrap_or_default();
                socket
                    .send_to(head("ACK", &tag, "1 ACK").as_bytes(), edge)
                    .unwrap();
                break;
            }
        }
    }
    micros.sort_by(f64::total_cmp);
    micros
}

fn main() {
    let mut args = std::env::args().skip(1);
    let calls: u64 = args.next().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let rates: Vec<u64> = {
        let given: Vec<u64> = args.filter_map(|v| v.parse().ok()).collect();
        if given.is_empty() {
            vec![100, 200, 400]
        } else {
            given
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let edge_addr = runtime.block_on(async {
        let config = EdgeConfig {
            listen: vec![Listener {
                transport: Transport::Udp,
                addr: "127.0.0.1:0".parse().unwrap(),
            }],
            public_host: None,
            rules: GateRules {
                acl: Acl::new(vec![(
                    "bench".into(),
                    vec!["127.0.0.1/32".parse().unwrap()],
                )]),
                unknown_source: UnknownSourcePolicy::Drop,
                limits: Limits::default(),
                registrar: Vec::new(),
            },
            invites_per_second: NonZeroU32::new(10_000).unwrap(),
            tcp_connections_per_source: 64,
            user_agent: "tollbridge-bench".into(),
            registrar: false,
            tls_server: None,
            tls_client: tollbridge_e2e::tls::trusting_nothing(),
        };
        let (edge, calls) = SipEdge::start(config).await.unwrap();
        tokio::spawn(answer_all(calls));
        let addr = edge.listeners()[0].addr;
        std::mem::forget(edge);
        addr
    });

    // The baseline peer: SIPp's built-in UAS on its own port.
    let baseline_port = free_port();
    let baseline_dir = tempfile::tempdir().unwrap();
    let mut baseline = Command::new("sipp")
        .args([
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            &baseline_port.to_string(),
            "-nostdin",
        ])
        .current_dir(baseline_dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot run sipp");
    std::thread::sleep(Duration::from_millis(500));
    let baseline_addr = SocketAddr::from(([127, 0, 0, 1], baseline_port));

    println!("{calls} calls per run; setups/s = successful calls / wall time of the run;");
    println!("INVITE→200 in ms as SIPp measures it (whole milliseconds).");
    println!();
    println!("| peer | offered cps | ok | failed | setups/s | INVITE→200 p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|---|");
    let mut probes = Vec::new();
    for &rate in &rates {
        let (load, probe) = std::thread::scope(|scope| {
            let load = scope.spawn(|| run_uac(edge_addr, calls, rate));
            // Let the load ramp up, then probe while it runs.
            std::thread::sleep(Duration::from_millis(500));
            let probe = probe_trying(edge_addr, 500);
            (load.join().unwrap(), probe)
        });
        row("tollbridge edge", rate, &load);
        row(
            "SIPp uas (baseline)",
            rate,
            &run_uac(baseline_addr, calls, rate),
        );
        probes.push((rate, probe));
    }
    let idle = probe_trying(edge_addr, 1000);
    println!();
    println!("INVITE→100 Trying at the edge, µs, from a probe's own socket:");
    println!();
    println!("| load (cps) | probes | p50 µs | p90 µs | p99 µs | max µs |");
    println!("|---|---|---|---|---|---|");
    for (rate, probe) in std::iter::once((0, idle)).chain(probes) {
        println!(
            "| {rate} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            probe.len(),
            percentile(&probe, 0.5),
            percentile(&probe, 0.9),
            percentile(&probe, 0.99),
            probe.last().copied().unwrap_or(f64::NAN)
        );
    }
    let _ = baseline.kill();
    let _ = baseline.wait();
}
