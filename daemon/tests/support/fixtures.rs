//! Bookings and calls the ledger suites build on: one booking shape, a
//! call to it, routing to it, and a call talking with its dialogs stored.

use tollbridge_daemon::bookings::model::{
    Callee, NewBooking, StripeCard, Tariff, ValidBooking, Window,
};
use tollbridge_daemon::calls::route::{Candidate, Route};
use tollbridge_daemon::ledger::{CallEnd, CallStatus, Ledger, NewCall};
use tollbridge_media::bridge::Side;

/// An hour in ms.
pub const HOUR_MS: i64 = 3_600_000;
/// The suites' "now".
pub const T0: i64 = 1_900_000_000_000;

pub fn booking(id: &str, called: &str, card: bool, fee: Option<i64>) -> ValidBooking {
    ValidBooking {
        booking: NewBooking {
            id: Some(id.to_owned()),
            called: called.to_owned(),
            callers: vec!["+819012345678".to_owned()],
            pin: Some("4321".to_owned()),
            callee: Callee::Uri {
                uri: "sip:expert@127.0.0.1:5099".to_owned(),
            },
            tariff: Tariff {
                currency: "jpy".to_owned(),
                price_per_minute: 300,
                increment_seconds: 6,
                minimum_seconds: 0,
                under_minimum: "cancel".to_owned(),
                recording_price_per_minute: 0,
            },
            cap_seconds: 1800,
            window: Window {
                start: String::new(),
                end: String::new(),
            },
            stripe: card.then(|| StripeCard {
                customer: "cus_1".to_owned(),
                payment_method: "pm_1".to_owned(),
            }),
            cancellation_fee: fee,
            language: None,
            extension: None,
            recording: None,
        },
        window_start_ms: T0 - HOUR_MS,
        window_end_ms: T0 + HOUR_MS,
        minimum_charge: 50,
    }
}

pub fn new_call(id: &str, called: &str) -> NewCall {
    NewCall {
        id: id.to_owned(),
        sip_call_id: format!("{id}@caller"),
        twilio_call_sid: Some(format!("CA{id}")),
        caller: Some("+819012345678".to_owned()),
        called: Some(called.to_owned()),
    }
}

/// Routes to the first candidate, as caller-ID routing does for one match.
pub fn first(candidates: &[Candidate]) -> Route {
    candidates.first().map_or(
        Route::Refuse(tollbridge_sip::reject::RejectReason::UnknownNumber),
        |c| Route::Booking(c.id.clone()),
    )
}

pub fn talked(ms: i64) -> CallEnd {
    CallEnd {
        status: CallStatus::Completed,
        reason: "caller-hangup".to_owned(),
        talk_ms: ms,
        connected: true,
    }
}

/// Books `booking_id` on `called` (with a card when `card`), begins call
/// `id` to it and routes it there; the cap and whether there is a card.
pub async fn routed_call(
    ledger: &Ledger,
    id: &str,
    booking_id: &str,
    called: &str,
    card: bool,
) -> (Option<i64>, bool) {
    ledger
        .create_booking(
            booking_id.into(),
            booking(booking_id, called, card, None),
            T0,
        )
        .await
        .unwrap();
    ledger.begin_call(new_call(id, called), T0).await.unwrap();
    let tollbridge_daemon::ledger::Routed {
        route,
        cap,
        card: has_card,
        ..
    } = ledger
        .route_and_claim(id.into(), Some(called.into()), T0, first)
        .await
        .unwrap();
    assert_eq!(route, Route::Booking(booking_id.into()));
    (cap, has_card)
}

/// Starts a talking call on `ledger`'s node with its dialogs stored.
pub async fn talking_call(ledger: &Ledger, id: &str, booking_id: &str, called: &str) {
    routed_call(ledger, id, booking_id, called, false).await;
    ledger
        .record_event(
            id.into(),
            CallStatus::InProgress,
            Some(200),
            None,
            T0 + 1_000,
        )
        .await
        .unwrap();
    for side in [Side::Caller, Side::Callee] {
        ledger
            .record_dialog(id.into(), side, format!("{{\"{id}\":1}}"))
            .await
            .unwrap();
    }
    ledger
        .record_rtp_ports(id.into(), [20100, 20102])
        .await
        .unwrap();
    ledger
        .checkpoint(vec![id.into()], T0 + 31_000)
        .await
        .unwrap();
}

/// Call `call_1`'s card hold on `bk_1`, placed as `pi_1`; its amount.
pub async fn held(ledger: &Ledger) -> i64 {
    let (hold, _) = ledger
        .begin_hold("call_1".into(), "bk_1".into(), T0)
        .await
        .unwrap()
        .unwrap();
    ledger
        .hold_succeeded(hold.facts.id, "pi_1".into(), None, T0 + 10)
        .await
        .unwrap();
    hold.facts.amount
}
