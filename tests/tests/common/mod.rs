//! What the call tests share: a daemon with a media range of its own,
//! bookings, SIPp peers, and the test's own sockets as media endpoints.

// Test code: a failed setup step is a failed test; not every test file
// uses every helper.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

pub mod experts;
pub mod heard;
pub mod pjsua2;
pub mod stripe;

pub use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU16, Ordering};
pub use std::time::{Duration, Instant};

pub use serde_json::{Value, json};
pub use tollbridge_e2e::{Daemon, SippPeer, rfc3339, test_config};

pub const TOKEN: &str = "bridge-test-token-0123456789";
pub const NUMBER: &str = "+81500000001";
/// Callers are `CALLER_PREFIX` + SIPp's call number (1, 2, ...).
pub const CALLER_PREFIX: &str = "+81900000";
pub const SIPP_LIMIT: Duration = Duration::from_secs(60);

/// A distinct media port range per daemon, so parallel tests do not
/// compete for the same ports; all below 32768, out of the kernel's
/// ephemeral range, where SIPp's and the tests' own sockets get theirs.
pub fn port_range() -> String {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let first = 20000 + (std::process::id() % 6) as u16 * 2000 + (n % 10) * 200;
    format!("{first}-{}", first + 199)
}

/// `media.port_quarantine` for test daemons: their ranges hold 100 pairs
/// and some tests place hundreds of calls in a row.
pub const PORT_QUARANTINE: &str = "1s";

pub fn start_daemon(calls: &str) -> Daemon {
    start_daemon_with(calls, "30s")
}

/// A daemon with `[calls]` keys and this `media.timeout`.
pub fn start_daemon_with(calls: &str, media_timeout: &str) -> Daemon {
    start_daemon_sections(calls, media_timeout, "")
}

/// A daemon with `[calls]` keys, this `media.timeout`, and more sections.
pub fn start_daemon_sections(calls: &str, media_timeout: &str, more: &str) -> Daemon {
    start_daemon_as(tollbridge_e2e::DaemonOptions {
        config: Some(daemon_config(calls, media_timeout, more)),
        ..tollbridge_e2e::DaemonOptions::default()
    })
}

/// The config of [`start_daemon_sections`].
pub fn daemon_config(calls: &str, media_timeout: &str, more: &str) -> String {
    let sections = format!(
        "[media]\naddress = \"127.0.0.1\"\nports = \"{}\"\ntimeout = \"{media_timeout}\"\nport_quarantine = \"{PORT_QUARANTINE}\"\n\n[calls]\n{calls}\n\n{more}\n",
        port_range()
    );
    test_config(&format!("api_token = \"{TOKEN}\""), &sections)
}

/// A daemon as [`tls_daemon_config`] says.
pub fn start_tls_daemon(
    ca: &tollbridge_e2e::tls::TestCa,
    ours: &tollbridge_e2e::tls::Issued,
    more: &str,
) -> Daemon {
    start_daemon_as(tollbridge_e2e::DaemonOptions {
        config: Some(tls_daemon_config(ca, ours, more)),
        ..tollbridge_e2e::DaemonOptions::default()
    })
}

/// [`daemon_config`] (`more` its extra sections) with a `tls:` listener
/// serving `ours` and trusting `ca` for outbound TLS.
pub fn tls_daemon_config(
    ca: &tollbridge_e2e::tls::TestCa,
    ours: &tollbridge_e2e::tls::Issued,
    more: &str,
) -> String {
    let config = daemon_config("ring_timeout = \"10s\"", "30s", more);
    let listeners = "\"tcp:127.0.0.1:0\"]";
    assert!(config.contains(listeners));
    config.replace(
        listeners,
        &format!(
            "\"tcp:127.0.0.1:0\", \"tls:127.0.0.1:0\"]\ntls = {{ certificate = {:?}, private_key = {:?}, ca = {:?} }}",
            ours.certificate,
            ours.private_key,
            ca.ca_file()
        ),
    )
}

/// A daemon started as `options` say, once its SIP edge listens.
pub fn start_daemon_as(options: tollbridge_e2e::DaemonOptions) -> Daemon {
    let daemon = Daemon::start_with(options);
    assert!(
        daemon.wait_for_log("sip listening", Duration::from_secs(10)),
        "{:?}",
        daemon.logs()
    );
    daemon
}

/// Creates a booking on [`NUMBER`] (cap 600 s) and returns its id.
pub fn book(daemon: &Daemon, callers: &[String], pin: Option<&str>, expert: &str) -> String {
    book_capped(daemon, callers, pin, expert, 600)
}

/// [`book`] with a cap in seconds.
pub fn book_capped(
    daemon: &Daemon,
    callers: &[String],
    pin: Option<&str>,
    expert: &str,
    cap_seconds: u32,
) -> String {
    let mut booking = booking_json(callers, expert, cap_seconds);
    if let Some(pin) = pin {
        booking["pin"] = json!(pin);
    }
    create_booking(daemon, &booking)
}

/// A booking on [`NUMBER`]: ¥100 a minute, its window open from five
/// minutes ago for an hour.
pub fn booking_json(callers: &[String], expert: &str, cap_seconds: u32) -> Value {
    json!({
        "called": NUMBER,
        "callers": callers,
        "callee": {"uri": expert},
        "tariff": {"currency": "jpy", "price_per_minute": 100},
        "cap_seconds": cap_seconds,
        "window": {"start": rfc3339(time::Duration::minutes(-5)), "end": rfc3339(time::Duration::hours(1))},
    })
}

/// Creates `booking` through the API and returns its id.
pub fn create_booking(daemon: &Daemon, booking: &Value) -> String {
    let (status, body) = daemon.api("POST", "/v1/bookings", TOKEN, Some(&booking.to_string()));
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

pub fn caller_id(call_number: u32) -> String {
    format!("{CALLER_PREFIX}{call_number}")
}

pub fn expert_uri(expert: &SippPeer) -> String {
    format!("sip:expert@{}", expert.addr)
}

/// The relay port in the first SIP message of a trace that starts with
/// `first_line` and carries our SDP.
pub fn relay_port(trace: &str, first_line: &str) -> Option<u16> {
    trace
        .split("----------------------------------------------")
        .filter(|message| message.contains(first_line) && message.contains("o=tollbridge"))
        .find_map(|message| {
            let line = message.lines().find(|l| l.starts_with("m=audio "))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
}

pub fn wait_relay(peer: &SippPeer, first_line: &str) -> SocketAddr {
    let port = peer
        .wait_for(Duration::from_secs(15), |trace| {
            relay_port(trace, first_line)
        })
        .unwrap_or_else(|| {
            panic!(
                "no {first_line} with our SDP in:\n{}\n{}",
                peer.messages(),
                peer.output()
            )
        });
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub fn media_socket() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    socket
}

pub fn port_of(socket: &UdpSocket) -> String {
    socket.local_addr().unwrap().port().to_string()
}

pub fn rtp(payload_type: u8, seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x80, payload_type];
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    packet.extend_from_slice(&ssrc.to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}

/// Sends one packet and returns what arrived at `to` (and from where), if
/// anything did within half a second.
pub fn relay_one(
    from: &UdpSocket,
    target: SocketAddr,
    packet: &[u8],
    to: &UdpSocket,
) -> Option<(Vec<u8>, SocketAddr)> {
    from.send_to(packet, target).unwrap();
    let mut buf = [0u8; 2048];
    to.recv_from(&mut buf)
        .ok()
        .map(|(n, source)| (buf[..n].to_vec(), source))
}

/// Polls the booking's calls until the first has ended.
pub fn ended_call(daemon: &Daemon, booking: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, body) = daemon.api("GET", &format!("/v1/calls?booking={booking}"), TOKEN, None);
        if let Some(call) = body["calls"].as_array().and_then(|c| c.first())
            && !call["ended_at"].is_null()
            && !call["legs"]["caller"]["media"].is_null()
        {
            return call.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no ended call for {booking}: {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn statuses(call: &Value) -> Vec<String> {
    call["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap().to_owned())
        .collect()
}

/// The details of a call record's events, in order.
pub fn event_details(call: &Value) -> Vec<&str> {
    call["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["detail"].as_str())
        .collect()
}

/// Reads `tollbridge_media_port_pairs_in_use` and `tollbridge_sip_dialogs`
/// until both are zero (a call's ports and dialogs are released right
/// after its last record; one kept would be memory never given back).
pub fn assert_no_ports_held(daemon: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = daemon.get("/metrics", None);
        let gauge = |name: &str| {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or("missing")
                .to_owned()
        };
        let held = gauge("tollbridge_media_port_pairs_in_use ");
        let dialogs = gauge("tollbridge_sip_dialogs ");
        if held == "0" && dialogs == "0" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "relay ports still held: {held}, SIP dialogs kept: {dialogs}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn assert_passed(name: &str, peer: SippPeer) -> String {
    let run = peer.wait(SIPP_LIMIT);
    assert!(run.passed(), "{name} failed:\n{}", run.output);
    run.output
}

/// The expert's phone: SIPp running `scenario` (from `tests/sipp/`) as a
/// server, taking media at `rtp_port`.
pub fn expert(scenario: &str, rtp_port: &str, extra: &[&str]) -> SippPeer {
    SippPeer::start(
        scenario,
        None,
        "expert",
        &[("rtp_port", rtp_port.to_owned())],
        extra,
        SIPP_LIMIT,
    )
}

/// A customer calling [`NUMBER`] at `daemon`: SIPp running `scenario`, its
/// caller IDs `caller_prefix` + SIPp's call number, offering `formats` with
/// media at `rtp_port`.
pub fn caller(
    daemon: &Daemon,
    scenario: &str,
    caller_prefix: &str,
    rtp_port: &str,
    formats: &str,
    extra: &[&str],
) -> SippPeer {
    SippPeer::start(
        scenario,
        daemon.sip_udp(),
        NUMBER,
        &[
            ("caller_prefix", caller_prefix.to_owned()),
            ("rtp_port", rtp_port.to_owned()),
            ("formats", formats.to_owned()),
        ],
        extra,
        SIPP_LIMIT,
    )
}

/// The details of a call record's events, in order.
pub fn details(call: &Value) -> Vec<String> {
    call["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["detail"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A call bridged through a daemon: SIPp as both phones, the test's own
/// sockets as their media, and the relay's address for each.
pub struct Bridged {
    pub caller: SippPeer,
    pub expert: SippPeer,
    pub booking: String,
    pub caller_media: UdpSocket,
    pub expert_media: UdpSocket,
    pub caller_relay: SocketAddr,
    pub expert_relay: SocketAddr,
}

/// Books caller 1 to an expert answering with `expert_answers.xml`, has
/// it call with `caller_scenario` (offering PCMU and DTMF on 96, SIPp's
/// `caller_extra` arguments) and waits until both have our SDP.
pub fn bridged(daemon: &Daemon, caller_scenario: &str, caller_extra: &[&str]) -> Bridged {
    let (caller_media, expert_media) = (media_socket(), media_socket());
    let expert = expert("expert_answers.xml", &port_of(&expert_media), &[]);
    let booking = book(daemon, &[caller_id(1)], None, &expert_uri(&expert));
    let caller = caller(
        daemon,
        caller_scenario,
        CALLER_PREFIX,
        &port_of(&caller_media),
        "0 96",
        caller_extra,
    );
    let caller_relay = wait_relay(&caller, "SIP/2.0 200 OK");
    let expert_relay = wait_relay(&expert, "INVITE sip:expert");
    Bridged {
        caller,
        expert,
        booking,
        caller_media,
        expert_media,
        caller_relay,
        expert_relay,
    }
}
