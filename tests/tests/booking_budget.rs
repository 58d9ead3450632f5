//! Paid time that spans calls, end to end: the real daemon, SIPp on both
//! sides, the Stripe fake as Stripe. The caller's leg drops at 30 s of a
//! 120 s budget; the caller calls back; the second call's cap (and its
//! card hold) is what remains, the daemon hangs up at it, the booking
//! completes at the budget, and each call is captured once, exactly.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tollbridge_e2e::stripe_fake::StripeFake;

/// ¥1,200 a minute: ¥20 a second.
const PRICE: i64 = 1200;
const BUDGET: i64 = 120;
/// Long enough for the 90 s second call and its set-up.
const LONG_CALL: Duration = Duration::from_secs(150);

fn start(fake: &StripeFake) -> Daemon {
    // SIPp sends no RTP: the media timeout must outlast the 90 s call.
    start_daemon_sections(
        "",
        "180s",
        &format!(
            "[stripe]\nsecret_key = \"sk_test_fake\"\napi_base = \"{}\"\nrequest_timeout = \"2s\"\n",
            fake.url()
        ),
    )
}

fn booking(daemon: &Daemon, id: &str) -> Value {
    let (status, body) = daemon.api("GET", &format!("/v1/bookings/{id}"), TOKEN, None);
    assert_eq!(status, 200, "{body}");
    body
}

/// The booking's calls, once every one has ended and settled.
fn settled_calls(daemon: &Daemon, booking: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = daemon.api("GET", &format!("/v1/calls?booking={booking}"), TOKEN, None);
        let calls = body["calls"].as_array().cloned().unwrap_or_default();
        let settled = calls.len() == count
            && calls.iter().all(|call| {
                !call["ended_at"].is_null()
                    && call["settlements"].as_array().is_some_and(|rows| {
                        rows.len() == 2 && rows.iter().all(|r| r["state"] == "succeeded")
                    })
            });
        if settled {
            return calls;
        }
        assert!(Instant::now() < deadline, "not settled: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_dropped_call_leaves_the_rest_of_the_budget_for_a_call_back() {
    let fake = StripeFake::start();
    let daemon = start(&fake);
    // One expert phone takes both calls.
    let expert = SippPeer::start(
        "expert_answers.xml",
        None,
        "expert",
        &[("rtp_port", "9".to_owned())],
        &["-m", "2"],
        LONG_CALL * 2,
    );
    let mut body = booking_json(&[caller_id(1)], &expert_uri(&expert), BUDGET as u32);
    body["tariff"]["price_per_minute"] = json!(PRICE);
    body["stripe"] = json!({"customer": "cus_test", "payment_method": "pm_card_visa"});
    let id = create_booking(&daemon, &body);

    // The caller's leg drops at 30 s.
    let first_caller = caller(
        &daemon,
        "caller_hangs_up.xml",
        CALLER_PREFIX,
        "9",
        "0 96",
        &["-d", "30000"],
    );
    assert_passed("first caller", first_caller);
    let first = &settled_calls(&daemon, &id, 1)[0];
    let used = first["billed_seconds"].as_i64().unwrap();
    assert!((30..=31).contains(&used), "{first}");
    assert_eq!(first["rating"]["cap_seconds"], BUDGET, "{first}");
    let between = booking(&daemon, &id);
    assert_eq!(between["state"], "active", "{between}");
    assert_eq!(between["used_seconds"], used);
    assert_eq!(between["remaining_seconds"], BUDGET - used);

    // The call back: its cap is what remains; the daemon ends it there.
    let second_caller = SippPeer::start(
        "caller_waits_bye.xml",
        daemon.sip_udp(),
        NUMBER,
        &[
            ("caller_prefix", CALLER_PREFIX.to_owned()),
            ("rtp_port", "9".to_owned()),
            ("formats", "0 96".to_owned()),
        ],
        &[],
        LONG_CALL,
    );
    for (name, peer) in [("second caller", second_caller), ("expert", expert)] {
        let run = peer.wait(LONG_CALL);
        assert!(
            run.passed(),
            "{name} failed:\n{}\ndaemon:\n{}",
            run.output,
            daemon.logs().join("\n")
        );
    }
    let calls = settled_calls(&daemon, &id, 2);
    let second = calls.iter().find(|c| c["id"] != first["id"]).unwrap();
    let remaining = BUDGET - used;
    assert_eq!(second["rating"]["cap_seconds"], remaining, "{second}");
    assert_eq!(second["end_reason"], "cap-reached", "{second}");
    assert_eq!(second["billed_seconds"], remaining, "{second}");
    let done = booking(&daemon, &id);
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["used_seconds"], BUDGET);
    assert_eq!(done["remaining_seconds"], 0);

    // Per call: one hold of the time it could use, one capture of exactly
    // its price.
    let intents = fake.intents();
    for (call, covered) in [(first, BUDGET), (second, remaining)] {
        let intent = intents
            .iter()
            .find(|i| i["id"] == call["payment_intent"])
            .unwrap_or_else(|| panic!("no hold for {call}"));
        assert_eq!(intent["amount"], covered * PRICE / 60, "{intent}");
        assert_eq!(
            intent["amount_received"],
            call["billed_seconds"].as_i64().unwrap() * PRICE / 60,
            "{intent}"
        );
        assert_eq!(call["amount"], intent["amount_received"]);
    }
    let captures = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/capture"))
        .count();
    assert_eq!(captures, 2, "one capture per call");

    // A third call finds nothing left to buy.
    let refused = caller(
        &daemon,
        "caller_refused.xml",
        CALLER_PREFIX,
        "9",
        "0 96",
        &[],
    );
    assert_passed("third caller", refused);
}
