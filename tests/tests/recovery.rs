//! A crash with calls up, and the restart after it: the real daemon is
//! killed with SIGKILL while 50 bridged calls talk, and started again at
//! once on the same SIP port and media range. Every old party must get a
//! BYE from the new process, and no packet an old party goes on sending
//! may reach a new call's party. Everything on 127.0.0.1.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;

const OLD_CALLS: u32 = 50;
const NEW_CALLS: u32 = 50;
/// The first payload byte of every packet the old parties send.
const OLD_MARK: u8 = 0xee;

/// The calls on [`NUMBER`] in progress (answered, not ended).
fn talking_calls(daemon: &Daemon) -> Vec<Value> {
    let (_, body) = daemon.api(
        "GET",
        &format!("/v1/calls?called=%2B{}&limit=500", &NUMBER[1..]),
        TOKEN,
        None,
    );
    body["calls"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c["status"] == "in-progress" && c["ended_at"].is_null())
        .collect()
}

#[test]
fn after_a_crash_every_old_party_is_hung_up_and_no_old_packet_reaches_a_new_call() {
    let sip_port = tollbridge_e2e::free_port("127.0.0.1");
    // 400 ports: 100 pairs for the old calls, 100 for the new ones, and a
    // quarantine longer than the test so a released pair is never reused.
    let first = 20000 + (std::process::id() % 6) as u16 * 2000 + 1400;
    let config = test_config(
        &format!("api_token = \"{TOKEN}\""),
        &format!(
            "[media]\naddress = \"127.0.0.1\"\nports = \"{first}-{}\"\nport_quarantine = \"120s\"\n\n\
             [billing]\ncheckpoint_interval = \"500ms\"\n",
            first + 399
        ),
    )
    .replace(
        "listen = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]",
        &format!("listen = [\"udp:127.0.0.1:{sip_port}\"]"),
    );
    let daemon = Daemon::start(&config);
    assert!(daemon.wait_for_log("sip listening", Duration::from_secs(10)));

    // 50 calls, both parties SIPp, answered and waiting for our BYE.
    let old_expert = SippPeer::start(
        "expert_answers.xml",
        None,
        "expert",
        &[("rtp_port", "9".into())],
        &["-m", &OLD_CALLS.to_string()],
        Duration::from_secs(120),
    );
    for n in 1..=OLD_CALLS {
        book(&daemon, &[caller_id(n)], None, &expert_uri(&old_expert));
    }
    let old_callers = SippPeer::start(
        "caller_waits_bye.xml",
        daemon.sip_udp(),
        NUMBER,
        &[
            ("caller_prefix", CALLER_PREFIX.into()),
            ("rtp_port", "9".into()),
            ("formats", "0 96".into()),
        ],
        &[
            "-m",
            &OLD_CALLS.to_string(),
            "-l",
            &OLD_CALLS.to_string(),
            "-r",
            "25",
        ],
        Duration::from_secs(120),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let old = loop {
        let talking = talking_calls(&daemon);
        if talking.len() == OLD_CALLS as usize {
            break talking;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {OLD_CALLS} calls connected:\n{}",
            talking.len(),
            old_callers.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Each old party streams marked RTP to its relay port, from its own
    // socket, and goes on after the crash as a real phone would.
    let old_ports: Vec<u16> = old
        .iter()
        .flat_map(|call| {
            ["caller", "callee"]
                .map(|side| call["legs"][side]["relay_port"].as_u64().unwrap() as u16)
        })
        .collect();
    assert_eq!(old_ports.len(), 2 * OLD_CALLS as usize);
    let streaming = Arc::new(AtomicBool::new(true));
    let old_sent = Arc::new(AtomicU64::new(0));
    let old_parties = {
        let (streaming, old_sent) = (streaming.clone(), old_sent.clone());
        let sockets: Vec<(UdpSocket, SocketAddr)> = old_ports
            .iter()
            .map(|port| (media_socket(), SocketAddr::from(([127, 0, 0, 1], *port))))
            .collect();
        std::thread::spawn(move || {
            let mut seq = 0u16;
            while streaming.load(Ordering::Relaxed) {
                for (i, (socket, relay)) in sockets.iter().enumerate() {
                    let packet = rtp(0, seq, 0x0e00 + i as u32, &[OLD_MARK; 160]);
                    if socket.send_to(&packet, relay).is_ok() {
                        old_sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                seq = seq.wrapping_add(1);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1500));

    // The crash, and an immediate restart on the same ports.
    let daemon = daemon.crash_and_restart();
    assert!(daemon.wait_for_log("sip listening", Duration::from_secs(10)));

    // New calls on the same number and range, while the old parties send.
    let new_expert_media = media_socket();
    let new_caller_media = media_socket();
    let new_expert = SippPeer::start(
        "expert_answers.xml",
        None,
        "expert",
        &[("rtp_port", port_of(&new_expert_media))],
        &["-m", &NEW_CALLS.to_string()],
        Duration::from_secs(120),
    );
    // SIPp numbers its calls from 1 again: the new callers' IDs get a
    // prefix of their own.
    let new_prefix = format!("{CALLER_PREFIX}9");
    for n in 1..=NEW_CALLS {
        book(
            &daemon,
            &[format!("{new_prefix}{n}")],
            None,
            &expert_uri(&new_expert),
        );
    }
    let new_callers = SippPeer::start(
        "caller_hangs_up.xml",
        daemon.sip_udp(),
        NUMBER,
        &[
            ("caller_prefix", new_prefix),
            ("rtp_port", port_of(&new_caller_media)),
            ("formats", "0 96".into()),
        ],
        &[
            "-m",
            &NEW_CALLS.to_string(),
            "-l",
            &NEW_CALLS.to_string(),
            "-r",
            "25",
            "-d",
            "5000",
        ],
        Duration::from_secs(120),
    );
    // Whatever reaches a new party is counted; an old party's mark is a leak.
    let leaked = Arc::new(AtomicU64::new(0));
    let heard = Arc::new(AtomicU64::new(0));
    let listening = Arc::new(AtomicBool::new(true));
    let listener = {
        let socket = new_expert_media.try_clone().unwrap();
        let (listening, leaked, heard) = (listening.clone(), leaked.clone(), heard.clone());
        let caller_socket = new_caller_media.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 2048];
            while listening.load(Ordering::Relaxed) {
                for socket in [&socket, &caller_socket] {
                    socket
                        .set_read_timeout(Some(Duration::from_millis(10)))
                        .unwrap();
                    if let Ok((n, _)) = socket.recv_from(&mut buffer) {
                        if n > 12 && buffer[12] == OLD_MARK {
                            leaked.fetch_add(1, Ordering::Relaxed);
                        } else {
                            heard.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        })
    };
    let old_ids: Vec<String> = old
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let new = loop {
        let talking: Vec<Value> = talking_calls(&daemon)
            .into_iter()
            .filter(|c| !old_ids.iter().any(|id| c["id"] == id.as_str()))
            .collect();
        if talking.len() == NEW_CALLS as usize {
            break talking;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {NEW_CALLS} new calls connected:\n{}",
            talking.len(),
            new_callers.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Ports of the old calls a new call was given (there must be none).
    let reused: Vec<u16> = new
        .iter()
        .flat_map(|call| {
            ["caller", "callee"]
                .map(|side| call["legs"][side]["relay_port"].as_u64().unwrap() as u16)
        })
        .filter(|port| old_ports.contains(port))
        .collect();
    // The new callers talk to their experts through the relay.
    for seq in 0..10u16 {
        for call in &new {
            let relay = SocketAddr::from((
                [127, 0, 0, 1],
                call["legs"]["caller"]["relay_port"].as_u64().unwrap() as u16,
            ));
            new_caller_media
                .send_to(&rtp(0, seq, 0x5555, &[0x11; 160]), relay)
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_passed("the new callers", new_callers);
    assert_passed("the new experts", new_expert);
    listening.store(false, Ordering::Relaxed);
    listener.join().unwrap();
    assert!(
        heard.load(Ordering::Relaxed) >= u64::from(NEW_CALLS) * 5,
        "the new calls' own audio did not cross: {}",
        heard.load(Ordering::Relaxed)
    );
    assert_eq!(
        (leaked.load(Ordering::Relaxed), reused),
        (0, Vec::new()),
        "packets of old calls reached new calls' parties (and the old ports new calls got)"
    );
    // The old parties: every one got a BYE from the new process.
    assert_passed("the old callers (each got a BYE)", old_callers);
    assert_passed("the old experts (each got a BYE)", old_expert);
    streaming.store(false, Ordering::Relaxed);
    old_parties.join().unwrap();
    assert!(old_sent.load(Ordering::Relaxed) > 10_000);
    // Each old call is recovered, with both BYEs' outcomes on its record.
    for id in &old_ids {
        let (_, call) = daemon.api("GET", &format!("/v1/calls/{id}"), TOKEN, None);
        assert_eq!(call["end_reason"], "recovered", "{call}");
        let outcomes: Vec<String> = details(&call)
            .into_iter()
            .filter(|d| d.starts_with("after a restart: BYE"))
            .collect();
        assert_eq!(
            outcomes.len(),
            2,
            "both parties' BYE outcomes recorded: {call}"
        );
        assert!(
            outcomes.iter().all(|d| d.ends_with("answered 200")),
            "{outcomes:?}"
        );
    }
}
