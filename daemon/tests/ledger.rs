//! The ledger's behaviour, the same on both backends: every test here runs
//! once on SQLite and once on PostgreSQL (`sqlite::...`, `postgres::...`).
//! What only one backend has (file pragmas, server sessions) is tested
//! beside that backend's code.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use support::Backend;
use tollbridge_daemon::args;
use tollbridge_daemon::bookings::model::{
    Callee, NewBooking, StripeCard, Tariff, ValidBooking, Window,
};
use tollbridge_daemon::calls::route::{Candidate, Route};
use tollbridge_daemon::ledger::{
    BookingState, BookingWrite, CallEnd, CallStatus, Ledger, LedgerError, NewCall, SettlementState,
};
use tollbridge_media::bridge::Side;

const HOUR_MS: i64 = 3_600_000;
const T0: i64 = 1_900_000_000_000;

fn booking(id: &str, called: &str, card: bool, fee: Option<i64>) -> ValidBooking {
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
        },
        window_start_ms: T0 - HOUR_MS,
        window_end_ms: T0 + HOUR_MS,
    }
}

fn new_call(id: &str, called: &str) -> NewCall {
    NewCall {
        id: id.to_owned(),
        sip_call_id: format!("{id}@caller"),
        twilio_call_sid: Some(format!("CA{id}")),
        caller: Some("+819012345678".to_owned()),
        called: Some(called.to_owned()),
    }
}

/// Routes to the first candidate, as caller-ID routing does for one match.
fn first(candidates: &[Candidate]) -> Route {
    candidates.first().map_or(
        Route::Refuse(tollbridge_sip::reject::RejectReason::UnknownNumber),
        |c| Route::Booking(c.id.clone()),
    )
}

fn talked(ms: i64) -> CallEnd {
    CallEnd {
        status: CallStatus::Completed,
        reason: "caller-hangup".to_owned(),
        talk_ms: ms,
        connected: true,
    }
}

async fn the_schema_enforces_its_rules(backend: Backend) {
    let ledger = support::open(backend).await;
    let attempts: [&[&str]; 5] = [
        // An event for a call that does not exist: foreign key.
        &["INSERT INTO call_events VALUES ('call_x', 1, 0, 'queued', NULL, NULL, NULL)"],
        // A status outside Twilio's vocabulary.
        &["INSERT INTO calls (id, inbound_call_id, status, created_ms) VALUES ('c1', 'x', 'answered', 0)"],
        // A valid call and event.
        &[
            "INSERT INTO calls (id, inbound_call_id, created_ms) VALUES ('c2', 'x', 0)",
            "INSERT INTO call_events VALUES ('c2', 1, 0, 'queued', NULL, NULL, NULL)",
        ],
        // A negative amount.
        &["INSERT INTO settlements (id, operation, idempotency_key, amount, currency, created_ms, updated_ms)
           VALUES ('s1', 'capture', 'k1', -5, 'jpy', 0, 0)"],
        // A reused idempotency key.
        &[
            "INSERT INTO settlements (id, operation, idempotency_key, amount, currency, created_ms, updated_ms)
             VALUES ('s2', 'capture', 'k2', 5, 'jpy', 0, 0)",
            "INSERT INTO settlements (id, operation, idempotency_key, amount, currency, created_ms, updated_ms)
             VALUES ('s3', 'capture', 'k2', 5, 'jpy', 0, 0)",
        ],
    ];
    let mut results = Vec::new();
    for statements in attempts {
        let statements: Vec<String> = statements.iter().map(|s| (*s).to_owned()).collect();
        let ran = ledger
            .run(move |db| {
                for sql in &statements {
                    db.execute(sql, &[])?;
                }
                Ok(())
            })
            .await;
        results.push(ran.is_ok());
    }
    assert_eq!(results, [false, false, true, false, false]);
    // A failed transaction leaves nothing: not even the first insert of k2.
    assert_eq!(ledger.settlement_counts().await.unwrap(), []);
    let reused = ledger
        .run(|db| {
            let insert = "INSERT INTO settlements (id, operation, idempotency_key, amount, currency, created_ms, updated_ms)
                          VALUES (?1, 'capture', 'k3', 5, 'jpy', 0, 0)";
            db.execute(insert, args!["s4"])?;
            db.execute(insert, args!["s5"])
        })
        .await;
    assert!(
        matches!(reused, Err(LedgerError::UniqueViolation(_))),
        "{reused:?}"
    );
}

async fn values_of_every_kind_round_trip(backend: Backend) {
    let ledger = support::open(backend).await;
    let row = ledger
        .run(|db| {
            db.execute(
                "INSERT INTO calls (id, inbound_call_id, created_ms, caller_rtp_port, end_reason)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                args!["c1", "é 😀 'quoted'", i64::MAX, 65535u16, None::<String>],
            )?;
            db.execute(
                "INSERT INTO call_legs VALUES (?1, 'caller', 1, 2, 3, 4, 5, ?2, 0, 0, ?3)",
                args!["c1", 1.25f64, 7i64],
            )?;
            db.query_one(
                "SELECT c.inbound_call_id, c.created_ms, c.caller_rtp_port, c.end_reason, l.jitter_ms,
                        c.end_reason IS NULL, COUNT(*)
                 FROM calls c JOIN call_legs l ON l.call_id = c.id WHERE c.id = ?1
                 GROUP BY c.inbound_call_id, c.created_ms, c.caller_rtp_port, c.end_reason, l.jitter_ms",
                args!["c1"],
            )
        })
        .await
        .unwrap();
    assert_eq!(row.text(0).unwrap(), "é 😀 'quoted'");
    assert_eq!(row.int(1).unwrap(), i64::MAX);
    assert_eq!(row.int(2).unwrap(), 65535);
    assert_eq!(row.opt_text(3).unwrap(), None);
    assert_eq!(row.real(4).unwrap(), 1.25);
    assert!(row.flag(5).unwrap());
    assert_eq!(row.int(6).unwrap(), 1);
}

async fn a_booking_is_created_read_listed_and_canceled(backend: Backend) {
    let ledger = support::open(backend).await;
    let created = ledger
        .create_booking(
            "bk_1".into(),
            booking("bk_1", "+81312345678", false, None),
            T0,
        )
        .await
        .unwrap();
    assert_eq!(created.state, BookingState::Active);
    assert!(created.callers.contains(&"+819012345678".to_owned()));
    let again = ledger
        .create_booking(
            "bk_1".into(),
            booking("bk_1", "+81312345678", false, None),
            T0,
        )
        .await;
    assert!(matches!(again, Err(BookingWrite::Exists)), "{again:?}");
    ledger
        .create_booking(
            "bk_2".into(),
            booking("bk_2", "+81399999999", false, None),
            T0 + 1,
        )
        .await
        .unwrap();

    let listed = ledger.bookings(None, None, None, 10).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, ["bk_2", "bk_1"], "newest first");
    let for_number = ledger
        .bookings(
            Some("+81312345678".into()),
            Some(BookingState::Active),
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(for_number.len(), 1);
    assert_eq!(ledger.booking("bk_1".into()).await.unwrap(), Some(created));
    assert_eq!(ledger.booking("bk_none".into()).await.unwrap(), None);

    let canceled = ledger
        .cancel_booking("bk_1".into(), T0, std::time::Duration::from_secs(0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(canceled.state, BookingState::Canceled);
    assert_eq!(
        ledger
            .bookings(None, Some(BookingState::Canceled), None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn a_call_is_routed_metered_closed_and_settled_in_step(backend: Backend) {
    let ledger = support::open(backend).await;
    let (cap, has_card) = routed_call(&ledger, "call_1", "bk_1", "+81312345678", true).await;
    assert_eq!((cap, has_card), (Some(1800), true));
    let booking_now = ledger.booking("bk_1".into()).await.unwrap().unwrap();
    assert_eq!(booking_now.state, BookingState::InCall);

    // The card hold is written and marked sent before it goes out.
    let (hold, terms) = ledger
        .begin_hold("call_1".into(), "bk_1".into(), T0 + 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hold.state, SettlementState::Sent);
    assert_eq!(terms.cap_seconds, 1800);
    ledger
        .hold_succeeded(
            hold.id.clone(),
            "pi_1".into(),
            Some(T0 + 7 * 24 * HOUR_MS),
            T0 + 20,
        )
        .await
        .unwrap();

    for (status, code, at) in [
        (CallStatus::Ringing, Some(180), T0 + 100),
        (CallStatus::InProgress, Some(200), T0 + 1_000),
    ] {
        ledger
            .record_event("call_1".into(), status, code, None, at)
            .await
            .unwrap();
    }
    ledger
        .record_callee_call_id("call_1".into(), "out@tollbridge".into())
        .await
        .unwrap();
    ledger
        .record_dialog("call_1".into(), Side::Caller, "{\"dialog\":1}".into())
        .await
        .unwrap();
    ledger
        .record_rtp_ports("call_1".into(), [20000, 20002])
        .await
        .unwrap();
    ledger
        .checkpoint(vec!["call_1".into()], T0 + 31_000)
        .await
        .unwrap();

    let priced = ledger
        .close_call("call_1".into(), talked(61_500), T0 + 62_500)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (priced.talk_seconds, priced.billed_seconds, priced.amount),
        (62, 66, 330),
        "62 s in 6 s increments at 300/min"
    );
    // Closing twice changes nothing.
    let twice = ledger
        .close_call("call_1".into(), talked(99_000), T0 + 99_000)
        .await
        .unwrap();
    assert_eq!(twice, None);

    let record = ledger.call("call_1".into()).await.unwrap().unwrap();
    assert_eq!(record.status, CallStatus::Completed);
    assert_eq!(record.booking.as_deref(), Some("bk_1"));
    assert_eq!(record.amount, Some(330));
    assert_eq!(record.answered_ms, Some(T0 + 1_000));
    assert_eq!(record.ringing_ms, Some(T0 + 100));
    assert_eq!(
        record.callee_leg.sip_call_id.as_deref(),
        Some("out@tollbridge")
    );
    assert_eq!(record.caller_leg.relay_port, Some(20000));
    assert_eq!(record.payment_intent.as_deref(), Some("pi_1"));
    let seqs: Vec<i64> = record.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    let operations: Vec<(&str, &str, i64)> = record
        .settlements
        .iter()
        .map(|s| (s.operation.as_str(), s.state.as_str(), s.amount))
        .collect();
    assert_eq!(
        operations,
        [
            ("authorize", "succeeded", 9000),
            ("capture", "pending", 330)
        ]
    );
    assert_eq!(
        ledger.booking("bk_1".into()).await.unwrap().unwrap().state,
        BookingState::Completed
    );
    let due = ledger
        .claim_due_settlements(T0 + 62_500, false)
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].amount, 330);
}

async fn two_calls_for_one_booking_claim_it_once(backend: Backend) {
    let ledger = support::open(backend).await;
    let other_node = support::reopen(&ledger).await;
    ledger
        .create_booking(
            "bk_1".into(),
            booking("bk_1", "+81312345678", false, None),
            T0,
        )
        .await
        .unwrap();
    for id in ["call_a", "call_b"] {
        ledger
            .begin_call(new_call(id, "+81312345678"), T0)
            .await
            .unwrap();
    }
    let (a, b) = tokio::join!(
        ledger.route_and_claim("call_a".into(), Some("+81312345678".into()), T0, first),
        other_node.route_and_claim("call_b".into(), Some("+81312345678".into()), T0, first),
    );
    let routes = [a.unwrap().0, b.unwrap().0];
    let claimed = routes
        .iter()
        .filter(|r| matches!(r, Route::Booking(_)))
        .count();
    assert_eq!(claimed, 1, "{routes:?}");
    assert!(
        routes.iter().any(|r| matches!(
            r,
            Route::Refuse(tollbridge_sip::reject::RejectReason::BookingInCall)
        )),
        "{routes:?}"
    );
    other_node.close().await;
}

async fn a_crash_leaves_calls_closed_at_their_checkpoint(backend: Backend) {
    let ledger = support::open(backend).await;
    routed_call(&ledger, "call_1", "bk_1", "+81312345678", false).await;
    ledger
        .record_event(
            "call_1".into(),
            CallStatus::InProgress,
            Some(200),
            None,
            T0 + 1_000,
        )
        .await
        .unwrap();
    ledger
        .record_dialog("call_1".into(), Side::Callee, "{}".into())
        .await
        .unwrap();
    ledger
        .record_rtp_ports("call_1".into(), [20010, 20012])
        .await
        .unwrap();
    ledger
        .checkpoint(vec!["call_1".into()], T0 + 13_000)
        .await
        .unwrap();

    assert_eq!(ledger.recover_open_calls(T0 + 20_000).await.unwrap(), 1);
    assert_eq!(ledger.recover_open_calls(T0 + 20_000).await.unwrap(), 0);
    let record = ledger.call("call_1".into()).await.unwrap().unwrap();
    assert_eq!(record.end_reason.as_deref(), Some("recovered"));
    assert_eq!(record.talk_ms, Some(12_000), "to the last checkpoint");
    assert_eq!(record.amount, Some(60));

    let unfinished = ledger.unfinished_calls().await.unwrap();
    assert_eq!(unfinished.len(), 1);
    assert_eq!(unfinished[0].rtp_ports, [20010, 20012]);
    assert_eq!(unfinished[0].dialogs.len(), 1);
    ledger
        .record_hangup_outcome(
            "call_1".into(),
            unfinished[0].status,
            "BYE answered 200".into(),
            T0 + 21_000,
        )
        .await
        .unwrap();
    ledger.hangups_done("call_1".into()).await.unwrap();
    assert!(ledger.unfinished_calls().await.unwrap().is_empty());
    let released = ledger
        .recently_released_ports(T0, T0 + 30_000)
        .await
        .unwrap();
    assert_eq!(released.len(), 2, "{released:?}");
}

async fn a_stripe_event_applies_once_whichever_node_receives_it(backend: Backend) {
    let ledger = support::open(backend).await;
    let other_node = support::reopen(&ledger).await;
    let event = serde_json::json!({"object": "payment_intent", "id": "pi_x", "status": "canceled"});
    let (a, b) = tokio::join!(
        ledger.apply_stripe_event(
            "evt_1".into(),
            "payment_intent.canceled".into(),
            event.clone(),
            T0
        ),
        other_node.apply_stripe_event(
            "evt_1".into(),
            "payment_intent.canceled".into(),
            event.clone(),
            T0
        ),
    );
    let fresh = [a.unwrap(), b.unwrap()];
    assert_eq!(fresh.iter().filter(|f| **f).count(), 1, "{fresh:?}");
    assert!(
        !ledger
            .apply_stripe_event("evt_1".into(), "payment_intent.canceled".into(), event, T0)
            .await
            .unwrap()
    );
    other_node.close().await;
}

/// Books `booking_id` on `called` (with a card when `card`), begins call
/// `id` to it and routes it there; the cap and whether there is a card.
async fn routed_call(
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
    let (route, cap, has_card) = ledger
        .route_and_claim(id.into(), Some(called.into()), T0, first)
        .await
        .unwrap();
    assert_eq!(route, Route::Booking(booking_id.into()));
    (cap, has_card)
}

/// Starts a talking call on `ledger`'s node with its dialogs stored.
async fn talking_call(ledger: &Ledger, id: &str, booking_id: &str, called: &str) {
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

async fn nodes_heartbeat_and_are_listed_with_their_calls(backend: Backend) {
    let ledger = support::open(backend).await;
    let a = ledger.for_node("tb-a");
    let b = support::reopen(&ledger).await.for_node("tb-b");
    a.heartbeat(T0, false).await.unwrap();
    b.heartbeat(T0 + 5, true).await.unwrap();
    talking_call(&a, "call_1", "bk_1", "+81312345678").await;
    let nodes = a.nodes().await.unwrap();
    let summary: Vec<(&str, bool, i64)> = nodes
        .iter()
        .map(|n| (n.name.as_str(), n.draining, n.open_calls))
        .collect();
    assert_eq!(summary, [("tb-a", false, 1), ("tb-b", true, 0)]);
    assert!(
        nodes.iter().all(|n| (0..5_000).contains(&n.silent_ms)),
        "{nodes:?}"
    );
    assert_eq!(nodes[1].started_ms, T0 + 5);
    b.close().await;
}

async fn a_silent_nodes_calls_are_taken_over_once(backend: Backend) {
    let ledger = support::open(backend).await;
    let silent = ledger.for_node("tb-a");
    let b = support::reopen(&ledger).await.for_node("tb-b");
    let c = support::reopen(&ledger).await.for_node("tb-c");
    silent.heartbeat(T0, false).await.unwrap();
    talking_call(&silent, "call_1", "bk_1", "+81312345678").await;
    talking_call(&silent, "call_2", "bk_2", "+81399999999").await;
    let timeout = std::time::Duration::from_millis(400);

    // Not silent yet: nothing happens.
    b.heartbeat(T0, false).await.unwrap();
    assert!(
        b.take_over_silent_nodes(timeout, T0 + 40_000)
            .await
            .unwrap()
            .is_empty()
    );

    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let (by_b, by_c) = tokio::join!(
        b.take_over_silent_nodes(timeout, T0 + 40_000),
        c.take_over_silent_nodes(timeout, T0 + 40_000),
    );
    let (by_b, by_c) = (by_b.unwrap(), by_c.unwrap());
    let closed: usize = by_b.iter().chain(&by_c).map(|t| t.closed).sum();
    assert_eq!(closed, 2, "b: {by_b:?}\nc: {by_c:?}");
    let taken = by_b.iter().chain(&by_c).next().unwrap();
    assert_eq!(taken.node, "tb-a");
    assert!(taken.silent_ms >= 400, "{taken:?}");
    // The taker owes both parties a BYE from the stored dialogs; the
    // relay ports were the silent node's.
    let calls: Vec<_> = by_b
        .iter()
        .chain(&by_c)
        .flat_map(|t| t.calls.iter())
        .collect();
    assert_eq!(calls.len(), 2);
    assert!(
        calls
            .iter()
            .all(|c| c.dialogs.len() == 2 && c.rtp_ports.is_empty())
    );

    for id in ["call_1", "call_2"] {
        let record = b.call(id.into()).await.unwrap().unwrap();
        assert_eq!(record.end_reason.as_deref(), Some("recovered"));
        assert_eq!(record.talk_ms, Some(30_000), "to the last checkpoint");
        assert_eq!(record.amount, Some(150));
        let capture_rows = record
            .settlements
            .iter()
            .filter(|s| s.operation == "capture")
            .count();
        assert_eq!(capture_rows, 0, "no card, nothing to capture");
        assert!(
            record.events.iter().any(|e| e
                .detail
                .as_deref()
                .is_some_and(|d| d.contains("fell silent"))),
            "{:?}",
            record.events
        );
    }
    // Taken once: nobody takes them again, and the silent node, back
    // late, neither closes nor rates them again, nor re-opens their status.
    assert!(
        b.take_over_silent_nodes(timeout, T0 + 50_000)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        c.take_over_silent_nodes(timeout, T0 + 50_000)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        silent
            .close_call("call_1".into(), talked(90_000), T0 + 91_000)
            .await
            .unwrap(),
        None
    );
    silent
        .record_event(
            "call_1".into(),
            CallStatus::InProgress,
            None,
            None,
            T0 + 92_000,
        )
        .await
        .unwrap();
    let record = b.call("call_1".into()).await.unwrap().unwrap();
    assert_eq!(
        (record.amount, record.status),
        (Some(150), CallStatus::Completed)
    );
    // Its own restart finds nothing of its own to recover or hang up,
    // but keeps the ports the taker is still hanging up out of use.
    assert_eq!(silent.recover_open_calls(T0 + 93_000).await.unwrap(), 0);
    assert!(silent.unfinished_calls().await.unwrap().is_empty());
    let held = silent
        .recently_released_ports(T0 + 93_000, T0 + 93_000)
        .await
        .unwrap();
    assert_eq!(held.len(), 4, "{held:?}");
    // The taker's own restart would find the hang-ups still owed.
    let taker = if by_b.is_empty() { &c } else { &b };
    assert_eq!(taker.unfinished_calls().await.unwrap().len(), 2);
    b.close().await;
    c.close().await;
}

async fn a_settlement_row_is_claimed_by_one_node(backend: Backend) {
    let ledger = support::open(backend).await;
    let a = ledger.for_node("tb-a");
    let b = support::reopen(&ledger).await.for_node("tb-b");
    // Fee holds due: one row per booking with a fee and a card.
    for n in 0..6 {
        let id = format!("bk_{n}");
        a.create_booking(
            id.clone(),
            booking(&id, "+81312345678", true, Some(500)),
            T0,
        )
        .await
        .unwrap();
    }
    let (claimed_a, claimed_b) = tokio::join!(
        a.claim_due_settlements(T0, true),
        b.claim_due_settlements(T0, true),
    );
    let (claimed_a, claimed_b) = (claimed_a.unwrap(), claimed_b.unwrap());
    let mut ids: Vec<&str> = claimed_a
        .iter()
        .chain(&claimed_b)
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(ids.len(), 6, "a: {claimed_a:?}\nb: {claimed_b:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "a row was claimed twice");
    // Claimed rows are not due for the other node, and only the claimant
    // may mark one sent.
    assert!(
        b.claim_due_settlements(T0, true)
            .await
            .unwrap()
            .iter()
            .all(|s| claimed_b.iter().any(|c| c.id == s.id))
    );
    if let Some(row) = claimed_a.first() {
        assert!(!b.mark_sent(row.id.clone(), T0).await.unwrap());
        assert!(a.mark_sent(row.id.clone(), T0).await.unwrap());
        a.conclude_settlement(
            row.id.clone(),
            SettlementState::Failed,
            None,
            Some("declined".into()),
            None,
            T0,
        )
        .await
        .unwrap();
    }
    b.close().await;
}

async fn a_lease_is_held_by_one_node_until_it_lapses(backend: Backend) {
    let ledger = support::open(backend).await;
    let a = ledger.for_node("tb-a");
    let b = support::reopen(&ledger).await.for_node("tb-b");
    let ttl = std::time::Duration::from_millis(400);
    let (got_a, got_b) = tokio::join!(
        a.hold_lease("reconciler", ttl),
        b.hold_lease("reconciler", ttl)
    );
    let (got_a, got_b) = (got_a.unwrap(), got_b.unwrap());
    assert!(got_a ^ got_b, "exactly one holds it: a {got_a}, b {got_b}");
    let (holder, other) = if got_a { (&a, &b) } else { (&b, &a) };
    assert!(
        holder.hold_lease("reconciler", ttl).await.unwrap(),
        "renewed"
    );
    assert!(!other.hold_lease("reconciler", ttl).await.unwrap());
    assert!(
        other.hold_lease("another", ttl).await.unwrap(),
        "leases are by name"
    );
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert!(other.hold_lease("reconciler", ttl).await.unwrap(), "lapsed");
    assert!(!holder.hold_lease("reconciler", ttl).await.unwrap());
    b.close().await;
}

/// Two nodes (each with a pool of threads) adding events to one call at
/// the same instant, as the call's node and a Stripe webhook received on
/// another node do: every event lands, numbered 1, 2, 3, ... with no
/// number taken twice.
async fn events_added_at_once_by_two_nodes_are_numbered_in_turn(backend: Backend) {
    let ledger = support::open(backend).await;
    let other = support::reopen(&ledger).await;
    talking_call(&ledger, "call_ev", "bk_ev", "+815000000077").await;
    let before = ledger
        .call("call_ev".into())
        .await
        .unwrap()
        .unwrap()
        .events
        .len();
    let writes: Vec<_> = (0..40)
        .map(|n| {
            let node = if n % 2 == 0 {
                ledger.clone()
            } else {
                other.clone()
            };
            tokio::spawn(async move {
                node.record_event(
                    "call_ev".into(),
                    CallStatus::InProgress,
                    None,
                    Some(format!("event {n}")),
                    T0 + 2_000 + n,
                )
                .await
            })
        })
        .collect();
    for write in writes {
        write.await.unwrap().unwrap();
    }
    let record = ledger.call("call_ev".into()).await.unwrap().unwrap();
    let seqs: Vec<i64> = record.events.iter().map(|e| e.seq).collect();
    let expected: Vec<i64> = (1..=i64::try_from(before + 40).unwrap()).collect();
    assert_eq!(seqs, expected);
    other.close().await;
}

/// The outbox: events written with the changes they report, numbered
/// per booking, one delivery per subscribed endpoint, claimed by one node
/// at a time, retried when due, redelivered by hand.
async fn events_are_written_with_their_change_and_delivered_once_each(backend: Backend) {
    use tollbridge_daemon::ledger::{DeliveryOutcome, WebhookEndpoint};
    let ledger = support::open(backend).await;
    let other = support::reopen(&ledger).await.for_node("tb-b");
    let ledger_a = ledger.for_node("tb-a");
    ledger
        .set_webhook_endpoints(
            vec![
                WebhookEndpoint {
                    name: "all".into(),
                    url: "https://a.example/h".into(),
                    types: vec![],
                },
                WebhookEndpoint {
                    name: "ends".into(),
                    url: "https://b.example/h".into(),
                    types: vec!["call.ended".into()],
                },
            ],
            T0,
        )
        .await
        .unwrap();
    talking_call(&ledger, "call_o", "bk_o", "+815000000088").await;
    ledger
        .close_call("call_o".into(), talked(30_000), T0 + 31_000)
        .await
        .unwrap();
    let events = ledger
        .events(Some("bk_o".into()), None, None, 100)
        .await
        .unwrap();
    let kinds: Vec<(&str, i64)> = events
        .iter()
        .map(|e| (e.kind.as_str(), e.sequence))
        .collect();
    assert_eq!(
        kinds,
        [
            ("call.answered", 1),
            ("call.ended", 2),
            ("booking.completed", 3)
        ]
    );
    let ended = &events[1];
    assert_eq!(ended.body["data"]["billed_seconds"], 30, "{}", ended.body);
    assert_eq!(
        ended.body["data"]["reason"], "caller-hangup",
        "{}",
        ended.body
    );
    assert_eq!(ended.body["booking"], "bk_o");
    assert_eq!(ended.body["sequence"], 2);
    let endpoints: Vec<&str> = ended
        .deliveries
        .iter()
        .map(|d| d.endpoint.as_str())
        .collect();
    assert_eq!(endpoints, ["all", "ends"]);
    assert_eq!(
        events[0].deliveries.len(),
        1,
        "only 'all' takes call.answered"
    );

    // Four deliveries, claimed once: the other node finds none.
    let now = T0 + 40_000;
    let due = ledger_a.claim_due_deliveries(now, 100).await.unwrap();
    assert_eq!(due.len(), 4);
    assert!(
        other
            .claim_due_deliveries(now, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let first = due[0].clone();
    assert!(first.body.contains(&first.event_id));
    ledger_a
        .delivery_attempted(
            first.id.clone(),
            DeliveryOutcome::Retry {
                status: Some(500),
                error: "the receiver answered 500".into(),
                next_attempt_ms: now + 10_000,
            },
            now,
        )
        .await
        .unwrap();
    for delivery in &due[1..] {
        ledger_a
            .delivery_attempted(
                delivery.id.clone(),
                DeliveryOutcome::Delivered { status: 204 },
                now,
            )
            .await
            .unwrap();
    }
    assert_eq!(ledger.pending_deliveries().await.unwrap(), 1);
    assert!(
        other
            .claim_due_deliveries(now + 5_000, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let again = other.claim_due_deliveries(now + 10_000, 100).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].id.as_str(), again[0].attempts),
        (first.id.as_str(), 1)
    );
    other
        .delivery_attempted(
            again[0].id.clone(),
            DeliveryOutcome::Delivered { status: 200 },
            now + 10_000,
        )
        .await
        .unwrap();
    assert_eq!(ledger.pending_deliveries().await.unwrap(), 0);
    let shown = ledger.event(first.event_id.clone()).await.unwrap().unwrap();
    let delivery = shown
        .deliveries
        .iter()
        .find(|d| d.endpoint == first.endpoint)
        .unwrap();
    assert_eq!(
        (
            delivery.state.as_str(),
            delivery.attempts,
            delivery.last_status
        ),
        ("delivered", 2, Some(200))
    );

    // Redelivered by hand: due again at once, to each endpoint.
    assert_eq!(
        ledger
            .redeliver(ended.id.clone(), now + 20_000)
            .await
            .unwrap(),
        Some(2)
    );
    assert_eq!(
        ledger_a
            .claim_due_deliveries(now + 20_000, 100)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        ledger.redeliver("evt_none".into(), now).await.unwrap(),
        None
    );
    // An endpoint dropped from the config: its pending deliveries fail.
    ledger.set_webhook_endpoints(vec![], now).await.unwrap();
    assert!(
        ledger_a
            .claim_due_deliveries(now + 200_000, 100)
            .await
            .unwrap()
            .is_empty()
    );
    other.close().await;
}

on_both_backends!(
    events_are_written_with_their_change_and_delivered_once_each,
    events_added_at_once_by_two_nodes_are_numbered_in_turn,
    nodes_heartbeat_and_are_listed_with_their_calls,
    a_silent_nodes_calls_are_taken_over_once,
    a_settlement_row_is_claimed_by_one_node,
    a_lease_is_held_by_one_node_until_it_lapses,
    the_schema_enforces_its_rules,
    values_of_every_kind_round_trip,
    a_booking_is_created_read_listed_and_canceled,
    a_call_is_routed_metered_closed_and_settled_in_step,
    two_calls_for_one_booking_claim_it_once,
    a_crash_leaves_calls_closed_at_their_checkpoint,
    a_stripe_event_applies_once_whichever_node_receives_it,
);

/// The two schemas, table by table and column by column: same names,
/// same kinds (integer, text, fraction), same nullability.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_schemas_have_the_same_tables_and_columns() {
    let sqlite = support::open(Backend::Sqlite).await;
    let postgres = support::open(Backend::Postgres).await;
    let from_sqlite = sqlite
        .run(|db| {
            db.query(
                "SELECT m.name, p.name, upper(p.type), p.\"notnull\" OR p.pk > 0
                 FROM sqlite_master m JOIN pragma_table_info(m.name) p
                 WHERE m.type = 'table' ORDER BY m.name, p.name",
                &[],
            )
        })
        .await
        .unwrap();
    let from_postgres = postgres
        .run(|db| {
            db.query(
                "SELECT table_name::text, column_name::text, upper(data_type::text), is_nullable = 'NO'
                 FROM information_schema.columns
                 WHERE table_schema = 'public' AND table_name <> 'schema_version'
                 ORDER BY table_name, column_name",
                &[],
            )
        })
        .await
        .unwrap();
    let kind = |sql_type: &str| match sql_type {
        "INTEGER" | "BIGINT" => "integer",
        "TEXT" => "text",
        "REAL" | "DOUBLE PRECISION" => "fraction",
        other => panic!("a column of type {other}"),
    };
    let columns =
        |rows: &[tollbridge_daemon::ledger::db::Row]| -> Vec<(String, String, &'static str, bool)> {
            rows.iter()
                .map(|r| {
                    (
                        r.text(0).unwrap(),
                        r.text(1).unwrap(),
                        kind(&r.text(2).unwrap()),
                        r.flag(3).unwrap(),
                    )
                })
                .collect()
        };
    let (from_sqlite, from_postgres) = (columns(&from_sqlite), columns(&from_postgres));
    assert!(from_sqlite.len() > 60, "{from_sqlite:?}");
    assert_eq!(from_sqlite, from_postgres);
}

/// Several nodes starting at once on an empty database: one migrates,
/// the others wait for it and find the schema current.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_postgresql_once() {
    let url = tollbridge_e2e::postgres::PostgresServer::shared().create_database();
    let opening: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::task::spawn_blocking(move || Ledger::open_postgres(&url, None, 1))
        })
        .collect();
    for open in opening {
        let ledger = open.await.unwrap().unwrap();
        ledger.ping().await.unwrap();
        ledger.close().await;
    }
    let server = tollbridge_e2e::postgres::PostgresServer::shared();
    let database = url.split('/').nth(3).unwrap().split('?').next().unwrap();
    assert_eq!(
        server.psql(database, "SELECT version FROM schema_version"),
        "6"
    );
}

/// A PostgreSQL ledger written by a newer Tollbridge is refused, naming
/// both versions; a wrong URL or an unreachable server names the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_refuses_what_it_cannot_use() {
    let server = tollbridge_e2e::postgres::PostgresServer::shared();
    let url = server.create_database();
    let database = url
        .split('/')
        .nth(3)
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let opened = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || Ledger::open_postgres(&url, None, 1))
            .await
            .unwrap()
            .unwrap()
    };
    opened.close().await;
    server.psql(&database, "UPDATE schema_version SET version = 99");
    let attempts = [
        url.clone(),
        "postgres://nobody@127.0.0.1:1/none?connect_timeout=1".to_owned(),
        "postgres://x@host/db?sslmode=bogus".to_owned(),
    ];
    let mut errors = Vec::new();
    for url in attempts {
        let error = tokio::task::spawn_blocking(move || Ledger::open_postgres(&url, None, 1))
            .await
            .unwrap()
            .unwrap_err();
        errors.push(error);
    }
    assert!(
        matches!(
            errors[0],
            LedgerError::TooNew {
                found: 99,
                supported: 6,
                ..
            }
        ),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].to_string().contains("127.0.0.1:1"),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].to_string().contains("database.url"),
        "{}",
        errors[2]
    );
}

/// The way production servers are set up (docs/cluster.md): a role that
/// owns its database and logs in with a SCRAM password. The ledger
/// migrates and works as that role; a wrong password or none is refused
/// at open, naming the server and never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_as_an_owner_role_with_a_password() {
    let server = tollbridge_e2e::postgres::PostgresServer::shared();
    let url = server.create_role_and_database("tb_owner", "right-horse-battery");
    let open = |password: Option<&'static str>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || Ledger::open_postgres(&url, password, 1))
    };
    for password in [Some("wrong-horse-battery"), None] {
        let error = open(password).await.unwrap().unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, LedgerError::Open { .. }), "{text}");
        assert!(text.contains("tb_owner"), "{text}");
        assert!(!text.contains("horse-battery"), "{text}");
    }
    let ledger = open(Some("right-horse-battery")).await.unwrap().unwrap();
    ledger.ping().await.unwrap();
    ledger.heartbeat(T0, false).await.unwrap();
    assert_eq!(ledger.nodes().await.unwrap().len(), 1);
    ledger.close().await;
    assert_eq!(
        server.psql("tb_owner", "SELECT version FROM schema_version"),
        "6"
    );
    assert_eq!(
        server.psql(
            "tb_owner",
            "SELECT tableowner FROM pg_tables WHERE tablename = 'calls'"
        ),
        "tb_owner"
    );
}
