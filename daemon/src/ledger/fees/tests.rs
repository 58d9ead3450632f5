#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::ledger::holds::{held_until, hold_succeeded};
use crate::ledger::settlements::{conclude, mark_sent};

const DAY_MS: i64 = 86_400_000;

fn ledger(dir: &tempfile::TempDir) -> Ledger {
    Ledger::open_sqlite(&dir.path().join("t.db")).unwrap()
}

/// A booking with a ¥500 fee whose window runs from day 10 to day 20,
/// and its first fee hold, planned on day 0 (for day 5 1/2), not sent.
fn booking_with_planned_fee_hold(db: &mut dyn Db) -> Result<Settlement, LedgerError> {
    db.execute(
        "INSERT INTO bookings (id, called, callee, currency, price_per_minute, cap_seconds, window_start_ms,
             window_end_ms, stripe_customer, stripe_payment_method, cancellation_fee, created_ms, updated_ms)
         VALUES ('bk_1', '+81500000001', '{}', 'jpy', 100, 600, ?1, ?2, 'cus_1', 'pm_1', 500, 0, 0)",
        args![10 * DAY_MS, 20 * DAY_MS],
    )?;
    Ok(plan_fee_hold(db, "bk_1", 0)?.expect("a fee hold is planned"))
}

/// [`booking_with_planned_fee_hold`], its hold placed on day `placed`.
fn booking_with_fee_hold(db: &mut dyn Db, placed_ms: i64) -> Result<(), LedgerError> {
    let row = booking_with_planned_fee_hold(db)?;
    conclude(
        db,
        &row.facts.id,
        SettlementState::Succeeded,
        Some("pi_old"),
        None,
        None,
        placed_ms,
    )
}

fn rows(db: &mut dyn Db) -> Result<Vec<(String, String, String)>, LedgerError> {
    db.query(
        "SELECT idempotency_key, operation, state FROM settlements ORDER BY created_ms, attempt, idempotency_key",
        &[],
    )?
    .iter()
    .map(|r| Ok((r.text(0)?, r.text(1)?, r.text(2)?)))
    .collect()
}

#[tokio::test]
async fn a_fee_hold_about_to_lapse_is_released_and_placed_again() {
    let dir = tempfile::tempdir().unwrap();
    let (listed, capture) = ledger(&dir)
        .run(|db| {
            booking_with_fee_hold(db, 6 * DAY_MS)?;
            // Four days on, not yet near its end: nothing to do.
            assert_eq!(renew_fee_holds(db, 10 * DAY_MS)?, 0);
            // 4 d 12 h after it was placed: released and renewed.
            let aging = 6 * DAY_MS
                + (settlement::HOLD_LIFETIME - settlement::HOLD_MARGIN).as_millis() as i64;
            assert_eq!(renew_fee_holds(db, aging)?, 1);
            assert_eq!(renew_fee_holds(db, aging)?, 0, "once");
            let listed = rows(db)?;
            // A late cancellation now captures the new hold, not the old.
            let renewed = current_fee_hold(db, "bk_1")?.expect("renewed").0;
            conclude(
                db,
                &renewed.facts.id,
                SettlementState::Succeeded,
                Some("pi_new"),
                None,
                None,
                aging + 1000,
            )?;
            let capture =
                decide_fee(db, "bk_1", FeeMove::Capture, "late", aging + 2000)?.expect("a capture");
            Ok((listed, capture))
        })
        .await
        .unwrap();
    let keys: Vec<(&str, &str, &str)> = listed
        .iter()
        .map(|(k, o, s)| (k.as_str(), o.as_str(), s.as_str()))
        .collect();
    assert!(
        keys.contains(&("tb:booking:bk_1:fee-release:v1", "cancel", "pending")),
        "{keys:?}"
    );
    assert!(
        keys.contains(&("tb:booking:bk_1:fee-hold:v2", "cancellation-fee", "pending")),
        "{keys:?}"
    );
    assert_eq!(capture.facts.key, "tb:booking:bk_1:fee-capture:v2");
    assert_eq!(
        (
            capture.facts.payment_intent.as_deref(),
            capture.facts.amount
        ),
        (Some("pi_new"), 500)
    );
}

#[tokio::test]
async fn a_booking_whose_window_ended_is_not_renewed_but_charged_as_a_no_show() {
    let dir = tempfile::tempdir().unwrap();
    let (renewed, charged, listed) = ledger(&dir)
        .run(|db| {
            booking_with_fee_hold(db, 15 * DAY_MS)?;
            let after = 21 * DAY_MS;
            Ok((
                renew_fee_holds(db, after)?,
                {
                    crate::ledger::bookings::end_windows(db, after)?;
                    fee_no_shows(db, after)?
                },
                rows(db)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!((renewed, charged), (0, 1));
    assert!(
        listed
            .iter()
            .any(|(k, o, _)| k == "tb:booking:bk_1:fee-capture:v1" && o == "capture"),
        "{listed:?}"
    );
}

/// [`booking_with_fee_hold`] placed at `placed_ms`, whose charge Stripe
/// says can be captured until `ends_ms`.
fn fee_hold_ending(db: &mut dyn Db, placed_ms: i64, ends_ms: i64) -> Result<(), LedgerError> {
    booking_with_fee_hold(db, placed_ms)?;
    let hold = current_fee_hold(db, "bk_1")?.expect("a hold").0;
    db.execute(
        "UPDATE settlements SET created_ms = ?2 WHERE id = ?1",
        args![hold.facts.id.as_str(), placed_ms],
    )?;
    held_until(db, &hold.facts.id, Some(ends_ms / 1000))
}

#[tokio::test]
async fn stripes_capture_before_sets_when_a_hold_is_renewed_or_looked_at_again() {
    let dir = tempfile::tempdir().unwrap();
    let hour = DAY_MS / 24;
    let placed = 6 * DAY_MS;
    // Stripe says the hold ends 2 days after it was placed, sooner than
    // the 4 d 18 h Tollbridge would assume.
    let ends = placed + 2 * DAY_MS;
    let act_by = ends - 6 * hour;
    let (early, on_time, capture, next_look) = ledger(&dir)
        .run(move |db| {
            fee_hold_ending(db, placed, ends)?;
            let early = renew_fee_holds(db, act_by - 1)?;
            // A late cancellation now: the capture acts on that hold and,
            // when its outcome is unknown, is looked at again by the
            // act-by time, not a day later.
            let now = act_by - 2 * hour;
            let capture =
                decide_fee(db, "bk_1", FeeMove::Capture, "late", now)?.expect("a capture");
            conclude(
                db,
                &capture.facts.id,
                SettlementState::Unknown,
                None,
                Some("timeout"),
                Some(now + DAY_MS),
                now,
            )?;
            let next_look = db
                .query_one(
                    "SELECT next_attempt_ms FROM settlements WHERE id = ?1",
                    args![capture.facts.id.as_str()],
                )?
                .int(0)?;
            // Already captured (or being captured): not renewed.
            let on_time = renew_fee_holds(db, act_by)?;
            Ok((early, on_time, capture, next_look))
        })
        .await
        .unwrap();
    assert_eq!(early, 0, "not before its act-by time");
    assert_eq!(
        capture.act_by_ms,
        Some(act_by),
        "the capture knows the hold's end"
    );
    assert_eq!(next_look, act_by);
    assert_eq!(on_time, 0, "a hold being captured is not renewed");

    // Without the cancellation, the same hold is renewed at its act-by time.
    let dir = tempfile::tempdir().unwrap();
    let (early, on_time) = ledger(&dir)
        .run(move |db| {
            fee_hold_ending(db, placed, ends)?;
            Ok((
                renew_fee_holds(db, act_by - 1)?,
                renew_fee_holds(db, act_by)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!((early, on_time), (0, 1));
}

/// The state of settlement `id`.
fn state_of(db: &mut dyn Db, id: &str) -> Result<String, LedgerError> {
    db.query_one("SELECT state FROM settlements WHERE id = ?1", args![id])?
        .text(0)
}

#[tokio::test]
async fn a_fee_decided_while_its_hold_is_in_flight_is_moved_once_the_hold_stands() {
    // (decision, the row expected once the hold stands: key, operation,
    // amount, reason)
    let table = [
        (
            FeeMove::Capture,
            "tb:booking:bk_1:fee-capture:v1",
            "capture",
            500,
            None,
        ),
        (
            FeeMove::Release,
            "tb:booking:bk_1:fee-release:v1",
            "cancel",
            0,
            None,
        ),
        (
            FeeMove::ReleaseAsCanceled,
            "tb:booking:bk_1:fee-release:v1",
            "cancel",
            0,
            Some("requested_by_customer"),
        ),
    ];
    for (fee, key, operation, amount, reason) in table {
        let dir = tempfile::tempdir().unwrap();
        let (decided, moved, later, listed) = ledger(&dir)
            .run(move |db| {
                let hold = booking_with_planned_fee_hold(db)?;
                let placing = 6 * DAY_MS;
                assert!(mark_sent(db, &hold.facts.id, "node-a", placing)?);
                // Decided while Stripe is placing the hold: nothing to
                // move yet, and a later, different decision does not
                // replace it.
                let decided = decide_fee(db, "bk_1", fee, "decided", placing + 1)?;
                let other = if fee == FeeMove::Capture {
                    FeeMove::Release
                } else {
                    FeeMove::Capture
                };
                let later = decide_fee(db, "bk_1", other, "later", placing + 2)?;
                hold_succeeded(db, &hold.facts.id, "pi_fee", None, placing + 3)?;
                let moved = db
                    .query_opt(
                        "SELECT idempotency_key, operation, amount, payment_intent, reason, state
                         FROM settlements WHERE operation IN ('capture', 'cancel')",
                        &[],
                    )?
                    .map(|r| {
                        Ok::<_, LedgerError>((
                            r.text(0)?,
                            r.text(1)?,
                            r.int(2)?,
                            r.opt_text(3)?,
                            r.opt_text(4)?,
                            r.text(5)?,
                        ))
                    })
                    .transpose()?;
                Ok((decided, moved, later, rows(db)?))
            })
            .await
            .unwrap();
        assert!(decided.is_none() && later.is_none(), "{fee:?}");
        let moved = moved.unwrap_or_else(|| panic!("{fee:?}: nothing moved: {listed:?}"));
        assert_eq!(
            moved,
            (
                key.to_owned(),
                operation.to_owned(),
                amount,
                Some("pi_fee".to_owned()),
                reason.map(str::to_owned),
                "pending".to_owned()
            ),
            "{fee:?}"
        );
        assert_eq!(listed.len(), 2, "the hold and one movement: {listed:?}");
    }
}

#[tokio::test]
async fn a_fee_hold_dropped_as_not_needed_is_never_sent_after_its_worker_picked_it_up() {
    let dir = tempfile::tempdir().unwrap();
    let (sent, state, stands) = ledger(&dir)
        .run(|db| {
            let hold = booking_with_planned_fee_hold(db)?;
            // The worker picked it up (claimed, not yet sent); the call
            // took place meanwhile.
            db.execute(
                "UPDATE settlements SET claimed_by = 'node-a', claimed_until_ms = ?2 WHERE id = ?1",
                args![hold.facts.id.as_str(), 7 * DAY_MS],
            )?;
            decide_fee(
                db,
                "bk_1",
                FeeMove::Release,
                "the call took place",
                6 * DAY_MS,
            )?;
            let sent = mark_sent(db, &hold.facts.id, "node-a", 6 * DAY_MS + 1)?;
            Ok((
                sent,
                state_of(db, &hold.facts.id)?,
                fee_hold_stands(db, &hold.facts.id, 6 * DAY_MS + 2)?,
            ))
        })
        .await
        .unwrap();
    assert!(!sent, "a dropped hold must not go out");
    assert_eq!(state, "failed");
    assert!(stands.is_none());
}

#[tokio::test]
async fn a_late_cancellation_places_a_fee_hold_not_placed_yet_and_captures_it() {
    let dir = tempfile::tempdir().unwrap();
    let (due, capture) = ledger(&dir)
        .run(|db| {
            let hold = booking_with_planned_fee_hold(db)?;
            // billing.late_cancellation longer than a hold's life: late
            // on day 1, while the hold waits for day 5 1/2.
            let now = DAY_MS;
            assert!(decide_fee(db, "bk_1", FeeMove::Capture, "late", now)?.is_none());
            let due = db
                .query_one(
                    "SELECT next_attempt_ms, state FROM settlements WHERE id = ?1",
                    args![hold.facts.id.as_str()],
                )
                .and_then(|r| Ok((r.int(0)?, r.text(1)?)))?;
            assert!(mark_sent(db, &hold.facts.id, "node-a", now + 1)?);
            hold_succeeded(db, &hold.facts.id, "pi_fee", None, now + 2)?;
            let capture = db
                .query_one(
                    "SELECT idempotency_key, amount FROM settlements WHERE operation = 'capture'",
                    &[],
                )
                .and_then(|r| Ok((r.text(0)?, r.int(1)?)))?;
            Ok((due, capture))
        })
        .await
        .unwrap();
    assert_eq!(due, (DAY_MS, "pending".to_owned()), "placed at once");
    assert_eq!(capture, ("tb:booking:bk_1:fee-capture:v1".to_owned(), 500));
}
