//! Settlement end to end: the real daemon, SIPp on both sides, and the
//! Stripe fake as Stripe. One hold before the bridge, one capture of
//! exactly the rated amount after it, whatever faults Stripe (the fake)
//! throws in, and across a daemon killed mid-request.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::stripe::*;
use common::*;
use tollbridge_e2e::stripe_fake::{Endpoint, Fault, StripeFake};

/// The settlement of one call: its hold, and one capture of exactly the
/// rated amount; no request ever drew an idempotency error.
fn assert_settled_once(fake: &StripeFake, call: &Value) {
    let amount = call["amount"].as_i64().unwrap();
    let intent_id = call["payment_intent"]
        .as_str()
        .expect("the call has a hold");
    let intent = fake
        .intents()
        .into_iter()
        .find(|i| i["id"] == intent_id)
        .unwrap();
    assert_eq!(intent["status"], "succeeded", "{intent}");
    assert_eq!(
        intent["amount_received"], amount,
        "captured exactly the rated amount"
    );
    assert_eq!(call["charged"], amount, "the record says what was charged");
    let rows = call["settlements"].as_array().unwrap();
    let operations: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["operation"].as_str().unwrap(),
                r["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        operations,
        [("authorize", "succeeded"), ("capture", "succeeded")],
        "{rows:?}"
    );
    let capture_key = format!("tb:call:{}:capture:v1", call["id"].as_str().unwrap());
    assert_eq!(rows[1]["idempotency_key"], capture_key.as_str());
    let requests = fake.requests();
    assert!(
        requests.iter().all(|r| r.status != 400),
        "an idempotency (or other 400) error: {:?}",
        requests
            .iter()
            .filter(|r| r.status == 400)
            .collect::<Vec<_>>()
    );
    // Every capture request for it used its one key and one amount.
    for capture in posts(&requests, &format!("{intent_id}/capture")) {
        assert_eq!(
            capture.idempotency_key.as_deref(),
            Some(capture_key.as_str())
        );
        assert_eq!(
            param(capture, "amount_to_capture"),
            Some(amount.to_string().as_str())
        );
    }
}

#[test]
fn a_call_is_held_before_the_bridge_and_captured_once_after_it() {
    let fake = StripeFake::start();
    let daemon = start(&fake);
    let expert = expert("expert_answers.xml", "40002", &[]);
    let booking = book_with_card(&daemon, &caller_id(1), "pm_card_visa", &expert_uri(&expert));
    call_and_hang_up(&daemon, CALLER_PREFIX, 1, 3000);
    assert_passed("expert", expert);
    let calls = settled_calls(&daemon, &booking);
    let call = &calls[0];
    assert_eq!(call["status"], "completed");
    assert_settled_once(&fake, call);
    let requests = fake.requests();
    let holds = posts(&requests, "/v1/payment_intents");
    assert_eq!(holds.len(), 1, "one hold");
    let hold = holds[0];
    for (name, value) in [
        ("amount", "12000"),
        ("currency", "jpy"),
        ("capture_method", "manual"),
        ("confirm", "true"),
        ("off_session", "true"),
        ("error_on_requires_action", "true"),
        ("automatic_payment_methods[enabled]", "true"),
        ("automatic_payment_methods[allow_redirects]", "never"),
        ("customer", "cus_test"),
        ("payment_method", "pm_card_visa"),
        ("metadata[booking]", booking.as_str()),
        ("metadata[call]", call["id"].as_str().unwrap()),
    ] {
        assert_eq!(
            param(hold, name),
            Some(value),
            "{name} in {:?}",
            hold.params
        );
    }
    assert_eq!(posts(&requests, "/capture").len(), 1, "one capture");
    // The operator's view: `tollbridge settlements --state ...`.
    let cli = |state: &str| {
        std::process::Command::new(tollbridge_e2e::binary())
            .args(["settlements", "--state", state, "--config"])
            .arg(daemon.config_path.as_ref().unwrap())
            .current_dir(daemon.dir.path())
            .env_remove("TOLLBRIDGE_CONFIG")
            .output()
            .unwrap()
    };
    let listed = cli("succeeded");
    assert!(listed.status.success());
    let text = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(
        text.lines().filter(|l| l.contains(" capture ")).count(),
        1,
        "{text}"
    );
    assert!(
        text.contains(call["payment_intent"].as_str().unwrap()),
        "{text}"
    );
    let none = cli("unknown");
    assert_eq!(
        String::from_utf8_lossy(&none.stdout).lines().count(),
        1,
        "only the header"
    );
    let bad = cli("bogus");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a settlement state"));
    let (_, metrics) = daemon.get("/metrics", None);
    assert!(
        metrics.contains("tollbridge_settlements{state=\"succeeded\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "tollbridge_stripe_request_seconds_count{operation=\"capture\",outcome=\"ok\"} 1"
        ),
        "{metrics}"
    );
}

#[test]
fn a_declined_card_bridges_nobody_and_says_why() {
    let fake = StripeFake::start();
    let daemon = start(&fake);
    let expert = expert("expert_rings.xml", "40002", &[]);
    let booking = book_with_card(
        &daemon,
        &caller_id(1),
        "pm_card_chargeDeclined",
        &expert_uri(&expert),
    );
    let caller = caller(
        &daemon,
        "caller_waits_bye.xml",
        CALLER_PREFIX,
        "40000",
        "0 96",
        &[],
    );
    assert_passed("caller (answered for the prompt, then BYE)", caller);
    assert_passed("expert (CANCEL)", expert);
    let call = ended_call(&daemon, &booking);
    assert_eq!(call["end_reason"], "payment-declined");
    assert_eq!(call["status"], "failed");
    assert!(call["answered_at"].is_null(), "never bridged");
    let details = details(&call);
    assert!(
        details.iter().any(|d| d.contains("card_declined")),
        "{details:?}"
    );
    let rows = call["settlements"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0]["operation"].as_str(), rows[0]["state"].as_str()),
        (Some("authorize"), Some("failed"))
    );
    assert!(posts(&fake.requests(), "/capture").is_empty());
}

#[test]
fn each_injected_fault_still_ends_in_exactly_one_capture() {
    let fake = StripeFake::start();
    let daemon = start(&fake);
    let faults = [
        Fault::ServerErrorAfterApplying,
        Fault::DropAfterApplying,
        Fault::SlowAnswer(Duration::from_millis(1500)),
        Fault::RateLimited,
    ];
    for (n, fault) in faults.into_iter().enumerate() {
        let expert = expert("expert_answers.xml", "40002", &[]);
        let prefix = format!("{CALLER_PREFIX}{n}");
        let booking = book_with_card(
            &daemon,
            &format!("{prefix}1"),
            "pm_card_visa",
            &expert_uri(&expert),
        );
        fake.inject(Endpoint::Capture, fault);
        call_and_hang_up(&daemon, &prefix, 1, 3000);
        assert_passed("expert", expert);
        let calls = settled_calls(&daemon, &booking);
        assert_settled_once(&fake, &calls[0]);
    }
}

#[test]
fn a_daemon_killed_while_stripe_answers_captures_exactly_once_after_restart() {
    let fake = StripeFake::start();
    let daemon = start(&fake);
    let expert = expert("expert_answers.xml", "40002", &[]);
    let booking = book_with_card(&daemon, &caller_id(1), "pm_card_visa", &expert_uri(&expert));
    // Stripe applies the capture and answers 5 s later: the daemon dies in
    // between, after committing the row and sending the request.
    fake.inject(Endpoint::Capture, Fault::SlowAnswer(Duration::from_secs(5)));
    call_and_hang_up(&daemon, CALLER_PREFIX, 1, 3000);
    let deadline = Instant::now() + Duration::from_secs(20);
    while posts(&fake.requests(), "/capture").is_empty() {
        assert!(Instant::now() < deadline, "no capture was sent");
        std::thread::sleep(Duration::from_millis(20));
    }
    let daemon = daemon.crash_and_restart();
    let calls = settled_calls(&daemon, &booking);
    assert_settled_once(&fake, &calls[0]);
    assert_eq!(calls[0]["settlements"][1]["state"], "succeeded");
    drop(expert);
}

#[test]
fn many_calls_with_random_faults_are_each_captured_exactly_once() {
    let fake = StripeFake::start();
    let daemon = start(&fake);
    let calls: u32 = 200;
    let expert = SippPeer::start(
        "expert_answers.xml",
        None,
        "expert",
        &[("rtp_port", "40002".into())],
        &["-m", &calls.to_string()],
        Duration::from_secs(300),
    );
    let prefix = format!("{CALLER_PREFIX}9");
    let bookings: Vec<String> = (1..=calls)
        .map(|n| {
            book_with_card(
                &daemon,
                &format!("{prefix}{n}"),
                "pm_card_visa",
                &expert_uri(&expert),
            )
        })
        .collect();
    // A fixed pseudo-random mix: about one capture in six meets a fault.
    let mut state: u64 = 0x5eed;
    for _ in 0..calls {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let fault = match (state >> 33) % 24 {
            0 => Some(Fault::ServerErrorAfterApplying),
            1 => Some(Fault::DropAfterApplying),
            2 => Some(Fault::SlowAnswer(Duration::from_millis(1200))),
            3 => Some(Fault::RateLimited),
            _ => None,
        };
        if let Some(fault) = fault {
            fake.inject(Endpoint::Capture, fault);
        }
    }
    call_and_hang_up(&daemon, &prefix, calls, 3000);
    assert_passed("expert", expert);
    let mut captured = 0;
    for booking in &bookings {
        for call in settled_calls(&daemon, booking) {
            assert_settled_once(&fake, &call);
            captured += 1;
        }
    }
    assert_eq!(captured, calls, "captures == calls");
    let succeeded = fake
        .intents()
        .iter()
        .filter(|i| i["status"] == "succeeded")
        .count();
    assert_eq!(succeeded, calls as usize, "no double capture, no lost one");
}

/// The fake delivers a webhook to the daemon signed with `secret`:
/// (status, body).
fn deliver(fake: &StripeFake, daemon: &Daemon, secret: &str, event: &Value) -> (u16, Value) {
    let (status, text) = fake.deliver_webhook(daemon.http, secret, event);
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn webhooks_are_verified_and_applied_once() {
    let fake = StripeFake::start();
    let daemon = start(&fake);
    let expert = expert("expert_answers.xml", "40002", &[]);
    let booking = book_with_card(&daemon, &caller_id(1), "pm_card_visa", &expert_uri(&expert));
    call_and_hang_up(&daemon, CALLER_PREFIX, 1, 3000);
    let call = settled_calls(&daemon, &booking).remove(0);
    let intent = call["payment_intent"].as_str().unwrap().to_owned();
    let refunded = json!({
        "id": "evt_refund_1",
        "type": "charge.refunded",
        "data": {"object": {"id": "ch_1", "object": "charge", "payment_intent": intent}},
    });
    let details = |daemon: &Daemon| -> Vec<String> {
        let (_, call) = daemon.api(
            "GET",
            &format!("/v1/calls/{}", call["id"].as_str().unwrap()),
            TOKEN,
            None,
        );
        call["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["detail"].as_str().map(str::to_owned))
            .collect()
    };
    let before = details(&daemon);
    // A bad signature: 400 and nothing changes.
    let (status, body) = deliver(&fake, &daemon, "whsec_wrong", &refunded);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_signature");
    assert_eq!(details(&daemon), before);
    // Signed right: applied; delivered again: applied once.
    let (status, body) = deliver(&fake, &daemon, WEBHOOK_SECRET, &refunded);
    assert_eq!((status, &body["duplicate"]), (200, &json!(false)), "{body}");
    let (status, body) = deliver(&fake, &daemon, WEBHOOK_SECRET, &refunded);
    assert_eq!((status, &body["duplicate"]), (200, &json!(true)), "{body}");
    let after = details(&daemon);
    assert_eq!(
        after.iter().filter(|d| d.contains("refunded")).count(),
        1,
        "{after:?}"
    );
    // Garbage that is signed is still refused with a JSON error.
    let (status, body) = deliver(&fake, &daemon, WEBHOOK_SECRET, &json!("not an event"));
    assert_eq!((status, &body["error"]["code"]), (400, &json!("bad_event")));
    assert_passed("expert", expert);
}

#[test]
fn a_hold_whose_answer_was_lost_is_found_by_its_metadata_and_released() {
    let fake = StripeFake::start();
    let daemon = start(&fake);
    let expert = expert("expert_rings.xml", "40002", &[]);
    let booking = book_with_card(&daemon, &caller_id(1), "pm_card_visa", &expert_uri(&expert));
    // Stripe places the hold but every answer is a (replayed) 500: the
    // daemon never learns the PaymentIntent's id and nobody talks.
    fake.inject(Endpoint::Create, Fault::ServerErrorAfterApplying);
    let caller = caller(
        &daemon,
        "caller_waits_bye.xml",
        CALLER_PREFIX,
        "40000",
        "0 96",
        &[],
    );
    assert_passed("caller (told, then BYE)", caller);
    assert_passed("expert (CANCEL)", expert);
    let call = ended_call(&daemon, &booking);
    assert_eq!(call["end_reason"], "payment-declined");
    assert_eq!(call["settlements"][0]["state"], "unknown");
    // Its first send lost its answer: looked at again after 5 minutes,
    // the first rung of the ladder.
    let at = |field: &str| {
        let text = call["settlements"][0][field].as_str().unwrap();
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
    };
    let wait = at("next_attempt_at") - at("updated_at");
    assert!(
        (time::Duration::minutes(5) - time::Duration::seconds(5)..=time::Duration::minutes(5))
            .contains(&wait),
        "looked at again after {wait}"
    );
    let held = fake.intents();
    assert_eq!(
        (held.len(), held[0]["status"].as_str()),
        (1, Some("requires_capture")),
        "a hold exists at Stripe"
    );
    // At the next start the reconciler lists the customer's PaymentIntents,
    // finds the hold by its call id, and releases it: nothing was owed.
    let daemon = daemon.crash_and_restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.intents()[0]["status"] != "canceled" {
        assert!(
            Instant::now() < deadline,
            "the lost hold was not released: {:?}",
            fake.intents()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(fake.intents()[0]["cancellation_reason"], "abandoned");
    let listed = fake
        .requests()
        .iter()
        .any(|r| r.method == "GET" && r.path == "/v1/payment_intents");
    assert!(listed, "found by listing, not by id");
    let (_, call) = daemon.api(
        "GET",
        &format!("/v1/calls/{}", call["id"].as_str().unwrap()),
        TOKEN,
        None,
    );
    let rows: Vec<(&str, &str)> = call["settlements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["operation"].as_str().unwrap(),
                r["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, [("authorize", "succeeded"), ("cancel", "succeeded")]);
}

#[test]
fn a_hold_that_lands_after_the_caller_gave_up_is_released() {
    let fake = StripeFake::start();
    let daemon = start(&fake);
    let expert = expert("expert_rings.xml", "40002", &[]);
    let booking = book_with_card(&daemon, &caller_id(1), "pm_card_visa", &expert_uri(&expert));
    // Stripe is slow: the hold lands after the caller has cancelled.
    fake.inject(
        Endpoint::Create,
        Fault::SlowAnswer(Duration::from_millis(1500)),
    );
    let caller = caller(
        &daemon,
        "caller_cancels.xml",
        CALLER_PREFIX,
        "40000",
        "0 96",
        &[],
    );
    assert_passed("caller", caller);
    assert_passed("expert (CANCEL)", expert);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let intents = fake.intents();
        if intents.len() == 1 && intents[0]["status"] == "canceled" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the late hold was not released: {intents:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let calls = settled_calls(&daemon, &booking);
    assert_eq!(calls[0]["end_reason"], "caller-cancel");
    let rows: Vec<(&str, &str)> = calls[0]["settlements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["operation"].as_str().unwrap(),
                r["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, [("authorize", "succeeded"), ("cancel", "succeeded")]);
}
