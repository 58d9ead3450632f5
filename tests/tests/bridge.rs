//! Bridged calls end to end: the real daemon, SIPp as the caller (shaped
//! like Twilio's trunk) and as the expert, and the test's own UDP sockets
//! as both parties' media endpoints so every relayed packet can be counted
//! and compared. Everything runs on 127.0.0.1 with ephemeral ports.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[test]
fn audio_and_dtmf_cross_the_relay_and_the_callers_bye_ends_the_expert() {
    let daemon = start_daemon("ring_timeout = \"10s\"");
    let (caller_media, expert_media, stranger) = (media_socket(), media_socket(), media_socket());
    let expert = expert("expert_answers.xml", &port_of(&expert_media), &[]);
    let booking = book(&daemon, &[caller_id(1)], None, &expert_uri(&expert));
    let caller = caller(
        &daemon,
        "caller_hangs_up.xml",
        CALLER_PREFIX,
        &port_of(&caller_media),
        "0 8 96",
        &["-d", "3000"],
    );
    let expert_relay = wait_relay(&expert, "INVITE sip:expert");
    let caller_relay = wait_relay(&caller, "SIP/2.0 200 OK");
    assert_ne!(caller_relay, expert_relay);

    // Audio both ways, payloads intact, each party hearing only the relay.
    for seq in 0..50u16 {
        let to_expert = rtp(0, seq, 0x1111, &[seq as u8; 160]);
        let (got, source) = relay_one(&caller_media, caller_relay, &to_expert, &expert_media)
            .expect("caller audio reaches the expert");
        assert_eq!(got, to_expert);
        assert_eq!(
            source, expert_relay,
            "the expert hears the relay, not the caller"
        );
        let to_caller = rtp(0, seq, 0x2222, &[0xff - seq as u8; 160]);
        let (got, source) = relay_one(&expert_media, expert_relay, &to_caller, &caller_media)
            .expect("expert audio reaches the caller");
        assert_eq!(got, to_caller);
        assert_eq!(source, caller_relay);
    }
    // DTMF '5' from the caller on its payload type 96 reaches the expert on
    // the expert's 101, marker bit kept.
    for (i, end) in [(0u16, false), (1, true), (2, true), (3, true)] {
        let flags = if end { 0x8a } else { 0x0a };
        let event = rtp(
            if i == 0 { 0x80 | 96 } else { 96 },
            50 + i,
            0x1111,
            &[5, flags, 0x03, 0x20],
        );
        let (got, _) = relay_one(&caller_media, caller_relay, &event, &expert_media)
            .expect("DTMF reaches the expert");
        assert_eq!(
            got[1] & 0x7f,
            101,
            "the expert's telephone-event payload type"
        );
        assert_eq!(got[1] & 0x80, if i == 0 { 0x80 } else { 0 });
        assert_eq!(&got[12..], &event[12..]);
    }
    // Another source on the caller's IP, after latching: nothing bleeds through.
    let foreign = rtp(0, 500, 0x6666, &[0x42; 160]);
    assert_eq!(
        relay_one(&stranger, caller_relay, &foreign, &expert_media),
        None
    );

    assert_passed("caller", caller);
    assert_passed("expert", expert);
    let call = ended_call(&daemon, &booking);
    assert_eq!(call["status"], "completed");
    assert_eq!(call["end_reason"], "caller-hangup");
    assert_eq!(
        statuses(&call),
        ["queued", "initiated", "ringing", "in-progress", "completed"]
    );
    assert_eq!(call["events"][2]["sip_code"], 183);
    assert_eq!(call["caller"], caller_id(1));
    assert_eq!(call["twilio_call_sid"], "CA1");
    assert!(call["legs"]["callee"]["sip_call_id"].is_string());
    let talk = call["talk_ms"].as_i64().unwrap();
    assert!((2500..10_000).contains(&talk), "talk {talk} ms");
    let caller_leg = &call["legs"]["caller"]["media"];
    let expert_leg = &call["legs"]["callee"]["media"];
    assert_eq!(caller_leg["packets_received"], 54);
    assert_eq!(caller_leg["packets_sent"], 50);
    assert_eq!(caller_leg["dropped_foreign"], 1);
    assert_eq!(expert_leg["packets_received"], 50);
    assert_eq!(expert_leg["packets_sent"], 54);
    assert_eq!(caller_leg["packets_lost"], 0);
    // The call's billed seconds count against the booking's budget; the
    // rest is there for a call back.
    let (_, booking_now) = daemon.api("GET", &format!("/v1/bookings/{booking}"), TOKEN, None);
    assert_eq!(booking_now["state"], "active");
    assert_eq!(booking_now["used_seconds"], call["billed_seconds"]);
    assert_eq!(
        booking_now["remaining_seconds"].as_i64(),
        Some(600 - call["billed_seconds"].as_i64().unwrap())
    );
    assert_no_ports_held(&daemon);
}

#[test]
fn the_experts_bye_reaches_the_caller_through_its_route_set_and_sipp_echo_hears_the_caller() {
    let daemon = start_daemon("ring_timeout = \"10s\"");
    let caller_media = media_socket();
    let echo_port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let expert = expert(
        "expert_hangs_up.xml",
        &echo_port,
        &["-rtp_echo", "-mp", &echo_port, "-d", "2500"],
    );
    let booking = book(&daemon, &[caller_id(1)], None, &expert_uri(&expert));
    let caller = caller(
        &daemon,
        "caller_waits_bye.xml",
        CALLER_PREFIX,
        &port_of(&caller_media),
        "0 96",
        &[],
    );
    let caller_relay = wait_relay(&caller, "SIP/2.0 200 OK");
    // SIPp echoes what it hears: the caller's audio goes out through the
    // relay to SIPp and comes back the same way.
    let mut echoed = 0;
    for seq in 0..20u16 {
        let packet = rtp(0, seq, 0x3333, &[seq as u8; 160]);
        if let Some((got, source)) = relay_one(&caller_media, caller_relay, &packet, &caller_media)
        {
            assert_eq!(got, packet);
            assert_eq!(source, caller_relay);
            echoed += 1;
        }
    }
    assert!(
        echoed >= 18,
        "only {echoed} of 20 packets came back through SIPp's echo"
    );
    assert_passed("caller (BYE with Route)", caller);
    assert_passed("expert", expert);
    let call = ended_call(&daemon, &booking);
    assert_eq!(call["end_reason"], "callee-hangup");
    assert_eq!(call["status"], "completed");
    assert_no_ports_held(&daemon);
}

/// An expert behind a PBX that answers our INVITE with a 401 digest
/// challenge: the `[[callee]]` credentials for its host answer it (SIPp
/// verifies the digest), the call connects and ends when the expert hangs
/// up. With a wrong password the PBX refuses the retry, SIPp's check
/// fails, and the call is recorded failed.
#[test]
fn an_experts_pbx_that_challenges_gets_the_credentials_for_its_host() {
    for (password, connects) in [("pbx-secret", true), ("not-the-secret", false)] {
        let caller_media = media_socket();
        let expert = expert(
            "expert_challenges.xml",
            &port_of(&media_socket()),
            &["-d", "1000"],
        );
        let daemon = start_daemon_sections(
            "ring_timeout = \"10s\"",
            "30s",
            &format!(
                "[[callee]]\nhost = \"{}\"\nusername = \"tollbridge\"\npassword = \"{password}\"\n",
                expert.addr
            ),
        );
        let booking = book(&daemon, &[caller_id(1)], None, &expert_uri(&expert));
        if connects {
            let caller = caller(
                &daemon,
                "caller_waits_bye.xml",
                CALLER_PREFIX,
                &port_of(&caller_media),
                "0 96",
                &[],
            );
            assert_passed("caller (BYE from the expert)", caller);
            assert_passed("expert (verified our digest)", expert);
            let call = ended_call(&daemon, &booking);
            assert_eq!(call["status"], "completed", "{call}");
            assert_eq!(call["end_reason"], "callee-hangup");
        } else {
            let caller = SippPeer::start(
                "caller_refused.xml",
                daemon.sip_udp(),
                NUMBER,
                &[
                    ("caller_prefix", CALLER_PREFIX.into()),
                    ("rtp_port", port_of(&caller_media)),
                    ("formats", "0 96".into()),
                ],
                &[],
                SIPP_LIMIT,
            );
            let refused = caller.wait(Duration::from_secs(20));
            let run = expert.wait(Duration::from_secs(5));
            assert!(
                !run.passed(),
                "the PBX took a wrong digest:\n{}",
                run.output
            );
            assert!(run.output.contains("403 Forbidden"), "{}", run.output);
            let call = ended_call(&daemon, &booking);
            assert_eq!(
                call["status"], "failed",
                "{call}\ncaller:\n{}",
                refused.output
            );
        }
    }
}

/// Runs a caller scenario that expects a refusal and returns the code it got.
fn refused_code(daemon: &Daemon, formats: &str, service: &str) -> u16 {
    refused_code_from(daemon, CALLER_PREFIX, formats, service)
}

/// [`refused_code`] for callers with another prefix.
fn refused_code_from(daemon: &Daemon, caller_prefix: &str, formats: &str, service: &str) -> u16 {
    let caller = SippPeer::start(
        "caller_refused.xml",
        daemon.sip_udp(),
        service,
        &[
            ("caller_prefix", caller_prefix.into()),
            ("rtp_port", "40000".into()),
            ("formats", formats.into()),
        ],
        &[],
        SIPP_LIMIT,
    );
    let output = assert_passed("caller", caller);
    [404u16, 486, 488, 603]
        .into_iter()
        .find(|code| output.contains(&format!("SIP/2.0 {code} ")))
        .unwrap_or_else(|| panic!("no refusal code in:\n{output}"))
}

#[test]
fn a_busy_expert_gives_the_caller_486() {
    let daemon = start_daemon("ring_timeout = \"10s\"");
    let expert = expert("expert_busy.xml", "40002", &[]);
    let booking = book(&daemon, &[caller_id(1)], None, &expert_uri(&expert));
    assert_eq!(refused_code(&daemon, "0 8 96", NUMBER), 486);
    assert_passed("expert", expert);
    let call = ended_call(&daemon, &booking);
    assert_eq!(call["status"], "busy");
    assert_eq!(call["end_reason"], "callee-busy");
    assert_eq!(statuses(&call), ["queued", "initiated", "busy"]);
    // A call that never connected gives the booking back.
    let (_, booking_now) = daemon.api("GET", &format!("/v1/bookings/{booking}"), TOKEN, None);
    assert_eq!(booking_now["state"], "active");
    assert_no_ports_held(&daemon);
}

#[test]
fn a_trunk_refusal_with_a_twilio_error_is_recorded_and_counted_for_the_operator() {
    let daemon = start_daemon("ring_timeout = \"10s\"");
    let expert = expert("expert_account_inactive.xml", "40002", &[]);
    let booking = book(&daemon, &[caller_id(1)], None, &expert_uri(&expert));
    assert_eq!(refused_code(&daemon, "0 8 96", NUMBER), 603);
    assert_passed("expert", expert);
    let call = ended_call(&daemon, &booking);
    assert_eq!(
        (call["status"].as_str(), call["end_reason"].as_str()),
        (Some("failed"), Some("callee-rejected"))
    );
    let last = call["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["sip_code"].as_u64(), last["detail"].as_str()),
        (
            Some(603),
            Some("the callee answered 603 (Twilio error 10001)")
        ),
        "{call}"
    );
    let (_, metrics) = daemon.get("/metrics", None);
    let line = "tollbridge_callee_refusals_total{code=\"603\",twilio_error=\"10001\"} 1";
    assert!(metrics.contains(line), "missing {line} in\n{metrics}");
}

#[test]
fn an_expert_who_never_answers_gives_the_caller_603_after_the_ring_timeout() {
    let daemon = start_daemon("ring_timeout = \"2s\"");
    let expert = expert("expert_rings.xml", "40002", &[]);
    let booking = book(&daemon, &[caller_id(1)], None, &expert_uri(&expert));
    let started = Instant::now();
    assert_eq!(refused_code(&daemon, "0 8 96", NUMBER), 603);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1900),
        "refused after {waited:?}, before the ring timeout"
    );
    assert_passed("expert (got CANCEL)", expert);
    let call = ended_call(&daemon, &booking);
    assert_eq!(call["status"], "no-answer");
    assert_eq!(
        statuses(&call),
        ["queued", "initiated", "ringing", "no-answer"]
    );
    assert_no_ports_held(&daemon);
}

#[test]
fn cancel_while_ringing_cancels_the_expert() {
    let daemon = start_daemon("ring_timeout = \"10s\"");
    let expert = expert("expert_rings.xml", "40002", &[]);
    let booking = book(&daemon, &[caller_id(1)], None, &expert_uri(&expert));
    let caller = caller(
        &daemon,
        "caller_cancels.xml",
        CALLER_PREFIX,
        "40000",
        "0 96",
        &[],
    );
    assert_passed("caller", caller);
    assert_passed("expert (got CANCEL)", expert);
    let call = ended_call(&daemon, &booking);
    assert_eq!(call["status"], "canceled");
    assert_eq!(call["end_reason"], "caller-cancel");
    assert_no_ports_held(&daemon);
}

#[test]
fn refusals_before_any_dialling_use_non_failover_codes() {
    let daemon = start_daemon("");
    // Nothing booked on the number: 404.
    assert_eq!(refused_code(&daemon, "0 8 96", "+81599999999"), 404);
    // No common codec (G.729 only): 488 before routing, so the booking is
    // neither claimed nor dialled.
    let booking = book(&daemon, &[caller_id(1)], None, "sip:nobody@127.0.0.1:9");
    assert_eq!(refused_code(&daemon, "18 96", NUMBER), 488);
    let (_, booking_now) = daemon.api("GET", &format!("/v1/bookings/{booking}"), TOKEN, None);
    assert_eq!(booking_now["state"], "active");
    // A booked number, a stranger's phone, no PIN to ask for: 603.
    assert_eq!(refused_code_from(&daemon, "+1555000", "0 96", NUMBER), 603);
    let (_, metrics) = daemon.get("/metrics", None);
    assert!(
        metrics.contains("tollbridge_calls_total{status=\"failed\"} 3"),
        "{metrics}"
    );
    assert_no_ports_held(&daemon);
}

#[test]
fn a_hold_reinvite_round_trip_is_answered_by_the_relay() {
    let daemon = start_daemon("ring_timeout = \"10s\"");
    let expert = expert("expert_answers.xml", "40002", &[]);
    let booking = book(&daemon, &[caller_id(1)], None, &expert_uri(&expert));
    let caller = caller(
        &daemon,
        "caller_hold.xml",
        CALLER_PREFIX,
        "40000",
        "0 96",
        &["-d", "300"],
    );
    assert_passed("caller (hold answered recvonly, unhold sendrecv)", caller);
    assert_passed("expert", expert);
    let call = ended_call(&daemon, &booking);
    let details = event_details(&call);
    assert!(
        details.contains(&"caller re-INVITE: SendOnly"),
        "{details:?}"
    );
    assert!(
        details.contains(&"caller re-INVITE: SendRecv"),
        "{details:?}"
    );
    assert_eq!(call["status"], "completed");
}

#[test]
fn a_pin_entered_by_dtmf_selects_the_right_booking() {
    let daemon = start_daemon("ring_timeout = \"10s\"");
    let (caller_media, expert_media) = (media_socket(), media_socket());
    let expert = expert("expert_answers.xml", &port_of(&expert_media), &[]);
    // Two PIN bookings on the number; the caller's phone is in neither.
    let other = book(
        &daemon,
        &["+15550000001".into()],
        Some("1357"),
        "sip:nobody@127.0.0.1:9",
    );
    let mine = book(&daemon, &[], Some("2468"), &expert_uri(&expert));
    let caller = caller(
        &daemon,
        "caller_hangs_up.xml",
        CALLER_PREFIX,
        &port_of(&caller_media),
        "0 96",
        &["-d", "5000"],
    );
    // Tollbridge answers to collect the PIN.
    let caller_relay = wait_relay(&caller, "SIP/2.0 200 OK");
    let mut seq = 0u16;
    for (n, key) in [2u8, 4, 6, 8, 11].into_iter().enumerate() {
        for end in [false, true, true, true] {
            let flags = if end { 0x8a } else { 0x0a };
            let mut packet = rtp(96, seq, 0x7777, &[key, flags, 0x03, 0x20]);
            // One RTP timestamp per key press.
            packet[4..8].copy_from_slice(&(n as u32 * 8000).to_be_bytes());
            caller_media.send_to(&packet, caller_relay).unwrap();
            seq += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The right expert is dialled and answers. The '#' that ended the PIN
    // is ours: its late end packets (same RTP timestamp) never reach the
    // expert, who could read them as a key press.
    let expert_relay = wait_relay(&expert, "INVITE sip:expert");
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        let mut late_end = rtp(96, seq, 0x7777, &[11, 0x8a, 0x03, 0x20]);
        late_end[4..8].copy_from_slice(&(4 * 8000u32).to_be_bytes());
        assert_eq!(
            relay_one(&caller_media, caller_relay, &late_end, &expert_media),
            None,
            "a packet of the PIN's '#' reached the expert"
        );
        seq += 1;
    }
    let packet = rtp(0, 900, 0x7777, &[0x11; 160]);
    let (got, _) = relay_one(&caller_media, caller_relay, &packet, &expert_media)
        .expect("audio after the PIN");
    assert_eq!(got, packet);
    let _ = expert_relay;
    assert_passed("caller", caller);
    assert_passed("expert", expert);
    let call = ended_call(&daemon, &mine);
    assert_eq!(call["booking"], mine.as_str());
    assert_eq!(call["status"], "completed");
    let (_, others) = daemon.api("GET", &format!("/v1/calls?booking={other}"), TOKEN, None);
    assert_eq!(others["calls"].as_array().unwrap().len(), 0);
    assert_no_ports_held(&daemon);
}

#[test]
fn two_hundred_calls_with_mixed_endings_leave_no_relay_port_allocated() {
    let daemon = start_daemon("ring_timeout = \"10s\"");
    let rounds: [(&str, &str, u32); 3] = [
        ("expert_answers.xml", "caller_hangs_up.xml", 100),
        ("expert_busy.xml", "caller_refused.xml", 50),
        ("expert_rings.xml", "caller_cancels.xml", 50),
    ];
    let mut total = 0;
    for (expert_scenario, caller_scenario, calls) in rounds {
        let expert = expert(expert_scenario, "40002", &["-m", &calls.to_string()]);
        let prefix = format!("{CALLER_PREFIX}{total:03}");
        for n in 1..=calls {
            book(
                &daemon,
                &[format!("{prefix}{n}")],
                None,
                &expert_uri(&expert),
            );
        }
        let caller = caller(
            &daemon,
            caller_scenario,
            &prefix,
            "40000",
            "0 96",
            // At most 20 calls up (40 port pairs) and 20 ended a second
            // (40 pairs in their 1 s quarantine): 80 of the range's 100
            // pairs, however slow a loaded machine makes each call.
            &[
                "-m",
                &calls.to_string(),
                "-r",
                "20",
                "-l",
                "20",
                "-d",
                "200",
            ],
        );
        assert_passed(caller_scenario, caller);
        assert_passed(expert_scenario, expert);
        total += calls;
    }
    assert_eq!(total, 200);
    assert_no_ports_held(&daemon);
    let (_, metrics) = daemon.get("/metrics", None);
    for (status, count) in [("completed", 100), ("busy", 50), ("canceled", 50)] {
        let line = format!("tollbridge_calls_total{{status=\"{status}\"}} {count}");
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }
}

#[test]
fn the_two_minute_example_in_the_readme_makes_a_call() {
    let daemon = start_daemon("ring_timeout = \"10s\"");
    let free = || {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string()
    };
    let (expert_media, caller_media) = (free(), free());
    let expert = SippPeer::start(
        "../../examples/sipp/expert.xml",
        None,
        "expert",
        &[],
        &["-mp", &expert_media, "-rtp_echo"],
        SIPP_LIMIT,
    );
    // The README's booking, with the example's numbers.
    let booking = {
        let mut booking = booking_json(&["+819012345678".to_owned()], &expert_uri(&expert), 600);
        booking["called"] = json!("+815012345678");
        create_booking(&daemon, &booking)
    };
    let caller = SippPeer::start(
        "../../examples/sipp/caller.xml",
        daemon.sip_udp(),
        "+815012345678",
        &[],
        &["-mp", &caller_media],
        SIPP_LIMIT,
    );
    assert_passed("example caller", caller);
    assert_passed("example expert", expert);
    let call = ended_call(&daemon, &booking);
    assert_eq!(call["status"], "completed");
    // SIPp's DTMF pcap went through the relay to the expert and back.
    let sent_to_expert = call["legs"]["callee"]["media"]["packets_sent"]
        .as_i64()
        .unwrap();
    assert!(sent_to_expert > 0, "{call}");
    assert_eq!(
        call["legs"]["caller"]["media"]["packets_sent"],
        call["legs"]["callee"]["media"]["packets_received"]
    );
}

#[test]
fn a_party_that_vanishes_is_billed_to_its_last_packet_and_both_are_hung_up() {
    let daemon = start_daemon_with("ring_timeout = \"10s\"", "2s");
    let Bridged {
        caller,
        expert,
        booking,
        caller_media,
        expert_media,
        caller_relay,
        expert_relay,
    } = bridged(&daemon, "caller_waits_bye.xml", &[]);
    // Both talk for 1.5 s; then the caller vanishes (no RTP, no BYE)
    // while the expert goes on talking into the void.
    let talking = Instant::now();
    let mut seq = 0u16;
    while talking.elapsed() < Duration::from_millis(1500) {
        caller_media
            .send_to(&rtp(0, seq, 0x1111, &[0; 160]), caller_relay)
            .unwrap();
        expert_media
            .send_to(&rtp(0, seq, 0x2222, &[0; 160]), expert_relay)
            .unwrap();
        seq = seq.wrapping_add(1);
        std::thread::sleep(Duration::from_millis(20));
    }
    let expert_talks_on = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(6);
        while Instant::now() < until {
            let _ = expert_media.send_to(&rtp(0, seq, 0x2222, &[0; 160]), expert_relay);
            seq = seq.wrapping_add(1);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    // media.timeout (2 s) later both get BYE.
    assert_passed("caller (got BYE)", caller);
    assert_passed("expert (got BYE)", expert);
    let call = ended_call(&daemon, &booking);
    assert_eq!(call["end_reason"], "media-timeout");
    assert_eq!(call["status"], "completed");
    // Billed to the caller's last packet, not to the timeout 2 s later.
    let talk = call["talk_ms"].as_i64().unwrap();
    assert!(
        (1400..2400).contains(&talk),
        "billed {talk} ms for 1.5 s of talk and 2 s of silence"
    );
    let detail = details(&call).pop().unwrap_or_default();
    assert!(
        detail.contains("no RTP from the caller") && detail.contains("billed to its last packet"),
        "{detail}"
    );
    expert_talks_on.join().unwrap();
    assert_no_ports_held(&daemon);
}

#[test]
fn in_dialog_requests_keep_the_remote_targets_uri_parameters() {
    // Both parties' Contacts carry `;transport=udp;x-tb=1`; the cap ends
    // the call, so we send the expert an ACK and a BYE and the caller a
    // BYE. Each scenario checks its Request-URI is that Contact exactly.
    let daemon = start_daemon("ring_timeout = \"10s\"");
    let (caller_media, expert_media) = (media_socket(), media_socket());
    let expert = expert(
        "expert_answers_uri_params.xml",
        &port_of(&expert_media),
        &[],
    );
    let booking = book_capped(&daemon, &[caller_id(1)], None, &expert_uri(&expert), 2);
    let caller = caller(
        &daemon,
        "caller_waits_bye_uri_params.xml",
        CALLER_PREFIX,
        &port_of(&caller_media),
        "0 96",
        &[],
    );
    assert_passed("the caller", caller);
    assert_passed("the expert", expert);
    let call = ended_call(&daemon, &booking);
    assert_eq!(call["end_reason"], "cap-reached", "{call}");
}

#[test]
fn a_failed_pin_is_found_by_the_number_dialled_with_every_booking_it_could_have_been() {
    let daemon = start_daemon("ring_timeout = \"10s\"");
    let caller_media = media_socket();
    let first = book(&daemon, &[], Some("1357"), "sip:nobody@127.0.0.1:9");
    let second = book(&daemon, &[], Some("2468"), "sip:nobody@127.0.0.1:9");
    let caller = caller(
        &daemon,
        "caller_waits_bye.xml",
        CALLER_PREFIX,
        &port_of(&caller_media),
        "0 96",
        &[],
    );
    let caller_relay = wait_relay(&caller, "SIP/2.0 200 OK");
    // Three wrong PINs; then the farewell prompt and our BYE.
    let mut seq = 0u16;
    for attempt in 0..3u32 {
        for (n, key) in [9u8, 9, 9, 9, 11].into_iter().enumerate() {
            for end in [false, true, true, true] {
                let flags = if end { 0x8a } else { 0x0a };
                let mut packet = rtp(96, seq, 0x7777, &[key, flags, 0x03, 0x20]);
                let timestamp = (attempt * 10 + n as u32) * 8000;
                packet[4..8].copy_from_slice(&timestamp.to_be_bytes());
                caller_media.send_to(&packet, caller_relay).unwrap();
                seq += 1;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(1500));
    }
    assert_passed("caller (got BYE)", caller);
    let deadline = Instant::now() + Duration::from_secs(15);
    let call = loop {
        let (status, body) = daemon.api(
            "GET",
            &format!("/v1/calls?called=%2B{}", &NUMBER[1..]),
            TOKEN,
            None,
        );
        assert_eq!(status, 200, "{body}");
        if let Some(call) = body["calls"].as_array().and_then(|c| c.first())
            && !call["ended_at"].is_null()
        {
            break call.clone();
        }
        assert!(Instant::now() < deadline, "no ended call: {body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(call["end_reason"], "pin-failed", "{call}");
    assert_eq!(call["called"], NUMBER);
    assert!(call["booking"].is_null());
    let mut candidates: Vec<&str> = call["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    candidates.sort_unstable();
    let mut expected = [first.as_str(), second.as_str()];
    expected.sort_unstable();
    assert_eq!(candidates, expected);
    assert_no_ports_held(&daemon);
}
