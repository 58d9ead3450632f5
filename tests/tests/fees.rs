//! Cancellation fees end to end: the real daemon, SIPp and the Stripe
//! fake. A booking's fee is held with it (or a hold's lifetime before its
//! window), captured on a late cancellation or a no-show, released when a
//! call takes place or on a cancellation in time (`requested_by_customer`),
//! and renewed before the `capture_before` Stripe gave.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::stripe::*;
use common::*;
use tollbridge_e2e::stripe_fake::{Endpoint, Fault, StripeFake};

/// A booking with a card and a ¥500 cancellation fee, its window from
/// `start` to `end` (offsets from now).
fn book_with_fee(
    daemon: &Daemon,
    caller: &str,
    expert: &str,
    start: time::Duration,
    end: time::Duration,
) -> String {
    let mut booking = card_booking(caller, "pm_card_visa", expert);
    booking["window"] = json!({"start": rfc3339(start), "end": rfc3339(end)});
    booking["cancellation_fee"] = json!(500);
    create_booking(daemon, &booking)
}

/// The fee hold of `booking` at the fake, once it is there.
fn fee_intent(fake: &StripeFake, booking: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found = fake
            .intents()
            .into_iter()
            .find(|i| i["metadata"]["fee_booking"] == booking && i["status"] == status);
        if let Some(intent) = found {
            return intent;
        }
        assert!(
            Instant::now() < deadline,
            "no {status} fee hold for {booking}: {:?}",
            fake.intents()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_cancellation_fee_is_held_then_captured_late_released_early_or_after_a_call() {
    let fake = StripeFake::start();
    let daemon = start(&fake);
    let minutes = time::Duration::minutes;
    // Held at once (the window has opened); a late cancellation captures it.
    let late = book_with_fee(
        &daemon,
        "+15550000001",
        "sip:nobody@127.0.0.1:9",
        minutes(-5),
        minutes(60),
    );
    let held = fee_intent(&fake, &late, "requires_capture");
    assert_eq!(held["amount"], 500);
    let (status, _) = daemon.api("DELETE", &format!("/v1/bookings/{late}"), TOKEN, None);
    assert_eq!(status, 200);
    let captured = fee_intent(&fake, &late, "succeeded");
    assert_eq!(captured["amount_received"], 500);
    // A window ten days away: no hold yet (it would expire first); canceled
    // in time, nothing is ever sent.
    let early = book_with_fee(
        &daemon,
        "+15550000002",
        "sip:nobody@127.0.0.1:9",
        time::Duration::days(10),
        time::Duration::days(11),
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !fake
            .intents()
            .iter()
            .any(|i| i["metadata"]["fee_booking"] == early.as_str())
    );
    daemon.api("DELETE", &format!("/v1/bookings/{early}"), TOKEN, None);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !fake
            .intents()
            .iter()
            .any(|i| i["metadata"]["fee_booking"] == early.as_str()),
        "nothing sent"
    );
    // Held at once (the window opens within a hold's life) and canceled
    // more than billing.late_cancellation before it: released, and Stripe
    // is told the customer asked.
    let in_time = book_with_fee(
        &daemon,
        "+15550000004",
        "sip:nobody@127.0.0.1:9",
        time::Duration::days(2),
        time::Duration::days(2) + minutes(60),
    );
    fee_intent(&fake, &in_time, "requires_capture");
    let (status, _) = daemon.api("DELETE", &format!("/v1/bookings/{in_time}"), TOKEN, None);
    assert_eq!(status, 200);
    let released_early = fee_intent(&fake, &in_time, "canceled");
    assert_eq!(
        released_early["cancellation_reason"],
        "requested_by_customer"
    );
    // The call takes place: the fee is released.
    let expert = expert("expert_answers.xml", "40002", &[]);
    let kept = book_with_fee(
        &daemon,
        &caller_id(1),
        &expert_uri(&expert),
        minutes(-5),
        minutes(60),
    );
    fee_intent(&fake, &kept, "requires_capture");
    call_and_hang_up(&daemon, CALLER_PREFIX, 1, 3000);
    assert_passed("expert", expert);
    let released = fee_intent(&fake, &kept, "canceled");
    assert_eq!(released["amount_received"], 0);
    assert_eq!(released["cancellation_reason"], "abandoned");
    // A no-show: the window ends without a call, the fee is captured.
    let missed = book_with_fee(
        &daemon,
        "+15550000003",
        "sip:nobody@127.0.0.1:9",
        minutes(-5),
        time::Duration::seconds(3),
    );
    fee_intent(&fake, &missed, "requires_capture");
    let charged = fee_intent(&fake, &missed, "succeeded");
    assert_eq!(charged["amount_received"], 500);
    assert!(
        fake.requests().iter().all(|r| r.status != 400),
        "{:?}",
        fake.requests()
    );
}

#[test]
fn a_booking_canceled_while_its_fee_hold_is_being_placed_is_settled_once_the_hold_stands() {
    let fake = StripeFake::start();
    let daemon = start(&fake);
    // Stripe has made the hold, its answer is 3 s on its way: the booking
    // is canceled late meanwhile. Once the answer is in, the fee is
    // captured, not left held.
    fake.inject(Endpoint::Create, Fault::SlowAnswer(Duration::from_secs(3)));
    let late = book_with_fee(
        &daemon,
        "+15550000001",
        "sip:nobody@127.0.0.1:9",
        time::Duration::minutes(-5),
        time::Duration::minutes(60),
    );
    fee_intent(&fake, &late, "requires_capture");
    let (status, _) = daemon.api("DELETE", &format!("/v1/bookings/{late}"), TOKEN, None);
    assert_eq!(status, 200);
    let captured = fee_intent(&fake, &late, "succeeded");
    assert_eq!(captured["amount_received"], 500);
    // The same, canceled in time: released, as the customer asked.
    fake.inject(Endpoint::Create, Fault::SlowAnswer(Duration::from_secs(3)));
    let in_time = book_with_fee(
        &daemon,
        "+15550000002",
        "sip:nobody@127.0.0.1:9",
        time::Duration::days(2),
        time::Duration::days(2) + time::Duration::minutes(60),
    );
    fee_intent(&fake, &in_time, "requires_capture");
    let (status, _) = daemon.api("DELETE", &format!("/v1/bookings/{in_time}"), TOKEN, None);
    assert_eq!(status, 200);
    let released = fee_intent(&fake, &in_time, "canceled");
    assert_eq!(released["cancellation_reason"], "requested_by_customer");
    let moves: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/capture") || r.path.ends_with("/cancel"))
        .map(|r| r.status)
        .collect();
    assert_eq!(moves, [200, 200], "one capture, one release: {moves:?}");
}

#[test]
fn a_fee_hold_is_renewed_before_the_capture_before_stripe_gave() {
    let fake = StripeFake::start();
    // Holds that end 8 s after they are placed, as the card charge says:
    // Tollbridge must act on what Stripe says, not on the 4 d 18 h it
    // would otherwise assume.
    fake.set_hold_lifetime(Duration::from_secs(8));
    let daemon = start(&fake);
    let booking = book_with_fee(
        &daemon,
        "+15550000004",
        "sip:nobody@127.0.0.1:9",
        time::Duration::minutes(-5),
        time::Duration::minutes(60),
    );
    let first = fee_intent(&fake, &booking, "requires_capture");
    // Released by Tollbridge before it lapsed, and held again.
    let released = fee_intent(&fake, &booking, "canceled");
    assert_eq!(released["id"], first["id"]);
    assert_eq!(
        released["cancellation_reason"], "abandoned",
        "released by Tollbridge, not expired: {released}"
    );
    let renewed = fee_intent(&fake, &booking, "requires_capture");
    assert_ne!(renewed["id"], first["id"]);
    assert_eq!(
        renewed["metadata"]["fee_hold"],
        format!("tb:booking:{booking}:fee-hold:v2")
    );
    // A late cancellation captures the live hold.
    let (status, _) = daemon.api("DELETE", &format!("/v1/bookings/{booking}"), TOKEN, None);
    assert_eq!(status, 200);
    let captured = fee_intent(&fake, &booking, "succeeded");
    assert_eq!(
        (captured["id"].clone(), captured["amount_received"].clone()),
        (renewed["id"].clone(), json!(500))
    );
    assert!(
        fake.intents()
            .iter()
            .all(|i| i["cancellation_reason"] != "automatic"),
        "no hold lapsed: {:?}",
        fake.intents()
    );
    assert!(
        fake.requests().iter().all(|r| r.status != 400),
        "{:?}",
        fake.requests()
    );
}
