//! SRTP end to end: the real daemon between PJSIP phones (pjsua2, whose
//! SRTP is libsrtp2) that speak SDES-SRTP, and SIPp where a plain peer is
//! wanted. A call over TLS with SRTP on both legs carries each party's
//! tone to the other and the prompts to both, each leg with its own keys,
//! and forged packets sent to the relay's port in the middle of it are
//! dropped and counted; an SRTP caller is bridged to a plain callee; a
//! plain offer to a trunk that requires SRTP gets 488 and the record says
//! why.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::pjsua2::{Pjsua2, Setup};
use common::*;
use tollbridge_e2e::tls::TestCa;

/// The caller's and the callee's tones: each side checks it heard the
/// other's, not its own or noise.
const CALLER_HZ: f64 = 440.0;
const CALLEE_HZ: f64 = 1_000.0;

/// A daemon with a TLS listener whose `[[callee]]` at `localhost` must be
/// reached with SRTP (`callee_srtp`), with `more` config sections.
fn daemon(ca: &TestCa, callee_srtp: &str, more: &str) -> Daemon {
    let ours = ca.issue("daemon", &["localhost", "127.0.0.1"]);
    start_tls_daemon(
        ca,
        &ours,
        &format!("[[callee]]\nhost = \"localhost\"\nsrtp = \"{callee_srtp}\"\n\n{more}"),
    )
}

/// Checks that `phone` heard the other party's tone at `hz` and, at the
/// cap, the time-up prompt: loud windows that are not that tone.
fn heard_tone_and_prompt(who: &str, phone: &Pjsua2, hz: f64) {
    let heard = phone.heard();
    let (loud, tone) = heard.loud_and_tone(hz);
    assert!(
        tone >= 10,
        "{who} heard the other's {hz} Hz tone: {tone} of {loud} loud 100 ms windows"
    );
    assert!(
        loud - tone >= 5,
        "{who} heard the prompt: {} loud windows are not the tone",
        loud - tone
    );
}

/// Forged packets sent to the caller's relay port of the call in
/// progress on `booking`, once it is answered: RTP headers, a payload and
/// a tag of junk, as an attacker on the path would send.
const FORGED: u64 = 7;

fn forge_into_the_call(daemon: &Daemon, booking: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let port = loop {
        let (_, body) = daemon.api("GET", &format!("/v1/calls?booking={booking}"), TOKEN, None);
        let call = &body["calls"][0];
        if call["status"] == "in-progress"
            && let Some(port) = call["legs"]["caller"]["relay_port"].as_u64()
        {
            break port;
        }
        assert!(
            Instant::now() < deadline,
            "the call was never answered: {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for n in 0..FORGED {
        let mut packet = vec![0x80, 0, 0, n as u8, 0, 0, 0, 160, 0xde, 0xad, 0xbe, 0xef];
        packet.extend(std::iter::repeat_n(0x5a, 170));
        socket.send_to(&packet, ("127.0.0.1", port as u16)).unwrap();
    }
}

/// Waits for both phones: the call on `booking` was answered and ended at
/// its 5 s cap, and each heard the other's tone and the time-up prompt.
/// The call's record.
fn talked_to_the_cap(
    daemon: &Daemon,
    booking: &str,
    caller: &mut Pjsua2,
    expert: &mut Pjsua2,
) -> Value {
    assert!(
        caller.answered_and_ended(),
        "the caller's call was answered and ended: {}\n{:?}",
        caller.log_tail(),
        daemon.logs()
    );
    assert!(
        expert.answered_and_ended(),
        "the expert answered and was hung up: {}",
        expert.log_tail()
    );
    let call = ended_call(daemon, booking);
    assert_eq!(call["end_reason"], "cap-reached", "{call}");
    assert_eq!(call["talk_ms"], 5_000);
    heard_tone_and_prompt("the caller", caller, CALLEE_HZ);
    heard_tone_and_prompt("the expert", expert, CALLER_HZ);
    call
}

/// The media counters of `call`'s leg `side` (`caller` or `callee`).
fn media(call: &Value, side: &str) -> Value {
    call["legs"][side]["media"].clone()
}

#[test]
fn a_tls_call_with_srtp_on_both_legs_carries_both_tones_and_the_prompts_and_drops_forgeries() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let daemon = daemon(&ca, "required", "");
    let tls = daemon.sip_tls().unwrap();
    let expert_cert = ca.issue("expert", &["localhost"]);
    let mut expert = Pjsua2::start(
        dir.path(),
        Setup {
            registrar: "-".into(),
            user: "expert",
            tls: Some((&ca, Some(&expert_cert))),
            srtp: "mandatory",
            call: None,
            tone_hz: CALLEE_HZ,
        },
    );
    let uri = format!("sip:expert@localhost:{};transport=tls", expert.port);
    let booking = create_booking(&daemon, &booking_json(&[caller_id(1)], &uri, 5));
    let mut caller = Pjsua2::start(
        dir.path(),
        Setup {
            registrar: "-".into(),
            user: &caller_id(1),
            tls: Some((&ca, None)),
            srtp: "mandatory",
            call: Some(format!(
                "sip:{NUMBER}@127.0.0.1:{};transport=tls",
                tls.port()
            )),
            tone_hz: CALLER_HZ,
        },
    );
    forge_into_the_call(&daemon, &booking);
    let call = talked_to_the_cap(&daemon, &booking, &mut caller, &mut expert);
    for (leg, forged) in [("caller", FORGED), ("callee", 0)] {
        let counters = media(&call, leg);
        assert!(
            counters["packets_received"].as_i64().unwrap() > 150,
            "{leg}: {counters}"
        );
        assert_eq!(counters["srtp_refused"], forged, "{leg}: {counters}");
    }
    let logs = daemon.logs().join("\n");
    for side in ["caller", "callee"] {
        assert!(
            logs.contains(&format!(
                "\"side\":\"{side}\",\"suite\":\"AES_CM_128_HMAC_SHA1_80\""
            )),
            "the {side}'s leg is SRTP"
        );
    }
    assert!(!logs.contains("inline:"), "no SDES key in the log");
}

#[test]
fn an_srtp_caller_is_bridged_to_a_plain_callee() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let daemon = daemon(&ca, "off", "");
    let udp = daemon.sip_udp().unwrap();
    let mut expert = Pjsua2::start(
        dir.path(),
        Setup {
            registrar: "-".into(),
            user: "plain",
            tls: None,
            srtp: "off",
            call: None,
            tone_hz: CALLEE_HZ,
        },
    );
    let uri = format!("sip:plain@127.0.0.1:{}", expert.port);
    let booking = create_booking(&daemon, &booking_json(&[caller_id(1)], &uri, 5));
    let mut caller = Pjsua2::start(
        dir.path(),
        Setup {
            registrar: "-".into(),
            user: &caller_id(1),
            tls: None,
            srtp: "mandatory",
            call: Some(format!("sip:{NUMBER}@{udp}")),
            tone_hz: CALLER_HZ,
        },
    );
    talked_to_the_cap(&daemon, &booking, &mut caller, &mut expert);
    let logs = daemon.logs().join("\n");
    assert!(logs.contains("\"side\":\"caller\",\"suite\":\"AES_CM_128_HMAC_SHA1_80\""));
    assert!(
        !logs.contains("\"side\":\"callee\",\"suite\""),
        "the callee's leg is plain"
    );
}

#[test]
fn a_plain_offer_to_a_trunk_that_requires_srtp_gets_488() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let daemon = daemon(
        &ca,
        "optional",
        "[[trunk]]\nname = \"secure\"\nprofile = \"none\"\nallow = [\"127.0.0.0/8\"]\nsrtp = \"required\"\n",
    );
    create_booking(
        &daemon,
        &booking_json(&[caller_id(1)], "sip:unused@127.0.0.1", 60),
    );
    let refused = SippPeer::start(
        "caller_offer_refused.xml",
        daemon.sip_udp(),
        NUMBER,
        &[
            ("caller_prefix", CALLER_PREFIX.into()),
            ("rtp_port", "40000".into()),
            ("proto", "RTP/AVP".into()),
            ("connection", "IN IP4 127.0.0.1".into()),
        ],
        &[],
        SIPP_LIMIT,
    );
    assert_passed("caller (488)", refused);
    // Refused before routing: the record has no booking.
    let (status, calls) = daemon.api("GET", "/v1/calls?called=%2B81500000001", TOKEN, None);
    assert_eq!(status, 200);
    let call = &calls["calls"][0];
    assert_eq!(call["end_reason"], "offer-not-acceptable", "{calls}");
    assert!(
        call.to_string().contains("SRTP is required for this leg"),
        "the record says why: {call}"
    );
}
