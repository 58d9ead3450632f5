//! Benchmark of cap precision: how close to the paid time's end each party
//! gets its BYE.
//!
//! `cargo run --release -p tollbridge-e2e --bin cap-bench -- [CALLS] [CAP_SECONDS]`
//! (defaults: 100 calls, 3 s cap). Starts the real daemon (built by the
//! test harness) and books one booking per call; SIPp's expert answers
//! (`expert_answers.xml`) and SIPp's caller waits for the BYE
//! (`caller_waits_bye.xml`), 10 calls per second. From SIPp's own message
//! traces (µs timestamps, one clock): the cap instant is when the expert
//! sent its 200 plus the cap; each leg's error is when its BYE arrived
//! minus that instant. Prints the distribution per leg as Markdown.

// A benchmark tool: a failed setup step aborts it with a message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use tollbridge_e2e::{Daemon, SippPeer, test_config};

const TOKEN: &str = "cap-bench-token-0123456789";
const NUMBER: &str = "+81500000009";
const CALLER_PREFIX: &str = "+8190000";

/// One traced message: when (µs of the day), sent or received, first
/// line, Call-ID.
struct Traced {
    at_us: i64,
    received: bool,
    first_line: String,
    call_id: String,
}

fn parse_trace(trace: &str) -> Vec<Traced> {
    trace
        .split("----------------------------------------------- ")
        .filter_map(|chunk| {
            let mut lines = chunk.lines();
            let stamp = lines.next()?;
            let clock = stamp.split_whitespace().nth(1)?;
            let mut parts = clock.split(':');
            let hours: i64 = parts.next()?.parse().ok()?;
            let minutes: i64 = parts.next()?.parse().ok()?;
            let (seconds, micros) = parts.next()?.split_once('.')?;
            let at_us = ((hours * 60 + minutes) * 60 + seconds.parse::<i64>().ok()?) * 1_000_000
                + micros.parse::<i64>().ok()?;
            let direction = lines.next()?;
            let received = direction.contains("received");
            let mut rest = lines.skip_while(|l| l.trim().is_empty());
            let first_line = rest.next()?.to_owned();
            let call_id = rest.find_map(|l| l.strip_prefix("Call-ID: ").map(str::to_owned))?;
            Some(Traced {
                at_us,
                received,
                first_line,
                call_id,
            })
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn row(name: &str, mut errors: Vec<f64>) {
    errors.sort_by(|a, b| a.total_cmp(b));
    let within = errors.iter().filter(|e| e.abs() <= 50.0).count();
    println!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {within} |",
        errors.len(),
        errors[0],
        percentile(&errors, 0.5),
        percentile(&errors, 0.9),
        percentile(&errors, 0.99),
        errors[errors.len() - 1],
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let calls: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100);
    let cap: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);
    let config = test_config(
        &format!("api_token = \"{TOKEN}\""),
        "[media]\naddress = \"127.0.0.1\"\nports = \"46000-47999\"\n\n[prompts]\nwarning_before = \"0s\"\n",
    );
    let daemon = Daemon::start(&config);
    assert!(daemon.wait_for_log("sip listening", Duration::from_secs(10)));
    let limit = Duration::from_secs(u64::from(calls) / 5 + u64::from(cap) + 60);
    let expert = SippPeer::start(
        "expert_answers.xml",
        None,
        "expert",
        &[("rtp_port", "40002".into())],
        &["-m", &calls.to_string()],
        limit,
    );
    let start = (time::OffsetDateTime::now_utc() - time::Duration::minutes(5))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let end = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    for n in 1..=calls {
        let booking = serde_json::json!({
            "called": NUMBER,
            "callers": [format!("{CALLER_PREFIX}{n}")],
            "callee": {"uri": format!("sip:expert@{}", expert.addr)},
            "tariff": {"currency": "jpy", "price_per_minute": 100},
            "cap_seconds": cap,
            "window": {"start": start, "end": end},
        });
        let (status, body) = daemon.api("POST", "/v1/bookings", TOKEN, Some(&booking.to_string()));
        assert_eq!(status, 201, "{body}");
    }
    let caller = SippPeer::start(
        "caller_waits_bye.xml",
        daemon.sip_udp(),
        NUMBER,
        &[
            ("caller_prefix", CALLER_PREFIX.into()),
            ("rtp_port", "40000".into()),
            ("formats", "0 96".into()),
        ],
        &[
            "-m",
            &calls.to_string(),
            "-r",
            "10",
            "-l",
            &calls.to_string(),
        ],
        limit,
    );
    // A run's output ends with its message trace.
    let caller_trace = parse_trace(&caller.wait(limit).output);
    let expert_trace = parse_trace(&expert.wait(limit).output);
    // The daemon's records pair each caller Call-ID with its callee Call-ID.
    let mut pairs: HashMap<String, String> = HashMap::new();
    for booking in daemon
        .api(
            "GET",
            &format!("/v1/bookings?limit=500&called=%2B{}", &NUMBER[1..]),
            TOKEN,
            None,
        )
        .1["bookings"]
        .as_array()
        .unwrap()
    {
        let id = booking["id"].as_str().unwrap();
        let (_, calls) = daemon.api("GET", &format!("/v1/calls?booking={id}"), TOKEN, None);
        for call in calls["calls"].as_array().unwrap() {
            if let (Some(inbound), Some(outbound)) = (
                call["legs"]["caller"]["sip_call_id"].as_str(),
                call["legs"]["callee"]["sip_call_id"].as_str(),
            ) {
                pairs.insert(inbound.to_owned(), outbound.to_owned());
            }
        }
    }
    let cap_us = i64::from(cap) * 1_000_000;
    // The first 200 the expert sent on a call answers the INVITE (a later
    // one answers the BYE).
    let mut answered: HashMap<&str, i64> = HashMap::new();
    for m in expert_trace
        .iter()
        .filter(|m| !m.received && m.first_line.starts_with("SIP/2.0 200"))
    {
        answered.entry(m.call_id.as_str()).or_insert(m.at_us);
    }
    let mut callee_errors = Vec::new();
    for bye in expert_trace
        .iter()
        .filter(|m| m.received && m.first_line.starts_with("BYE"))
    {
        if let Some(at) = answered.get(bye.call_id.as_str()) {
            callee_errors.push((bye.at_us - at - cap_us) as f64 / 1000.0);
        }
    }
    let mut caller_errors = Vec::new();
    for bye in caller_trace
        .iter()
        .filter(|m| m.received && m.first_line.starts_with("BYE"))
    {
        if let Some(at) = pairs
            .get(&bye.call_id)
            .and_then(|outbound| answered.get(outbound.as_str()))
        {
            caller_errors.push((bye.at_us - at - cap_us) as f64 / 1000.0);
        }
    }
    println!("BYE arrival minus cap, ms ({calls} calls, cap {cap} s):\n");
    println!("| leg | calls | min | p50 | p90 | p99 | max | within ±50 ms |");
    println!("|---|---|---|---|---|---|---|---|");
    row("expert (callee)", callee_errors);
    row("caller", caller_errors);
}
