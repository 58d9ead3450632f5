//! A call's card holds: the one placed before the bridge and one per
//! extension block, what each covers, and the capture or release of each
//! after the call (written in the transaction that closes its record, or
//! when a hold succeeds after that).

use tollbridge_billing::rating::Currency;
use tollbridge_billing::settlement::blocks::{self, BlockMove};
use tollbridge_billing::settlement::{self, AfterCall, Operation, UnderMinimum};

use super::db::Db;
use super::settlements::{NewSettlement, Settlement, conclude, insert, insert_keyed, mark_sent};
use super::states::SettlementState;
use super::{Ledger, LedgerError, bookings};
use crate::args;

/// Records a hold that succeeded: its PaymentIntent and until when it can
/// be captured; for a call's hold, the call's PaymentIntent and, when the
/// call has ended meanwhile (the caller hung up while the hold was on its
/// way, or a crash cut the answer off), the capture or release that
/// follows, so no hold is left behind; for a cancellation-fee hold, what
/// its booking's decision calls for (see [`super::fees::fee_hold_stands`]).
pub(super) fn hold_succeeded(
    db: &mut dyn Db,
    id: &str,
    payment_intent: &str,
    capture_before: Option<i64>,
    now_ms: i64,
) -> Result<(), LedgerError> {
    conclude(
        db,
        id,
        SettlementState::Succeeded,
        Some(payment_intent),
        None,
        None,
        now_ms,
    )?;
    held_until(db, id, capture_before)?;
    let Some(hold) = db.query_opt(
        "SELECT call_id, operation, COALESCE(block, 1) FROM settlements WHERE id = ?1",
        args![id],
    )?
    else {
        return Ok(());
    };
    let (call, operation) = (hold.opt_text(0)?, hold.text(1)?);
    if operation == Operation::CancellationFee.as_str() {
        // Its booking may have been decided while it was being placed.
        super::fees::fee_hold_stands(db, id, now_ms)?;
        return Ok(());
    }
    let Some(call) = call else {
        return Ok(());
    };
    if operation != Operation::Authorize.as_str() && operation != Operation::Increment.as_str() {
        return Ok(());
    }
    if hold.int(2)? == 1 && operation == Operation::Authorize.as_str() {
        db.execute(
            "UPDATE calls SET payment_intent = ?2 WHERE id = ?1",
            args![call.as_str(), payment_intent],
        )?;
    }
    // What the call's holds hold together (its extension blocks' too).
    db.execute(
        &format!(
            "UPDATE calls SET hold_amount = (SELECT CAST(COALESCE(SUM({HOLDS_NOW}), 0) AS BIGINT) FROM settlements s
                 WHERE s.call_id = ?1 AND s.operation = 'authorize' AND s.state = 'succeeded')
             WHERE id = ?1"
        ),
        args![call.as_str()],
    )?;
    let owed = db
        .query_opt(
            "SELECT CASE WHEN ended_ms IS NULL THEN NULL ELSE COALESCE(amount, 0) END FROM calls WHERE id = ?1",
            args![call.as_str()],
        )?
        .map(|row| row.opt_int(0))
        .transpose()?
        .flatten();
    if let Some(owed) = owed {
        after_call(db, &call, owed, now_ms)?;
    }
    Ok(())
}

/// Records until when a hold that succeeded can be captured (Stripe's
/// `capture_before`, unix seconds, when it said) and so when it must be
/// captured, released or renewed at the latest.
pub(super) fn held_until(
    db: &mut dyn Db,
    id: &str,
    capture_before: Option<i64>,
) -> Result<(), LedgerError> {
    let capture_before_ms = capture_before.map(|s| s.saturating_mul(1000));
    let Some(held) = db.query_opt(
        "SELECT created_ms FROM settlements WHERE id = ?1",
        args![id],
    )?
    else {
        return Ok(());
    };
    let held_ms = held.int(0)?;
    db.execute(
        "UPDATE settlements SET capture_before_ms = ?2, act_by_ms = ?3 WHERE id = ?1",
        args![
            id,
            capture_before_ms,
            settlement::act_by(held_ms, capture_before_ms)
        ],
    )?;
    Ok(())
}

/// After a call is rated (in the transaction that closes its record), or
/// when one of its holds succeeds after that: the capture or release of
/// each of its holds that succeeded and has none yet. The first time, the
/// rated amount is taken from the holds in the order they were placed
/// ([`blocks::capture_plan`]); a hold that succeeds after that (an
/// extension block whose answer came after the call ended, or was found
/// after a crash) is released: the call never talked on it.
pub(super) fn after_call(
    db: &mut dyn Db,
    call_id: &str,
    amount: i64,
    now_ms: i64,
) -> Result<(), LedgerError> {
    let holds = db.query(
        &format!("SELECT s.payment_intent, s.currency, s.booking_id, COALESCE(b.under_minimum, 'cancel'), s.act_by_ms,
                b.minimum_charge, {HOLDS_NOW}, COALESCE(s.block, 1),
                EXISTS (SELECT 1 FROM settlements d WHERE d.call_id = s.call_id
                        AND d.operation IN ('capture', 'cancel') AND d.payment_intent = s.payment_intent)
         FROM settlements s LEFT JOIN bookings b ON b.id = s.booking_id
         WHERE s.call_id = ?1 AND s.operation = 'authorize' AND s.state = 'succeeded'
           AND s.payment_intent IS NOT NULL
         ORDER BY COALESCE(s.block, 1), s.created_ms"),
        args![call_id],
    )?;
    let Some(first) = holds.first() else {
        return Ok(());
    };
    let currency = first.text(1)?;
    let Some(code) = Currency::from_code(&currency) else {
        return Ok(());
    };
    let policy = UnderMinimum::parse(&first.text(3)?).unwrap_or(UnderMinimum::Cancel);
    let minimum = first.opt_int(5)?.unwrap_or(code.stripe_minimum());
    let planned_before = db
        .query_one(
            "SELECT COUNT(*) FROM settlements WHERE call_id = ?1 AND operation IN ('capture', 'cancel')",
            args![call_id],
        )?
        .int(0)?
        > 0;
    let amounts = holds
        .iter()
        .map(|hold| hold.int(6))
        .collect::<Result<Vec<_>, _>>()?;
    let moves = if planned_before {
        vec![BlockMove::Release; holds.len()]
    } else {
        let owed = match settlement::after_call(amount, minimum, policy) {
            AfterCall::Capture(amount) => amount,
            AfterCall::Cancel => 0,
        };
        let held: i64 = amounts.iter().sum();
        if owed > held {
            tracing::error!(
                call = call_id,
                owed,
                held,
                "the call's holds do not cover its price: capturing what they hold"
            );
        }
        blocks::capture_plan(owed.min(held), &amounts, minimum)
            .unwrap_or_else(|| vec![BlockMove::Release; holds.len()])
    };
    for (hold, movement) in holds.iter().zip(moves) {
        if hold.flag(8)? {
            continue;
        }
        let block = u32::try_from(hold.int(7)?).unwrap_or(1);
        let (operation, amount) = match movement {
            BlockMove::Capture(amount) => (Operation::Capture, amount),
            BlockMove::Release => (Operation::Cancel, 0),
        };
        let payment_intent = hold.text(0)?;
        let booking_id = hold.opt_text(2)?;
        insert_keyed(
            db,
            &blocks::block_key(call_id, operation, block),
            Some(call_id),
            &NewSettlement {
                call_id,
                booking_id: booking_id.as_deref(),
                operation,
                amount,
                currency: &currency,
                payment_intent: Some(&payment_intent),
                customer: None,
                payment_method: None,
                act_by_ms: hold.opt_int(4)?,
            },
            None,
            1,
            now_ms,
        )?;
    }
    // A recorded call's captures say what paid for what.
    let split = db.query_opt(
        "SELECT amount, recording_amount, currency FROM calls
         WHERE id = ?1 AND recording_amount IS NOT NULL",
        args![call_id],
    )?;
    if let Some(split) = split {
        let (amount, recording) = (split.int(0)?, split.int(1)?);
        let reason = format!(
            "the call's {amount} {}: talk {}, recording {recording}",
            split.text(2)?,
            amount - recording
        );
        db.execute(
            "UPDATE settlements SET reason = ?2
             WHERE call_id = ?1 AND operation = 'capture' AND reason IS NULL",
            args![call_id, reason],
        )?;
    }
    Ok(())
}

/// What an `authorize` row `s` holds now: its amount, or what increments
/// raised it to since.
const HOLDS_NOW: &str = "COALESCE((SELECT MAX(i.amount) FROM settlements i
     WHERE i.operation = 'increment' AND i.state = 'succeeded' AND i.payment_intent = s.payment_intent), s.amount)";

/// Stripe's most incremental authorization attempts on one
/// PaymentIntent, declines included.
const MOST_INCREMENTS: i64 = 10;

/// What a call's card hold needs of its booking.
#[derive(Debug, Clone)]
pub struct HoldTerms {
    /// The booking's tariff.
    pub tariff: tollbridge_billing::rating::Tariff,
    /// The talk time left on the booking: what the hold covers at most.
    pub remaining_seconds: u64,
    /// The Stripe customer.
    pub customer: String,
    /// The card.
    pub payment_method: String,
}

impl Ledger {
    /// Writes and marks sent the card hold for a call routed to `booking`
    /// (the price of its cap), committed before the request goes out.
    /// `None` when the booking has no card, or its cap's price does not
    /// fit a hold.
    pub async fn begin_hold(
        &self,
        call_id: String,
        booking_id: String,
        now_ms: i64,
    ) -> Result<Option<(Settlement, HoldTerms)>, LedgerError> {
        let node = self.node.clone();
        self.run(move |db| {
            // The call's row before the booking's (the settlement row's
            // foreign keys take both): the order a call's events take
            // them in, or PostgreSQL finds a deadlock between the two.
            super::calls::lock_call_events(db, "id = ?1", args![call_id.as_str()])?;
            let Some(terms) = bookings::terms(db, &booking_id)? else {
                return Ok(None);
            };
            let Some((customer, payment_method)) = terms.card else {
                return Ok(None);
            };
            let Ok(amount) = settlement::hold_amount(
                &terms.tariff,
                terms.remaining_seconds,
                terms.minimum_charge,
            ) else {
                return Ok(None);
            };
            let row = insert(
                db,
                &NewSettlement {
                    call_id: &call_id,
                    booking_id: Some(&booking_id),
                    operation: Operation::Authorize,
                    amount,
                    currency: terms.tariff.currency.code(),
                    payment_intent: None,
                    customer: Some(&customer),
                    payment_method: Some(&payment_method),
                    act_by_ms: None,
                },
                now_ms,
            )?;
            mark_sent(db, &row.facts.id, &node, now_ms)?;
            let row = Settlement {
                state: SettlementState::Sent,
                tries: row.tries + 1,
                ..row
            };
            Ok(Some((
                row,
                HoldTerms {
                    tariff: terms.tariff,
                    remaining_seconds: terms.remaining_seconds,
                    customer,
                    payment_method,
                },
            )))
        })
        .await
    }

    /// Writes and marks sent the hold for extension block `block` (2 on)
    /// of a call routed to `booking`: the price of its paid time once the
    /// block brings it to `covered_after` seconds, less what its holds so
    /// far hold. Committed before the request goes out; written once per
    /// block (the same block asked again returns its row as it stands).
    /// `None` when the booking has no card, or the price does not fit.
    pub async fn begin_extension_hold(
        &self,
        call_id: String,
        booking_id: String,
        block: u32,
        covered_after: u64,
        now_ms: i64,
    ) -> Result<Option<Settlement>, LedgerError> {
        let node = self.node.clone();
        self.run(move |db| {
            // The call's row before the booking's, as in `begin_hold`.
            super::calls::lock_call_events(db, "id = ?1", args![call_id.as_str()])?;
            let Some(terms) = bookings::terms(db, &booking_id)? else {
                return Ok(None);
            };
            let Some((customer, payment_method)) = terms.card else {
                return Ok(None);
            };
            let held = db
                .query_one(
                    &format!(
                        "SELECT CAST(COALESCE(SUM({HOLDS_NOW}), 0) AS BIGINT) FROM settlements s
                         WHERE s.call_id = ?1 AND s.operation = 'authorize' AND s.state = 'succeeded'"
                    ),
                    args![call_id.as_str()],
                )?
                .int(0)?;
            let Ok(amount) =
                blocks::block_hold_amount(&terms.tariff, covered_after, held, terms.minimum_charge)
            else {
                return Ok(None);
            };
            // Where the first hold's charge allows it, the block raises
            // that hold to its new total; otherwise it is a hold of its own.
            let raisable = db.query_opt(
                &format!(
                    "SELECT s.payment_intent, {HOLDS_NOW} FROM settlements s
                     WHERE s.call_id = ?1 AND s.operation = 'authorize' AND s.state = 'succeeded'
                       AND COALESCE(s.block, 1) = 1 AND s.incremental = 1 AND s.payment_intent IS NOT NULL
                       AND (SELECT COUNT(*) FROM settlements i WHERE i.operation = 'increment'
                            AND i.payment_intent = s.payment_intent) < ?2"
                ),
                args![call_id.as_str(), MOST_INCREMENTS],
            )?;
            let (operation, amount, payment_intent) = match &raisable {
                Some(first) => (
                    Operation::Increment,
                    first.int(1)?.saturating_add(amount),
                    Some(first.text(0)?),
                ),
                None => (Operation::Authorize, amount, None),
            };
            let key = blocks::block_key(&call_id, operation, block);
            let row = insert_keyed(
                db,
                &key,
                Some(&call_id),
                &NewSettlement {
                    call_id: &call_id,
                    booking_id: Some(&booking_id),
                    operation,
                    amount,
                    currency: terms.tariff.currency.code(),
                    payment_intent: payment_intent.as_deref(),
                    customer: Some(&customer),
                    payment_method: Some(&payment_method),
                    act_by_ms: None,
                },
                None,
                1,
                now_ms,
            )?;
            db.execute(
                "UPDATE settlements SET block = ?2 WHERE id = ?1",
                args![row.facts.id.as_str(), i64::from(block)],
            )?;
            if row.state != SettlementState::Pending
                || !mark_sent(db, &row.facts.id, &node, now_ms)?
            {
                return Ok(Some(row));
            }
            Ok(Some(Settlement {
                state: SettlementState::Sent,
                tries: row.tries + 1,
                ..row
            }))
        })
        .await
    }
    /// Records a hold that succeeded and what follows from it, all in one
    /// transaction (see [`hold_succeeded`]).
    /// Notes that a call's hold `id` can be raised by incremental
    /// authorization (its charge said so): the call's extension blocks
    /// raise it rather than placing holds of their own. Its own
    /// transaction: lost, the blocks are holds of their own, which is
    /// always allowed.
    pub async fn hold_is_raisable(&self, id: String) -> Result<(), LedgerError> {
        self.run(move |db| {
            db.execute(
                "UPDATE settlements SET incremental = 1 WHERE id = ?1 AND operation = 'authorize'",
                args![id],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn hold_succeeded(
        &self,
        id: String,
        payment_intent: String,
        capture_before: Option<i64>,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        self.run(move |db| hold_succeeded(db, &id, &payment_intent, capture_before, now_ms))
            .await
    }
}
