//! Paid time that spans calls, the same on both backends: a booking's
//! budget is shared by its calls (each call's cap, and its card hold, is
//! what remains), it completes when the budget is used or its window
//! ends after a call, and it is a no-show when its window ends with no
//! call; each change is an event for the platform.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use support::Backend;
use support::fixtures::*;
use tollbridge_daemon::calls::route::Route;
use tollbridge_daemon::ledger::{BookingState, CallEnd, CallStatus, Ledger};

const CALLED: &str = "+81312345678";

/// Books `id` with a budget of `cap_seconds` and a card.
async fn book(ledger: &Ledger, id: &str, cap_seconds: i64, window_end_ms: i64) {
    let mut valid = booking(id, CALLED, true, None);
    valid.booking.cap_seconds = cap_seconds;
    valid.window_end_ms = window_end_ms;
    ledger.create_booking(id.into(), valid, T0).await.unwrap();
}

/// Begins call `id` at `at_ms`, routes it, and returns its cap.
async fn call_in(ledger: &Ledger, id: &str, at_ms: i64) -> Option<i64> {
    ledger
        .begin_call(new_call(id, CALLED), at_ms)
        .await
        .unwrap();
    let tollbridge_daemon::ledger::Routed { route, cap, .. } = ledger
        .route_and_claim(id.into(), Some(CALLED.into()), at_ms, first)
        .await
        .unwrap();
    assert!(matches!(route, Route::Booking(_)), "{route:?}");
    cap
}

async fn event_types(ledger: &Ledger, booking: &str) -> Vec<(String, serde_json::Value)> {
    ledger
        .events(Some(booking.into()), None, None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.starts_with("booking."))
        .map(|e| (e.kind, e.body["data"].clone()))
        .collect()
}

async fn paid_time_spans_calls_until_the_budget_is_used(backend: Backend) {
    let ledger = support::open(backend).await;
    book(&ledger, "bk_1", 120, T0 + HOUR_MS).await;

    // The first call has the whole budget; the caller's leg drops at 30 s.
    assert_eq!(call_in(&ledger, "call_1", T0).await, Some(120));
    let (hold, terms) = ledger
        .begin_hold("call_1".into(), "bk_1".into(), T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((terms.remaining_seconds, hold.facts.amount), (120, 600));
    let dropped = CallEnd {
        reason: "caller-hangup".into(),
        ..talked(30_000)
    };
    let first_call = ledger
        .close_call("call_1".into(), dropped, T0 + 31_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((first_call.billed_seconds, first_call.amount), (30, 150));
    let after_first = ledger.booking("bk_1".into()).await.unwrap().unwrap();
    assert_eq!(
        (after_first.state, after_first.used_seconds),
        (BookingState::Active, 30)
    );
    assert!(event_types(&ledger, "bk_1").await.is_empty());

    // The caller calls back: the cap and the hold are what remains.
    assert_eq!(call_in(&ledger, "call_2", T0 + 60_000).await, Some(90));
    let (hold, terms) = ledger
        .begin_hold("call_2".into(), "bk_1".into(), T0 + 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((terms.remaining_seconds, hold.facts.amount), (90, 450));
    let second = ledger
        .close_call("call_2".into(), talked(90_000), T0 + 151_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((second.billed_seconds, second.amount), (90, 450));
    let done = ledger.booking("bk_1".into()).await.unwrap().unwrap();
    assert_eq!(
        (done.state, done.used_seconds),
        (BookingState::Completed, 120)
    );
    let events = event_types(&ledger, "bk_1").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "booking.completed");
    assert_eq!(events[0].1["reason"], "budget-used");

    // A completed booking takes no more calls.
    ledger
        .begin_call(new_call("call_3", CALLED), T0 + 200_000)
        .await
        .unwrap();
    let tollbridge_daemon::ledger::Routed { route, cap, .. } = ledger
        .route_and_claim("call_3".into(), Some(CALLED.into()), T0 + 200_000, first)
        .await
        .unwrap();
    assert!(!matches!(route, Route::Booking(_)), "{route:?}");
    assert_eq!(cap, None);
}

async fn a_call_that_never_connected_uses_none_of_the_budget(backend: Backend) {
    let ledger = support::open(backend).await;
    book(&ledger, "bk_1", 120, T0 + HOUR_MS).await;
    call_in(&ledger, "call_1", T0).await;
    let unanswered = CallEnd {
        status: CallStatus::NoAnswer,
        reason: "no-answer".into(),
        talk_ms: 0,
        connected: false,
    };
    ledger
        .close_call("call_1".into(), unanswered, T0 + 30_000)
        .await
        .unwrap();
    let booking = ledger.booking("bk_1".into()).await.unwrap().unwrap();
    assert_eq!(
        (booking.state, booking.used_seconds),
        (BookingState::Active, 0)
    );
    assert_eq!(call_in(&ledger, "call_2", T0 + 40_000).await, Some(120));
}

async fn a_window_that_ends_completes_or_marks_a_no_show(backend: Backend) {
    let ledger = support::open(backend).await;
    let end = T0 + HOUR_MS;
    // Nobody calls bk_absent; bk_tried's caller calls and is not
    // answered; bk_talking is in a call when its window ends.
    for (id, caller) in [
        ("bk_absent", "+81901"),
        ("bk_tried", "+81902"),
        ("bk_talking", "+81903"),
    ] {
        let mut valid = booking(id, CALLED, false, None);
        valid.booking.callers = vec![caller.to_owned()];
        valid.booking.pin = None;
        valid.window_end_ms = end;
        ledger.create_booking(id.into(), valid, T0).await.unwrap();
    }
    for (call, caller) in [("call_tried", "+81902"), ("call_talking", "+81903")] {
        let mut new = new_call(call, CALLED);
        new.caller = Some(caller.into());
        ledger.begin_call(new, T0).await.unwrap();
        let wanted = if call == "call_tried" {
            "bk_tried"
        } else {
            "bk_talking"
        };
        let tollbridge_daemon::ledger::Routed { route, .. } = ledger
            .route_and_claim(call.into(), Some(CALLED.into()), T0, move |_| {
                Route::Booking(wanted.into())
            })
            .await
            .unwrap();
        assert_eq!(route, Route::Booking(wanted.into()));
    }
    let unanswered = CallEnd {
        status: CallStatus::NoAnswer,
        reason: "no-answer".into(),
        talk_ms: 0,
        connected: false,
    };
    ledger
        .close_call("call_tried".into(), unanswered, T0 + 30_000)
        .await
        .unwrap();

    // Before the end nothing changes; at the end, once.
    assert_eq!(ledger.end_windows(end - 1).await.unwrap(), 0);
    assert_eq!(ledger.end_windows(end).await.unwrap(), 2);
    assert_eq!(ledger.end_windows(end + 1_000).await.unwrap(), 0);
    let state = |id: &'static str| {
        let ledger = ledger.clone();
        async move { ledger.booking(id.into()).await.unwrap().unwrap().state }
    };
    assert_eq!(state("bk_absent").await, BookingState::NoShow);
    assert_eq!(state("bk_tried").await, BookingState::Completed);
    assert_eq!(state("bk_talking").await, BookingState::InCall);
    let absent = event_types(&ledger, "bk_absent").await;
    assert_eq!(absent.len(), 1, "{absent:?}");
    assert_eq!(absent[0].0, "booking.no_show");
    assert_eq!(absent[0].1["reason"], "window-ended");
    let tried = event_types(&ledger, "bk_tried").await;
    assert_eq!(tried.len(), 1, "{tried:?}");
    assert_eq!(tried[0].0, "booking.completed");
    assert_eq!(
        ledger
            .bookings(None, Some(BookingState::NoShow), None, 10)
            .await
            .unwrap()
            .len(),
        1
    );

    // The call in progress at the end finishes; the booking is closed by
    // the next scan, as completed.
    ledger
        .close_call("call_talking".into(), talked(5_000), end + 2_000)
        .await
        .unwrap();
    assert_eq!(state("bk_talking").await, BookingState::Active);
    assert_eq!(ledger.end_windows(end + 3_000).await.unwrap(), 1);
    assert_eq!(state("bk_talking").await, BookingState::Completed);
}

on_both_backends!(
    paid_time_spans_calls_until_the_budget_is_used,
    a_call_that_never_connected_uses_none_of_the_budget,
    a_window_that_ends_completes_or_marks_a_no_show,
);
