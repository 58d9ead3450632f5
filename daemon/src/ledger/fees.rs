//! Cancellation fees: a booking's fee hold planned with the booking,
//! placed a hold's safe lifetime before its window (or at once), renewed
//! before it lapses while the booking is open, and captured (a late
//! cancellation, a no-show) or released (a call took place, a
//! cancellation in time) — each movement a settlement row with its key
//! derived from the booking, the movement and the hold's attempt.

use tollbridge_billing::settlement::{self, Operation};
use tollbridge_billing::stripe::ReleaseReason;

use super::db::Db;
use super::settlements::{
    COLUMNS, NewSettlement, Settlement, insert_keyed, settlement_from, tell_platform,
};
use super::states::SettlementState;
use super::{Ledger, LedgerError};
use crate::args;

/// Plans a booking's cancellation-fee hold (when it has a fee and a
/// card): due now, or a hold's lifetime before the window opens.
pub(super) fn plan_fee_hold(
    db: &mut dyn Db,
    booking_id: &str,
    now_ms: i64,
) -> Result<Option<Settlement>, LedgerError> {
    let Some(booking) = db.query_opt(
        "SELECT cancellation_fee, currency, stripe_customer, stripe_payment_method, window_start_ms
         FROM bookings WHERE id = ?1",
        args![booking_id],
    )?
    else {
        return Ok(None);
    };
    let (Some(fee), currency, Some(customer), Some(payment_method), window_start_ms) = (
        booking.opt_int(0)?,
        booking.text(1)?,
        booking.opt_text(2)?,
        booking.opt_text(3)?,
        booking.int(4)?,
    ) else {
        return Ok(None);
    };
    if fee <= 0 {
        return Ok(None);
    }
    let key = settlement::booking_key(booking_id, "fee-hold", 1);
    let new = NewSettlement {
        call_id: "",
        booking_id: Some(booking_id),
        operation: Operation::CancellationFee,
        amount: fee,
        currency: &currency,
        payment_intent: None,
        customer: Some(&customer),
        payment_method: Some(&payment_method),
        act_by_ms: None,
    };
    let due = settlement::fee_hold_at(now_ms, window_start_ms);
    Ok(Some(insert_keyed(
        db,
        &key,
        None,
        &new,
        Some(due),
        1,
        now_ms,
    )?))
}

/// A booking whose window moved: its fee hold, when not placed yet, is
/// placed when the new window calls for it (at once, or a hold's safe
/// lifetime before the window opens). A hold already placed stays: it is
/// renewed before it lapses, as always.
pub(super) fn replan_fee_hold(
    db: &mut dyn Db,
    booking_id: &str,
    window_start_ms: i64,
    now_ms: i64,
) -> Result<(), LedgerError> {
    db.execute(
        "UPDATE settlements SET next_attempt_ms = ?2, updated_ms = ?3
         WHERE booking_id = ?1 AND operation = 'cancellation-fee' AND state = 'pending'",
        args![
            booking_id,
            settlement::fee_hold_at(now_ms, window_start_ms),
            now_ms
        ],
    )?;
    Ok(())
}

/// A booking's latest cancellation-fee hold and its attempt number,
/// locked until the transaction ends (PostgreSQL): a hold's outcome and a
/// decision on its booking are written one after the other, never both
/// from a stale read.
pub(super) fn current_fee_hold(
    db: &mut dyn Db,
    booking_id: &str,
) -> Result<Option<(Settlement, i64)>, LedgerError> {
    let sql = format!(
        "SELECT {COLUMNS}, attempt FROM settlements
         WHERE booking_id = ?1 AND operation = 'cancellation-fee' ORDER BY attempt DESC LIMIT 1{}",
        db.dialect().for_update()
    );
    db.query_opt(&sql, args![booking_id])?
        .map(|row| Ok((settlement_from(&row)?, row.int(14)?)))
        .transpose()
}

/// Renews the cancellation-fee holds about to lapse (see
/// [`Ledger::renew_fee_holds`]). Returns how many.
pub(super) fn renew_fee_holds(db: &mut dyn Db, now_ms: i64) -> Result<usize, LedgerError> {
    let safe = (settlement::HOLD_LIFETIME - settlement::HOLD_MARGIN).as_millis() as i64;
    let aging: Vec<String> = db
        .query(
            "SELECT b.id FROM bookings b JOIN settlements s ON s.booking_id = b.id
             WHERE s.operation = 'cancellation-fee' AND s.state = 'succeeded'
               AND COALESCE(s.act_by_ms, s.updated_ms + ?3) <= ?1
               AND s.attempt = (SELECT MAX(attempt) FROM settlements
                                WHERE booking_id = b.id AND operation = 'cancellation-fee')
               AND b.state IN ('active', 'in-call') AND b.window_end_ms > ?2
               AND NOT EXISTS (SELECT 1 FROM settlements f WHERE f.booking_id = b.id AND f.call_id IS NULL
                               AND f.operation IN ('capture', 'cancel') AND f.attempt = s.attempt)",
            args![now_ms, now_ms, safe],
        )?
        .iter()
        .map(|row| row.text(0))
        .collect::<Result<_, _>>()?;
    for booking in &aging {
        let Some((hold, attempt)) = current_fee_hold(db, booking)? else {
            continue;
        };
        move_fee_hold(
            db,
            booking,
            FeeMove::Release,
            "renewed before it lapses",
            now_ms,
        )?;
        let next = attempt + 1;
        let new = NewSettlement {
            call_id: "",
            booking_id: Some(booking),
            operation: Operation::CancellationFee,
            amount: hold.facts.amount,
            currency: &hold.facts.currency,
            payment_intent: None,
            customer: hold.facts.customer.as_deref(),
            payment_method: hold.facts.payment_method.as_deref(),
            act_by_ms: None,
        };
        let key = settlement::booking_key(booking, "fee-hold", next);
        insert_keyed(db, &key, None, &new, None, next, now_ms)?;
    }
    Ok(aging.len())
}

/// What becomes of a booking's cancellation-fee hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FeeMove {
    /// Captured: a late cancellation, a no-show.
    Capture,
    /// Released: no longer due (a call took place, the hold is renewed).
    Release,
    /// Released because the customer canceled in time: Stripe is told
    /// `requested_by_customer`.
    ReleaseAsCanceled,
}

impl FeeMove {
    /// As `bookings.fee_decision` holds it.
    fn as_str(self) -> &'static str {
        match self {
            FeeMove::Capture => "capture",
            FeeMove::Release => "release",
            FeeMove::ReleaseAsCanceled => "release-as-canceled",
        }
    }

    /// From `bookings.fee_decision`.
    fn parse(text: &str) -> Option<FeeMove> {
        [
            FeeMove::Capture,
            FeeMove::Release,
            FeeMove::ReleaseAsCanceled,
        ]
        .into_iter()
        .find(|fee| fee.as_str() == text)
    }
}

/// Decides a booking's cancellation fee: a late cancellation captures
/// it; a call, or a cancellation in time, releases it. The decision is
/// kept on the booking (the first one stands) and carried out on the
/// hold as it stands now (see [`move_fee_hold`]); a hold whose request is
/// in flight is moved when it stands ([`fee_hold_stands`]).
pub(super) fn decide_fee(
    db: &mut dyn Db,
    booking_id: &str,
    fee: FeeMove,
    reason: &str,
    now_ms: i64,
) -> Result<Option<Settlement>, LedgerError> {
    db.execute(
        "UPDATE bookings SET fee_decision = COALESCE(fee_decision, ?2) WHERE id = ?1",
        args![booking_id, fee.as_str()],
    )?;
    move_fee_hold(db, booking_id, fee, reason, now_ms)
}

/// A booking's fee hold that just stood (Stripe holds the fee): when the
/// booking's fee was decided while the hold's request was in flight, the
/// decision is carried out now, in the same transaction.
pub(super) fn fee_hold_stands(
    db: &mut dyn Db,
    hold_id: &str,
    now_ms: i64,
) -> Result<Option<Settlement>, LedgerError> {
    let Some(row) = db.query_opt(
        "SELECT b.id, b.fee_decision FROM settlements s JOIN bookings b ON b.id = s.booking_id
         WHERE s.id = ?1 AND s.operation = 'cancellation-fee'",
        args![hold_id],
    )?
    else {
        return Ok(None);
    };
    let (booking, decision) = (row.text(0)?, row.opt_text(1)?);
    match decision.as_deref().map(FeeMove::parse) {
        None => Ok(None),
        Some(Some(fee)) => move_fee_hold(
            db,
            &booking,
            fee,
            "decided while the hold was placed",
            now_ms,
        ),
        Some(None) => Err(LedgerError::Decode(format!("fee decision {decision:?}"))),
    }
}

/// Moves a booking's current fee hold as it stands: a hold that stands is
/// captured or released (a row with its key, once per attempt); one not
/// sent yet is placed at once to be captured, or dropped without a
/// request when it is to be released; one in flight (or unknown) is left
/// to [`fee_hold_stands`]; a failed one has nothing to move.
pub(super) fn move_fee_hold(
    db: &mut dyn Db,
    booking_id: &str,
    fee: FeeMove,
    reason: &str,
    now_ms: i64,
) -> Result<Option<Settlement>, LedgerError> {
    let Some((hold, attempt)) = current_fee_hold(db, booking_id)? else {
        return Ok(None);
    };
    match (hold.state, hold.facts.payment_intent.as_deref()) {
        (SettlementState::Pending, _) if fee == FeeMove::Capture => {
            db.execute(
                "UPDATE settlements SET next_attempt_ms = ?2, updated_ms = ?2
                 WHERE id = ?1 AND state = 'pending' AND COALESCE(next_attempt_ms, 0) > ?2",
                args![hold.facts.id.as_str(), now_ms],
            )?;
            Ok(None)
        }
        (SettlementState::Pending, _) => {
            drop_unsent(db, &hold.facts.id, reason, now_ms)?;
            Ok(None)
        }
        (SettlementState::Succeeded, Some(payment_intent)) => {
            let (operation, movement, amount) = if fee == FeeMove::Capture {
                (Operation::Capture, "fee-capture", hold.facts.amount)
            } else {
                (Operation::Cancel, "fee-release", 0)
            };
            let done = db
                .query_one(
                    "SELECT COUNT(*) FROM settlements WHERE idempotency_key IN (?1, ?2)",
                    args![
                        settlement::booking_key(booking_id, "fee-capture", attempt),
                        settlement::booking_key(booking_id, "fee-release", attempt)
                    ],
                )?
                .int(0)?;
            if done > 0 {
                return Ok(None);
            }
            let new = NewSettlement {
                call_id: "",
                booking_id: Some(booking_id),
                operation,
                amount,
                currency: &hold.facts.currency,
                payment_intent: Some(payment_intent),
                customer: None,
                payment_method: None,
                act_by_ms: hold.act_by_ms,
            };
            let key = settlement::booking_key(booking_id, movement, attempt);
            let mut row = insert_keyed(db, &key, None, &new, None, attempt, now_ms)?;
            if fee == FeeMove::ReleaseAsCanceled {
                let reason = ReleaseReason::RequestedByCustomer.as_str();
                db.execute(
                    "UPDATE settlements SET reason = ?2 WHERE id = ?1",
                    args![row.facts.id.as_str(), reason],
                )?;
                row.facts.reason = Some(reason.to_owned());
            }
            Ok(Some(row))
        }
        _ => Ok(None),
    }
}

/// Drops a fee hold never sent: failed, "not needed", and the platform
/// told. A row that went out meanwhile is left as it is (its send marked
/// it first; see [`super::settlements::mark_sent`]), and so is the
/// booking's decision, which moves it once it stands.
fn drop_unsent(db: &mut dyn Db, id: &str, reason: &str, now_ms: i64) -> Result<(), LedgerError> {
    let error = format!("not needed: {reason}");
    let dropped = db.execute(
        "UPDATE settlements SET state = 'failed', last_error = ?2, next_attempt_ms = NULL, updated_ms = ?3,
             claimed_by = NULL, claimed_until_ms = NULL
         WHERE id = ?1 AND state = 'pending'",
        args![id, error.as_str(), now_ms],
    )?;
    if dropped == 1 {
        tell_platform(db, id, SettlementState::Failed, Some(&error), now_ms)?;
    }
    Ok(())
}

/// Captures the fee of every no-show booking (window ended, nobody
/// called) whose fee hold is placed and not yet settled. Returns how many.
pub(super) fn fee_no_shows(db: &mut dyn Db, now_ms: i64) -> Result<usize, LedgerError> {
    let bookings: Vec<String> = db
        .query(
            "SELECT b.id FROM bookings b JOIN settlements s ON s.booking_id = b.id
             WHERE s.operation = 'cancellation-fee' AND s.state = 'succeeded'
               AND s.attempt = (SELECT MAX(attempt) FROM settlements
                                WHERE booking_id = b.id AND operation = 'cancellation-fee')
               AND b.state = 'no-show' AND b.window_end_ms <= ?1
               AND NOT EXISTS (SELECT 1 FROM settlements f WHERE f.booking_id = b.id
                               AND f.call_id IS NULL AND f.operation IN ('capture', 'cancel')
                               AND f.attempt = s.attempt)",
            args![now_ms],
        )?
        .iter()
        .map(|row| row.text(0))
        .collect::<Result<_, _>>()?;
    for booking in &bookings {
        move_fee_hold(
            db,
            booking,
            FeeMove::Capture,
            "no call in the window",
            now_ms,
        )?;
    }
    Ok(bookings.len())
}

impl Ledger {
    /// Renews the cancellation-fee holds about to lapse (their act-by time
    /// from Stripe's `capture_before` has come; a hold's safe lifetime
    /// after it was placed when that was never read) while their booking
    /// is still open: the old hold is released and a new one (the next
    /// attempt, new keys) is placed at once. Returns how many.
    pub async fn renew_fee_holds(&self, now_ms: i64) -> Result<usize, LedgerError> {
        self.run(move |db| renew_fee_holds(db, now_ms)).await
    }

    /// Captures the fee of every no-show booking whose fee hold is placed
    /// and not yet settled. Returns how many.
    pub async fn fee_no_shows(&self, now_ms: i64) -> Result<usize, LedgerError> {
        self.run(move |db| fee_no_shows(db, now_ms)).await
    }
}

#[cfg(test)]
mod tests;
