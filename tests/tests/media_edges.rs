//! The odd peers of real life against the real daemon: a softphone behind
//! a NAT, an intruder on the media ports, offers we cannot honour, an
//! offer with two streams, and a drain that runs out with a call up.
//! SIPp plays the phones, the test's own sockets their media; all on
//! 127.0.0.1 (127.0.0.99 stands for a LAN address nothing listens on).

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

/// Sends `packet` from `from` to the relay and returns what `to` got.
fn crosses(from: &UdpSocket, relay: SocketAddr, packet: &[u8], to: &UdpSocket) -> bool {
    relay_one(from, relay, packet, to).is_some_and(|(got, _)| got == packet)
}

#[test]
fn a_softphone_whose_sdp_names_its_lan_address_is_heard_both_ways() {
    // Linphone behind a NAT: its SDP says 127.0.0.99:40000 (its "LAN"),
    // its packets come from the test's socket. Under the default policy
    // both parties hear each other; a stranger still gets nowhere.
    let daemon = start_daemon("ring_timeout = \"10s\"");
    let (caller_media, expert_media, stranger) = (media_socket(), media_socket(), media_socket());
    let expert = expert("expert_answers.xml", &port_of(&expert_media), &[]);
    let booking = book(&daemon, &[caller_id(1)], None, &expert_uri(&expert));
    let caller = SippPeer::start(
        "caller_sdp_address.xml",
        daemon.sip_udp(),
        NUMBER,
        &[
            ("caller_prefix", CALLER_PREFIX.into()),
            ("sdp_ip", "127.0.0.99".into()),
            ("sdp_port", "40000".into()),
        ],
        &["-d", "3000"],
        SIPP_LIMIT,
    );
    let caller_relay = wait_relay(&caller, "SIP/2.0 200 OK");
    let expert_relay = wait_relay(&expert, "INVITE sip:expert");
    for seq in 0..5u16 {
        let spoken = rtp(0, seq, 0x1111, &[0x11; 160]);
        assert!(
            crosses(&caller_media, caller_relay, &spoken, &expert_media),
            "the expert hears the NATed caller"
        );
        let answer = rtp(0, seq, 0x2222, &[0x22; 160]);
        assert!(
            crosses(&expert_media, expert_relay, &answer, &caller_media),
            "the NATed caller hears the expert"
        );
    }
    let intrusion = rtp(0, 77, 0x6666, &[0x66; 160]);
    assert!(!crosses(&stranger, caller_relay, &intrusion, &expert_media));
    assert_passed("caller", caller);
    assert_passed("expert", expert);
    let call = ended_call(&daemon, &booking);
    assert_eq!(call["end_reason"], "caller-hangup");
    assert_eq!(call["legs"]["caller"]["media"]["dropped_foreign"], 1);
}

#[test]
fn an_intruder_never_takes_a_leg_from_a_party_that_sends_from_its_sdp_address() {
    // The intruder is on the caller's own IP, on another port, and sends
    // first: under the old signalled-ip default it kept the leg for the
    // whole call. Now the caller's exact SDP address takes it back the
    // moment it sends, and keeps it, within the learning window and after.
    let daemon = start_daemon("ring_timeout = \"10s\"");
    let intruder = media_socket();
    let Bridged {
        caller,
        expert,
        booking,
        caller_media,
        expert_media,
        caller_relay,
        ..
    } = bridged(&daemon, "caller_hangs_up.xml", &["-d", "15000"]);
    let intrusion = |seq| rtp(0, seq, 0x6666, &[0x66; 160]);
    let spoken = |seq| rtp(0, seq, 0x1111, &[0x11; 160]);
    // First in: taken for now (it could be the party behind a NAT).
    intruder.send_to(&intrusion(0), caller_relay).unwrap();
    let mut drain = [0u8; 2048];
    let _ = expert_media.recv_from(&mut drain);
    let mut seq = 1;
    for round in 0..2 {
        for _ in 0..5 {
            assert!(
                crosses(&caller_media, caller_relay, &spoken(seq), &expert_media),
                "round {round}: the caller is heard"
            );
            assert!(
                !crosses(&intruder, caller_relay, &intrusion(seq), &expert_media),
                "round {round}: the intruder is heard"
            );
            seq += 1;
        }
        // Past the learning window, the leg stays locked to the caller.
        std::thread::sleep(Duration::from_millis(3200));
    }
    assert_passed("caller", caller);
    assert_passed("expert", expert);
    let call = ended_call(&daemon, &booking);
    assert_eq!(call["legs"]["caller"]["media"]["dropped_foreign"], 10);
}

#[test]
fn offers_we_cannot_honour_get_488_and_start_nothing() {
    let daemon = start_daemon("ring_timeout = \"10s\"");
    let expert = expert("expert_answers.xml", "40002", &[]);
    let _booking = book(&daemon, &[caller_id(1)], None, &expert_uri(&expert));
    let offers = [
        ("RTP/SAVP", "IN IP4 127.0.0.1"),
        ("UDP/TLS/RTP/SAVPF", "IN IP4 127.0.0.1"),
        ("RTP/AVP", "IN IP4 224.0.0.1"),
        ("RTP/AVP", "IN IP4 224.2.1.1/127"),
        ("RTP/AVP", "IN IP4 255.255.255.255"),
        ("RTP/AVP", "IN IP6 127.0.0.1"),
    ];
    for (proto, connection) in offers {
        let caller = SippPeer::start(
            "caller_offer_refused.xml",
            daemon.sip_udp(),
            NUMBER,
            &[
                ("caller_prefix", CALLER_PREFIX.into()),
                ("rtp_port", "40000".into()),
                ("proto", proto.into()),
                ("connection", connection.into()),
            ],
            &[],
            SIPP_LIMIT,
        );
        assert_passed(&format!("{proto} {connection} (488)"), caller);
    }
    // Nobody was dialled, nothing is held.
    assert!(!expert.messages().contains("INVITE sip:expert"));
    assert_no_ports_held(&daemon);
}

#[test]
fn an_offer_with_two_streams_gets_an_answer_with_both_the_extra_one_refused() {
    let daemon = start_daemon("ring_timeout = \"10s\"");
    let expert = expert("expert_answers.xml", "40002", &[]);
    let booking = book(&daemon, &[caller_id(1)], None, &expert_uri(&expert));
    let caller = caller(
        &daemon,
        "caller_two_streams.xml",
        CALLER_PREFIX,
        "40000",
        "0 96",
        &["-d", "500"],
    );
    assert_passed("caller (two m-lines answered in place)", caller);
    assert_passed("expert", expert);
    assert_eq!(ended_call(&daemon, &booking)["status"], "completed");
}

#[test]
fn when_the_drain_time_runs_out_a_call_hears_time_up_ends_drained_and_the_daemon_exits() {
    let mut daemon = start_daemon("ring_timeout = \"10s\"\ndrain_timeout = \"2s\"");
    let Bridged {
        caller,
        expert,
        booking,
        caller_media,
        caller_relay,
        ..
    } = bridged(&daemon, "caller_waits_bye.xml", &[]);
    // Talk, so the relay has both parties latched.
    for seq in 0..10u16 {
        caller_media
            .send_to(&rtp(0, seq, 0x1111, &[0x11; 160]), caller_relay)
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let record_before = ended_call_or_none(&daemon, &booking);
    assert!(record_before.is_none(), "the call is up");
    daemon.signal("TERM");
    // Both parties get BYE after the time-up prompt, and the daemon exits.
    assert_passed("caller (got BYE)", caller);
    assert_passed("expert (got BYE)", expert);
    let status = daemon
        .wait_exit(Duration::from_secs(30))
        .expect("the daemon exits after the drain");
    assert!(status.success(), "{status:?}");
    let logs = daemon.logs().join("\n");
    assert!(logs.contains("reason drained"), "{logs}");
    // The record, from the database the daemon left (a new run reads it).
    let daemon = daemon.crash_and_restart();
    let call = ended_call(&daemon, &booking);
    assert_eq!(
        (call["end_reason"].as_str(), call["status"].as_str()),
        (Some("drained"), Some("completed"))
    );
    let talk_ms = call["talk_ms"].as_i64().unwrap();
    assert!(talk_ms >= 2000, "talked to the drain's end: {talk_ms} ms");
    let details = details(&call);
    assert!(
        details
            .iter()
            .any(|d| d == "time-up played to both parties"),
        "{details:?}"
    );
}

/// The booking's first call if it has ended, else `None`.
fn ended_call_or_none(daemon: &Daemon, booking: &str) -> Option<Value> {
    let (_, body) = daemon.api("GET", &format!("/v1/calls?booking={booking}"), TOKEN, None);
    body["calls"]
        .as_array()
        .and_then(|c| c.first())
        .filter(|call| !call["ended_at"].is_null())
        .cloned()
}
