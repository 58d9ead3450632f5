//! Extension blocks in the ledger, on both backends: each block's hold is
//! its own row and key, the call's cap moves with it, and after the call
//! the rated amount is captured across the holds in order, what is left
//! released, a hold that lands after the call released whole.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use support::Backend;
use tollbridge_billing::settlement::{Operation, RefundRefusal};
use tollbridge_daemon::bookings::model::Extension;
use tollbridge_daemon::calls::route::Route;
use tollbridge_daemon::ledger::{Ledger, NewRefund, RefundRefused, Routed, SettlementState};

use support::fixtures::*;

const CALLED: &str = "+81312345678";

/// A booking of 600 s at ¥300/min (6 s increments) that extends in 300 s
/// blocks up to 1,200 s, and a call routed to it whose first hold
/// (¥3,000, `pi_1`) succeeded.
async fn extending_call(ledger: &Ledger) -> Routed {
    let mut valid = booking("bk_1", CALLED, true, None);
    valid.booking.cap_seconds = 600;
    valid.booking.extension = Some(Extension {
        mode: "auto".into(),
        block_seconds: 300,
        max_seconds: 1_200,
    });
    ledger
        .create_booking("bk_1".into(), valid, T0)
        .await
        .unwrap();
    ledger
        .begin_call(new_call("call_1", CALLED), T0)
        .await
        .unwrap();
    let routed = ledger
        .route_and_claim("call_1".into(), Some(CALLED.into()), T0, first)
        .await
        .unwrap();
    assert_eq!(routed.route, Route::Booking("bk_1".into()));
    assert_eq!(held(ledger).await, 3_000);
    routed
}

/// Places block `block`'s hold and records its answer (`pi_...` or a
/// decline); its amount.
async fn block(ledger: &Ledger, block: u32, covered: u64, answer: Result<&str, &str>) -> i64 {
    let row = ledger
        .begin_extension_hold("call_1".into(), "bk_1".into(), block, covered, T0 + 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, SettlementState::Sent);
    assert_eq!(
        row.facts.key,
        format!("tb:call:call_1:authorize-{block}:v1")
    );
    match answer {
        Ok(intent) => ledger
            .hold_succeeded(row.facts.id, intent.into(), None, T0 + 110)
            .await
            .unwrap(),
        Err(why) => ledger
            .conclude_settlement(
                row.facts.id,
                SettlementState::Failed,
                None,
                Some(why.into()),
                None,
                T0 + 110,
            )
            .await
            .unwrap(),
    }
    ledger
        .record_extension(
            "call_1".into(),
            block,
            answer.map(|_| covered).map_err(str::to_owned),
            T0 + 120,
        )
        .await
        .unwrap();
    row.facts.amount
}

/// The call's after-call rows: (key less `tb:call:call_1:`, amount,
/// PaymentIntent); the key says the operation.
async fn after_call_rows(ledger: &Ledger) -> Vec<(String, i64, String)> {
    let record = ledger.call("call_1".into()).await.unwrap().unwrap();
    record
        .settlements
        .iter()
        .filter(|s| s.operation == "capture" || s.operation == "cancel")
        .map(|s| {
            (
                s.idempotency_key
                    .trim_start_matches("tb:call:call_1:")
                    .to_owned(),
                s.amount,
                s.payment_intent.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// An expected after-call row.
fn moved(key: &str, amount: i64, intent: &str) -> (String, i64, String) {
    (key.to_owned(), amount, intent.to_owned())
}

async fn the_rated_amount_is_captured_across_the_holds_in_order(backend: Backend) {
    let ledger = support::open(backend).await;
    let routed = extending_call(&ledger).await;
    let terms = routed
        .extension
        .expect("an auto booking with a card extends");
    assert_eq!((terms.block_seconds, terms.max_seconds), (300, 1_200));
    // Each block holds the price of its 300 s: ¥1,500.
    assert_eq!(block(&ledger, 2, 900, Ok("pi_2")).await, 1_500);
    assert_eq!(block(&ledger, 3, 1_200, Ok("pi_3")).await, 1_500);
    let record = ledger.call("call_1".into()).await.unwrap().unwrap();
    let held: i64 = record
        .settlements
        .iter()
        .filter(|s| s.operation == "authorize" && s.state == "succeeded")
        .map(|s| s.amount)
        .sum();
    assert_eq!(held, 6_000, "the three holds together");
    assert_eq!(record.payment_intent.as_deref(), Some("pi_1"));

    // 798 s talked (133 increments of 6 s): ¥3,990, from the first hold
    // whole and the second in part; the third released.
    let priced = ledger
        .close_call("call_1".into(), talked(798_000), T0 + 900_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(priced.amount, 3_990);
    assert_eq!(
        after_call_rows(&ledger).await,
        [
            moved("capture:v1", 3_000, "pi_1"),
            moved("capture-2:v1", 990, "pi_2"),
            moved("cancel-3:v1", 0, "pi_3"),
        ]
    );
    let extended = ledger
        .events(Some("bk_1".into()), Some("call.extended".into()), None, 10)
        .await
        .unwrap();
    let caps: Vec<i64> = extended
        .iter()
        .map(|e| e.body["data"]["cap_seconds"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(caps, [900, 1_200], "{extended:?}");
    // The record's cap is the last block's.
    let record = ledger.call("call_1".into()).await.unwrap().unwrap();
    assert_eq!(record.rating.map(|r| r.cap_seconds), Some(1_200));
}

async fn an_extended_calls_refunds_give_back_from_one_capture_each(backend: Backend) {
    let ledger = support::open(backend).await;
    extending_call(&ledger).await;
    block(&ledger, 2, 900, Ok("pi_2")).await;
    ledger
        .close_call("call_1".into(), talked(798_000), T0 + 900_000)
        .await
        .unwrap();
    let record = ledger.call("call_1".into()).await.unwrap().unwrap();
    for capture in record
        .settlements
        .iter()
        .filter(|s| s.operation == "capture")
    {
        ledger
            .conclude_settlement(
                capture.id.clone(),
                SettlementState::Succeeded,
                None,
                None,
                None,
                T0 + 901_000,
            )
            .await
            .unwrap();
    }
    let record = ledger.call("call_1".into()).await.unwrap().unwrap();
    assert_eq!(record.charged, Some(3_990), "¥3,000 + ¥990");
    let refund = |id: &str, amount: Option<i64>| NewRefund {
        id: id.into(),
        amount,
        reason: None,
    };
    let from = |row: (tollbridge_daemon::ledger::Settlement, bool)| {
        (
            row.0.facts.amount,
            row.0.facts.payment_intent.unwrap_or_default(),
        )
    };
    // Small enough for the latest capture: from it.
    let first = ledger
        .create_refund("call_1".into(), refund("rf_1", Some(500)), T0 + 902_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from(first), (500, "pi_2".to_owned()));
    // More than any one capture has left, not more than both: in parts.
    let spans = ledger
        .create_refund("call_1".into(), refund("rf_2", Some(3_200)), T0 + 903_000)
        .await
        .unwrap();
    assert_eq!(
        spans.err(),
        Some(RefundRefused::Amount(RefundRefusal::SpansCaptures {
            largest: 3_000
        }))
    );
    // All that is left, part by part: the latest first.
    let rest = ledger
        .create_refund("call_1".into(), refund("rf_3", None), T0 + 904_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from(rest), (490, "pi_2".to_owned()));
    let rest = ledger
        .create_refund("call_1".into(), refund("rf_4", None), T0 + 905_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from(rest), (3_000, "pi_1".to_owned()));
    let none = ledger
        .create_refund("call_1".into(), refund("rf_5", None), T0 + 906_000)
        .await
        .unwrap();
    assert_eq!(
        none.err(),
        Some(RefundRefused::Amount(RefundRefusal::NothingLeft))
    );
}

async fn where_the_first_hold_can_be_raised_blocks_raise_it_and_one_capture_takes_all(
    backend: Backend,
) {
    let ledger = support::open(backend).await;
    extending_call(&ledger).await;
    let first = ledger
        .call("call_1".into())
        .await
        .unwrap()
        .unwrap()
        .settlements[0]
        .id
        .clone();
    ledger.hold_is_raisable(first).await.unwrap();
    for (block, covered, total) in [(2, 900, 4_500), (3, 1_200, 6_000)] {
        let row = ledger
            .begin_extension_hold("call_1".into(), "bk_1".into(), block, covered, T0 + 100)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.facts.operation, Operation::Increment);
        assert_eq!(
            row.facts.key,
            format!("tb:call:call_1:increment-{block}:v1")
        );
        assert_eq!(row.facts.payment_intent.as_deref(), Some("pi_1"));
        assert_eq!(row.facts.amount, total, "the new total of the one hold");
        ledger
            .hold_succeeded(row.facts.id, "pi_1".into(), None, T0 + 110)
            .await
            .unwrap();
    }
    // 1,100 s: ¥5,500, all from the one raised hold.
    ledger
        .close_call("call_1".into(), talked(1_098_000), T0 + 1_200_000)
        .await
        .unwrap();
    assert_eq!(
        after_call_rows(&ledger).await,
        [moved("capture:v1", 5_490, "pi_1")]
    );
}

async fn a_declined_block_is_neither_captured_nor_released(backend: Backend) {
    let ledger = support::open(backend).await;
    extending_call(&ledger).await;
    block(&ledger, 2, 900, Ok("pi_2")).await;
    block(&ledger, 3, 1_200, Err("card_declined")).await;
    ledger
        .close_call("call_1".into(), talked(900_000), T0 + 950_000)
        .await
        .unwrap();
    assert_eq!(
        after_call_rows(&ledger).await,
        [
            moved("capture:v1", 3_000, "pi_1"),
            moved("capture-2:v1", 1_500, "pi_2"),
        ]
    );
    let failed = ledger
        .events(
            Some("bk_1".into()),
            Some("call.extension_failed".into()),
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].body["data"]["error"], "card_declined");
}

async fn a_block_held_after_the_call_ended_is_released_whole(backend: Backend) {
    let ledger = support::open(backend).await;
    extending_call(&ledger).await;
    let late = ledger
        .begin_extension_hold("call_1".into(), "bk_1".into(), 2, 900, T0 + 100)
        .await
        .unwrap()
        .unwrap();
    // The caller hangs up while Stripe is still answering.
    ledger
        .close_call("call_1".into(), talked(498_000), T0 + 500_000)
        .await
        .unwrap();
    ledger
        .hold_succeeded(late.facts.id.clone(), "pi_2".into(), None, T0 + 501_000)
        .await
        .unwrap();
    // Told twice (the answer and a webhook): still one release.
    ledger
        .hold_succeeded(late.facts.id, "pi_2".into(), None, T0 + 502_000)
        .await
        .unwrap();
    assert_eq!(
        after_call_rows(&ledger).await,
        [
            moved("capture:v1", 2_490, "pi_1"),
            moved("cancel-2:v1", 0, "pi_2"),
        ]
    );
    // The same block asked again is the same row, never a second hold.
    let again = ledger
        .begin_extension_hold("call_1".into(), "bk_1".into(), 2, 900, T0 + 600_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.state, SettlementState::Succeeded);
}

on_both_backends!(
    the_rated_amount_is_captured_across_the_holds_in_order,
    an_extended_calls_refunds_give_back_from_one_capture_each,
    where_the_first_hold_can_be_raised_blocks_raise_it_and_one_capture_takes_all,
    a_declined_block_is_neither_captured_nor_released,
    a_block_held_after_the_call_ended_is_released_whole,
);
