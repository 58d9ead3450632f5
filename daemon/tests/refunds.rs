//! Refunds and disputes in the ledger, the same on both backends: a
//! refund is checked against what was captured less every refund
//! succeeded or on its way (under the call's row lock, so two at once
//! cannot give back more than was taken); the same refund id asked again
//! is the same refund; Stripe's `charge.refunded` and `charge.dispute.*`
//! become the call's refunded amount and dispute state, and events.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use serde_json::json;
use support::Backend;
use support::fixtures::*;
use tollbridge_billing::settlement::RefundRefusal;
use tollbridge_daemon::ledger::{CallStatus, Ledger, NewRefund, RefundRefused, SettlementState};

const CALLED: &str = "+81312345678";

/// Refund `id` done at Stripe as `stripe_id`.
async fn refund_succeeded(ledger: &Ledger, id: &str, stripe_id: &str) {
    ledger
        .refund_concluded(
            id.into(),
            SettlementState::Succeeded,
            Some(stripe_id.into()),
            None,
            None,
            T0 + 101_000,
        )
        .await
        .unwrap();
}

/// A call on `bk_1` of 62 s at ¥300 a minute in 6 s increments (¥330),
/// held on `pi_1` and captured.
async fn captured_call(ledger: &Ledger) {
    routed_call(ledger, "call_1", "bk_1", CALLED, true).await;
    held(ledger).await;
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
        .close_call("call_1".into(), talked(61_500), T0 + 62_500)
        .await
        .unwrap();
    let due = ledger
        .claim_due_settlements(T0 + 62_500, false)
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    ledger
        .conclude_settlement(
            due[0].facts.id.clone(),
            SettlementState::Succeeded,
            Some("pi_1".into()),
            None,
            None,
            T0 + 63_000,
        )
        .await
        .unwrap();
}

fn refund(id: &str, amount: Option<i64>) -> NewRefund {
    NewRefund {
        id: id.into(),
        amount,
        reason: Some("requested_by_customer".into()),
    }
}

async fn ask(ledger: &Ledger, call: &str, new: NewRefund) -> Result<(i64, bool), RefundRefused> {
    ledger
        .create_refund(call.into(), new, T0 + 100_000)
        .await
        .unwrap()
        .map(|(row, created)| (row.facts.amount, created))
}

/// Delivers a Stripe event to the ledger; true when it was new.
async fn deliver(
    ledger: &Ledger,
    id: &str,
    kind: &str,
    object: serde_json::Value,
    at: i64,
) -> bool {
    ledger
        .apply_stripe_event(id.into(), kind.into(), object, at)
        .await
        .unwrap()
}

/// What `call_1`'s record says was refunded.
async fn refunded(ledger: &Ledger) -> i64 {
    ledger
        .call("call_1".into())
        .await
        .unwrap()
        .unwrap()
        .refunded_amount
}

async fn events_of(ledger: &Ledger, kind: &str) -> Vec<serde_json::Value> {
    ledger
        .events(Some("bk_1".into()), Some(kind.into()), None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.body["data"].clone())
        .collect()
}

async fn refunds_never_give_back_more_than_was_captured(backend: Backend) {
    let ledger = support::open(backend).await;
    captured_call(&ledger).await;
    let call = ledger.call("call_1".into()).await.unwrap().unwrap();
    assert_eq!((call.amount, call.charged), (Some(330), Some(330)));

    // Nothing to refund yet on another call; no such call.
    routed_call(&ledger, "call_2", "bk_2", "+81399999999", true).await;
    assert_eq!(
        ask(&ledger, "call_2", refund("rf_a", None)).await,
        Err(RefundRefused::NotCaptured)
    );
    assert_eq!(
        ask(&ledger, "call_none", refund("rf_a", None)).await,
        Err(RefundRefused::NoCall)
    );

    // ¥100, then ¥200 of the ¥330; ¥31 more is over by one.
    assert_eq!(
        ask(&ledger, "call_1", refund("rf_1", Some(100))).await,
        Ok((100, true))
    );
    assert_eq!(
        ask(&ledger, "call_1", refund("rf_2", Some(200))).await,
        Ok((200, true))
    );
    assert_eq!(
        ask(&ledger, "call_1", refund("rf_3", Some(31))).await,
        Err(RefundRefused::Amount(RefundRefusal::AboveRefundable {
            refundable: 30
        }))
    );
    // The same id again is the same refund; with another amount, refused.
    assert_eq!(
        ask(&ledger, "call_1", refund("rf_1", Some(100))).await,
        Ok((100, false))
    );
    assert_eq!(
        ask(&ledger, "call_1", refund("rf_1", None)).await,
        Ok((100, false))
    );
    assert_eq!(
        ask(&ledger, "call_1", refund("rf_1", Some(99))).await,
        Err(RefundRefused::IdTaken("rf_1".into()))
    );
    // A failed refund gives its amount back to what may be refunded.
    let rows = ledger
        .claim_due_settlements(T0 + 100_000, false)
        .await
        .unwrap();
    let keys: Vec<&str> = rows.iter().map(|r| r.facts.key.as_str()).collect();
    assert_eq!(keys, ["tb:refund:rf_1", "tb:refund:rf_2"]);
    ledger
        .refund_concluded(
            "rf_2".into(),
            SettlementState::Failed,
            None,
            Some("declined".into()),
            None,
            T0 + 101_000,
        )
        .await
        .unwrap();
    refund_succeeded(&ledger, "rf_1", "re_1").await;
    assert_eq!(
        ask(&ledger, "call_1", refund("rf_4", None)).await,
        Ok((230, true))
    );
    assert_eq!(
        ask(&ledger, "call_1", refund("rf_5", None)).await,
        Err(RefundRefused::Amount(RefundRefusal::NothingLeft))
    );
    let call = ledger.call("call_1".into()).await.unwrap().unwrap();
    assert_eq!(call.refunded_amount, 100, "only what succeeded");
    let refund_rows: Vec<(&str, &str, i64, Option<&str>)> = call
        .settlements
        .iter()
        .filter(|s| s.operation == "refund")
        .map(|s| {
            (
                s.id.as_str(),
                s.state.as_str(),
                s.amount,
                s.stripe_object.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        refund_rows,
        [
            ("rf_1", "succeeded", 100, Some("re_1")),
            ("rf_2", "failed", 200, None),
            ("rf_4", "pending", 230, None)
        ]
    );
    let succeeded = events_of(&ledger, "refund.succeeded").await;
    assert_eq!(succeeded.len(), 1, "{succeeded:?}");
    assert_eq!(
        (
            &succeeded[0]["refund"],
            &succeeded[0]["amount"],
            &succeeded[0]["stripe_refund"]
        ),
        (&json!("rf_1"), &json!(100), &json!("re_1"))
    );
    assert_eq!(succeeded[0]["reason"], "requested_by_customer");
    let failed = events_of(&ledger, "refund.failed").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["error"], "declined");
}

async fn two_refunds_at_once_cannot_both_take_the_whole_charge(backend: Backend) {
    let ledger = support::open(backend).await;
    captured_call(&ledger).await;
    let asks = (0..8).map(|n| {
        let ledger = ledger.clone();
        tokio::spawn(async move { ask(&ledger, "call_1", refund(&format!("rf_{n}"), None)).await })
    });
    let mut granted = 0;
    for asked in asks {
        match asked.await.unwrap() {
            Ok((330, true)) => granted += 1,
            Err(RefundRefused::Amount(RefundRefusal::NothingLeft)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(granted, 1);
}

async fn stripe_says_what_was_refunded_and_disputed(backend: Backend) {
    let ledger = support::open(backend).await;
    captured_call(&ledger).await;
    assert_eq!(
        ask(&ledger, "call_1", refund("rf_1", Some(100))).await,
        Ok((100, true))
    );
    refund_succeeded(&ledger, "rf_1", "re_1").await;
    let charge = |refunded: i64| json!({"id": "ch_1", "object": "charge", "payment_intent": "pi_1", "amount_refunded": refunded});
    // Stripe's word for our own refund adds nothing and tells nothing new.
    assert!(
        deliver(
            &ledger,
            "evt_r1",
            "charge.refunded",
            charge(100),
            T0 + 102_000
        )
        .await
    );
    assert_eq!(refunded(&ledger).await, 100);
    assert_eq!(events_of(&ledger, "refund.succeeded").await.len(), 1);
    // ¥50 more refunded in Stripe's dashboard: counted and told, once.
    for _ in 0..2 {
        deliver(
            &ledger,
            "evt_r2",
            "charge.refunded",
            charge(150),
            T0 + 103_000,
        )
        .await;
    }
    assert_eq!(refunded(&ledger).await, 150);
    let told = events_of(&ledger, "refund.succeeded").await;
    assert_eq!(told.len(), 2, "{told:?}");
    assert_eq!(
        (&told[1]["amount"], &told[1]["source"]),
        (&json!(50), &json!("stripe"))
    );
    // What is left to refund counts the dashboard's refund too.
    assert_eq!(
        ask(&ledger, "call_1", refund("rf_2", None)).await,
        Ok((180, true))
    );

    // A dispute opens and is won.
    let dispute = |status: &str| {
        json!({"id": "du_1", "object": "dispute", "charge": "ch_1", "payment_intent": "pi_1",
               "amount": 330, "status": status, "reason": "fraudulent"})
    };
    for (id, kind, status) in [
        ("evt_d1", "charge.dispute.created", "needs_response"),
        ("evt_d2", "charge.dispute.updated", "under_review"),
        ("evt_d3", "charge.dispute.closed", "won"),
    ] {
        ledger
            .apply_stripe_event(id.into(), kind.into(), dispute(status), T0 + 104_000)
            .await
            .unwrap();
        let call = ledger.call("call_1".into()).await.unwrap().unwrap();
        let seen = call.dispute.expect("a dispute");
        assert_eq!(
            (seen.id.as_deref(), seen.status.as_str(), seen.amount),
            (Some("du_1"), status, Some(330))
        );
        if status == "under_review" {
            let (_, disputes) = ledger.refund_and_dispute_counts().await.unwrap();
            assert_eq!(disputes, [("under_review".to_owned(), 1)]);
        }
    }
    let opened = events_of(&ledger, "dispute.created").await;
    let closed = events_of(&ledger, "dispute.closed").await;
    assert_eq!((opened.len(), closed.len()), (1, 1));
    assert_eq!(
        (&opened[0]["status"], &closed[0]["status"]),
        (&json!("needs_response"), &json!("won"))
    );
}

/// Stripe's later word on a refund: one taken as done that then failed
/// (a card refund that bounced) is failed after all and its amount may be
/// refunded again; one whose answer was lost is concluded from it; an
/// event for a refund not ours changes nothing; each event applies once.
async fn a_refund_that_fails_later_gives_its_amount_back(backend: Backend) {
    let ledger = support::open(backend).await;
    captured_call(&ledger).await;
    assert_eq!(
        ask(&ledger, "call_1", refund("rf_1", Some(100))).await,
        Ok((100, true))
    );
    refund_succeeded(&ledger, "rf_1", "re_1").await;
    assert_eq!(refunded(&ledger).await, 100);
    let updated = |id: &str, ours: &str, status: &str| {
        json!({"id": id, "object": "refund", "amount": 100, "payment_intent": "pi_1", "status": status,
               "failure_reason": "expired_or_canceled_card", "metadata": {"refund": ours}})
    };
    for _ in 0..2 {
        deliver(
            &ledger,
            "evt_f1",
            "charge.refund.updated",
            updated("re_1", "rf_1", "failed"),
            T0 + 102_000,
        )
        .await;
    }
    let call = ledger.call("call_1".into()).await.unwrap().unwrap();
    assert_eq!(call.refunded_amount, 0);
    let row = call.settlements.iter().find(|s| s.id == "rf_1").unwrap();
    assert_eq!(row.state, "failed");
    assert!(
        row.last_error
            .as_deref()
            .unwrap()
            .contains("expired_or_canceled_card"),
        "{row:?}"
    );
    let failed = events_of(&ledger, "refund.failed").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    // The whole charge may be refunded again; this one's answer is lost,
    // and Stripe's event says it succeeded.
    assert_eq!(
        ask(&ledger, "call_1", refund("rf_2", None)).await,
        Ok((330, true))
    );
    deliver(
        &ledger,
        "evt_f2",
        "refund.updated",
        updated("re_2", "rf_2", "succeeded"),
        T0 + 103_000,
    )
    .await;
    let call = ledger.call("call_1".into()).await.unwrap().unwrap();
    let row = call.settlements.iter().find(|s| s.id == "rf_2").unwrap();
    assert_eq!(
        (row.state.as_str(), row.stripe_object.as_deref()),
        ("succeeded", Some("re_2"))
    );
    assert_eq!(call.refunded_amount, 330);
    // Not ours: nothing changes.
    deliver(
        &ledger,
        "evt_f3",
        "charge.refund.updated",
        updated("re_9", "rf_9", "failed"),
        T0 + 104_000,
    )
    .await;
    assert_eq!(refunded(&ledger).await, 330);
}

/// A call cheaper than Stripe's minimum under `cancel` (2 s in 6 s
/// increments at ¥300 a minute: ¥30, under ¥50): rated, released,
/// and charged nothing; while its release is on its way, `charged` is
/// not known yet.
async fn a_call_under_the_minimum_is_rated_but_charged_nothing(backend: Backend) {
    let ledger = support::open(backend).await;
    routed_call(&ledger, "call_1", "bk_1", CALLED, true).await;
    held(&ledger).await;
    ledger
        .close_call("call_1".into(), talked(2_000), T0 + 3_000)
        .await
        .unwrap();
    let settling = ledger.call("call_1".into()).await.unwrap().unwrap();
    assert_eq!((settling.amount, settling.charged), (Some(30), None));
    let due = ledger
        .claim_due_settlements(T0 + 3_000, false)
        .await
        .unwrap();
    assert_eq!(
        (due[0].facts.operation.as_str(), due[0].facts.amount),
        ("cancel", 0)
    );
    ledger
        .conclude_settlement(
            due[0].facts.id.clone(),
            SettlementState::Succeeded,
            None,
            None,
            None,
            T0 + 4_000,
        )
        .await
        .unwrap();
    let settled = ledger.call("call_1".into()).await.unwrap().unwrap();
    assert_eq!((settled.amount, settled.charged), (Some(30), Some(0)));
}

/// A booking taken by an account that settles in another currency keeps
/// the least charge it was booked with (¥80): a ¥60 call under
/// `charge-minimum` is charged ¥80, and a hold is never below it.
async fn the_accounts_least_charge_is_the_one_the_booking_was_made_with(backend: Backend) {
    let ledger = support::open(backend).await;
    let mut valid = booking("bk_1", CALLED, true, None);
    valid.minimum_charge = 80;
    valid.booking.tariff.under_minimum = "charge-minimum".into();
    valid.booking.cap_seconds = 10;
    ledger
        .create_booking("bk_1".into(), valid, T0)
        .await
        .unwrap();
    ledger
        .begin_call(new_call("call_1", CALLED), T0)
        .await
        .unwrap();
    ledger
        .route_and_claim("call_1".into(), Some(CALLED.into()), T0, first)
        .await
        .unwrap();
    let (hold, terms) = ledger
        .begin_hold("call_1".into(), "bk_1".into(), T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (terms.remaining_seconds, hold.facts.amount),
        (10, 80),
        "10 s (12 s billed) is ¥60: held ¥80"
    );
    ledger
        .hold_succeeded(hold.facts.id, "pi_1".into(), None, T0 + 10)
        .await
        .unwrap();
    let priced = ledger
        .close_call("call_1".into(), talked(10_000), T0 + 11_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(priced.amount, 60, "12 s billed at ¥300 a minute");
    let due = ledger
        .claim_due_settlements(T0 + 11_000, false)
        .await
        .unwrap();
    assert_eq!(
        (due[0].facts.operation.as_str(), due[0].facts.amount),
        ("capture", 80)
    );
}

on_both_backends!(
    a_refund_that_fails_later_gives_its_amount_back,
    the_accounts_least_charge_is_the_one_the_booking_was_made_with,
    a_call_under_the_minimum_is_rated_but_charged_nothing,
    refunds_never_give_back_more_than_was_captured,
    two_refunds_at_once_cannot_both_take_the_whole_charge,
    stripe_says_what_was_refunded_and_disputed,
);
