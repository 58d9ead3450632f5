//! Refunds of a call's captured charge, and what Stripe tells us of
//! refunds and disputes.
//!
//! A refund is a settlement row (operation `refund`), written and
//! committed before anything is sent, its id (`rf_...`, given by the
//! platform or made here) the source of its idempotency key. Its amount is
//! checked, under a lock on the call's row, against what was captured less
//! every refund succeeded or on its way, so no two requests together can
//! give back more than was taken. The call keeps `refunded_amount`: the
//! larger of what our refunds gave back and what Stripe says its charge
//! has refunded (a refund made in Stripe's dashboard counts too), and its
//! dispute's id, state and amount.

use tollbridge_billing::settlement::{self, Operation, RefundRefusal};

use super::db::Db;
use super::settlements::{COLUMNS, Settlement, settlement_from};
use super::{Ledger, LedgerError};
use crate::args;

/// Why a refund was not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefundRefused {
    /// No such call.
    #[error("no such call")]
    NoCall,
    /// The call has no succeeded capture: there is no charge to refund.
    #[error("the call's charge is not captured")]
    NotCaptured,
    /// The amount does not fit what is left.
    #[error(transparent)]
    Amount(#[from] RefundRefusal),
    /// The refund id is taken by a refund of other parameters or another
    /// call.
    #[error("refund {0} exists with other parameters")]
    IdTaken(String),
}

/// A refund asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefund {
    /// `rf_...`
    pub id: String,
    /// Minor units; all that is left when `None`.
    pub amount: Option<i64>,
    /// One of Stripe's refund reasons, when given.
    pub reason: Option<String>,
}

/// After a refund row of `id` succeeded: its call's `refunded_amount`
/// is at least what its succeeded refunds gave back. Nothing for other
/// rows.
pub(super) fn count_refunded(db: &mut dyn Db, id: &str) -> Result<(), LedgerError> {
    let greatest = db.dialect().greatest();
    db.execute(
        &format!(
            "UPDATE calls SET refunded_amount = {greatest}(refunded_amount,
                 (SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM settlements
                  WHERE call_id = calls.id AND operation = 'refund' AND state = 'succeeded'))
             WHERE id = (SELECT call_id FROM settlements WHERE id = ?1 AND operation = 'refund')"
        ),
        args![id],
    )?;
    Ok(())
}

fn create(
    db: &mut dyn Db,
    call_id: &str,
    refund: &NewRefund,
    now_ms: i64,
) -> Result<Result<(Settlement, bool), RefundRefused>, LedgerError> {
    let lock = format!(
        "SELECT booking_id, refunded_amount FROM calls WHERE id = ?1{}",
        db.dialect().for_update()
    );
    let Some(call) = db.query_opt(&lock, args![call_id])? else {
        return Ok(Err(RefundRefused::NoCall));
    };
    let (booking_id, refunded) = (call.opt_text(0)?, call.int(1)?);
    let sql = format!("SELECT {COLUMNS} FROM settlements WHERE id = ?1");
    if let Some(existing) = db.query_opt(&sql, args![&refund.id])? {
        let existing = settlement_from(&existing)?;
        let same = existing.facts.operation == Operation::Refund
            && existing.facts.call_id.as_deref() == Some(call_id)
            && refund
                .amount
                .is_none_or(|amount| amount == existing.facts.amount)
            && refund.reason == existing.facts.reason;
        return Ok(if same {
            Ok((existing, false))
        } else {
            Err(RefundRefused::IdTaken(refund.id.clone()))
        });
    }
    let Some(capture) = db.query_opt(
        "SELECT amount, currency, payment_intent FROM settlements
         WHERE call_id = ?1 AND operation = 'capture' AND state = 'succeeded' AND payment_intent IS NOT NULL",
        args![call_id],
    )?
    else {
        return Ok(Err(RefundRefused::NotCaptured));
    };
    let (captured, currency, payment_intent) =
        (capture.int(0)?, capture.text(1)?, capture.text(2)?);
    let in_flight = db
        .query_one(
            "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM settlements
             WHERE call_id = ?1 AND operation = 'refund' AND state IN ('pending', 'sent', 'unknown')",
            args![call_id],
        )?
        .int(0)?;
    let amount = match settlement::refund_amount(captured, refunded + in_flight, refund.amount) {
        Ok(amount) => amount,
        Err(refusal) => return Ok(Err(refusal.into())),
    };
    db.execute(
        "INSERT INTO settlements (id, booking_id, call_id, operation, attempt, idempotency_key, amount, currency,
             state, payment_intent, reason, created_ms, updated_ms)
         VALUES (?1, ?2, ?3, 'refund', 1, ?4, ?5, ?6, 'pending', ?7, ?8, ?9, ?9)",
        args![
            &refund.id,
            booking_id,
            call_id,
            settlement::refund_key(&refund.id),
            amount,
            currency,
            payment_intent,
            refund.reason.clone(),
            now_ms
        ],
    )?;
    let row = settlement_from(&db.query_one(&sql, args![&refund.id])?)?;
    Ok(Ok((row, true)))
}

/// What Stripe's `charge.refunded` says: the charge of `payment_intent`
/// has refunded `amount_refunded` in all. The calls of that
/// PaymentIntent count it; the part no refund of ours accounts for (made
/// in Stripe's dashboard) is returned per call, to be told to the
/// platform.
pub(super) fn charge_refunded(
    db: &mut dyn Db,
    payment_intent: &str,
    amount_refunded: i64,
) -> Result<Vec<(String, String, i64)>, LedgerError> {
    let greatest = db.dialect().greatest();
    let calls = db.query(
        "SELECT c.id, c.booking_id,
                (SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM settlements s
                 WHERE s.call_id = c.id AND s.operation = 'refund' AND s.state <> 'failed')
         FROM calls c WHERE c.payment_intent = ?1 AND c.booking_id IS NOT NULL",
        args![payment_intent],
    )?;
    db.execute(
        &format!(
            "UPDATE calls SET refunded_amount = {greatest}(refunded_amount, ?2) WHERE payment_intent = ?1"
        ),
        args![payment_intent, amount_refunded],
    )?;
    let mut outside = Vec::new();
    for call in &calls {
        let ours = call.int(2)?;
        if amount_refunded > ours {
            outside.push((call.text(0)?, call.text(1)?, amount_refunded - ours));
        }
    }
    Ok(outside)
}

/// What Stripe says of one of its Refunds when its status changes
/// (`charge.refund.updated`, `refund.updated`, `refund.failed`), for the
/// refund row that made it (by `metadata[refund]`, or its `re_...`): a
/// refund taken as done (`pending` counts) that then `failed` or was
/// `canceled` is failed after all — the call's `refunded_amount` gives its
/// amount back and the platform hears `refund.failed`; one whose answer
/// was lost is concluded from it. Refunds made outside Tollbridge are
/// `charge.refunded`'s.
pub(super) fn refund_changed(
    db: &mut dyn Db,
    refund: &serde_json::Value,
    now_ms: i64,
) -> Result<(), LedgerError> {
    let ours = refund["metadata"]["refund"].as_str();
    let stripe_id = refund["id"].as_str();
    let Some(row) = db.query_opt(
        "SELECT id, state, amount, call_id FROM settlements
         WHERE operation = 'refund' AND (id = ?1 OR stripe_object = ?2)",
        args![ours, stripe_id],
    )?
    else {
        return Ok(());
    };
    let (id, state, amount, call) = (row.text(0)?, row.text(1)?, row.int(2)?, row.opt_text(3)?);
    let status = refund["status"].as_str().unwrap_or("");
    let failed = matches!(status, "failed" | "canceled");
    let reason = refund["failure_reason"].as_str().unwrap_or(status);
    match (state.as_str(), failed) {
        ("succeeded", true) => {
            let error = format!("stripe: the refund {status} after it was accepted ({reason})");
            db.execute(
                "UPDATE settlements SET state = 'failed', last_error = ?2, updated_ms = ?3 WHERE id = ?1",
                args![&id, &error, now_ms],
            )?;
            if let Some(call) = call {
                db.execute(
                    "UPDATE calls SET refunded_amount = CASE WHEN refunded_amount > ?2
                         THEN refunded_amount - ?2 ELSE 0 END WHERE id = ?1",
                    args![call, amount],
                )?;
            }
            super::settlements::tell_platform(
                db,
                &id,
                super::SettlementState::Failed,
                Some(&error),
                now_ms,
            )?;
        }
        ("pending" | "sent" | "unknown", _) => {
            let (to, error) = match settlement::resolve_refund(status) {
                settlement::Resolution::Succeeded => (super::SettlementState::Succeeded, None),
                settlement::Resolution::Failed(why) => (super::SettlementState::Failed, Some(why)),
                settlement::Resolution::Resend => return Ok(()),
            };
            db.execute(
                "UPDATE settlements SET stripe_object = COALESCE(?2, stripe_object) WHERE id = ?1",
                args![&id, stripe_id],
            )?;
            super::settlements::conclude(db, &id, to, None, error.as_deref(), None, now_ms)?;
        }
        _ => {}
    }
    Ok(())
}

/// What Stripe's `charge.dispute.*` says of the dispute on the charge of
/// `payment_intent`: its id, state (`needs_response`, `won`, `lost`, ...)
/// and amount, kept on the calls of that PaymentIntent.
pub(super) fn dispute_changed(
    db: &mut dyn Db,
    payment_intent: &str,
    dispute: &serde_json::Value,
) -> Result<(), LedgerError> {
    db.execute(
        "UPDATE calls SET dispute_id = ?2, dispute_status = ?3, dispute_amount = ?4 WHERE payment_intent = ?1",
        args![
            payment_intent,
            dispute["id"].as_str(),
            dispute["status"].as_str(),
            dispute["amount"].as_i64()
        ],
    )?;
    Ok(())
}

impl Ledger {
    /// Writes refund `refund` of call `call_id` (to be sent by the
    /// settlement worker). The same refund asked again returns the row it
    /// wrote the first time, and false.
    pub async fn create_refund(
        &self,
        call_id: String,
        refund: NewRefund,
        now_ms: i64,
    ) -> Result<Result<(Settlement, bool), RefundRefused>, LedgerError> {
        self.run(move |db| create(db, &call_id, &refund, now_ms))
            .await
    }

    /// Records what Stripe answered of a refund row: its state, the
    /// Refund it made (`re_...`) when there is one, and why it failed.
    pub async fn refund_concluded(
        &self,
        id: String,
        state: super::SettlementState,
        stripe_refund: Option<String>,
        error: Option<String>,
        next_attempt_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        self.run(move |db| {
            db.execute(
                "UPDATE settlements SET stripe_object = COALESCE(?2, stripe_object) WHERE id = ?1",
                args![&id, stripe_refund],
            )?;
            super::settlements::conclude(
                db,
                &id,
                state,
                None,
                error.as_deref(),
                next_attempt_ms,
                now_ms,
            )
        })
        .await
    }

    /// Refund rows and calls under dispute, by state, for the metrics.
    pub async fn refund_and_dispute_counts(
        &self,
    ) -> Result<(Vec<(String, u64)>, Vec<(String, u64)>), LedgerError> {
        self.run(|db| {
            let count = |db: &mut dyn Db, sql: &str| -> Result<Vec<(String, u64)>, LedgerError> {
                db.query(sql, &[])?
                    .iter()
                    .map(|row| Ok((row.text(0)?, u64::try_from(row.int(1)?).unwrap_or(0))))
                    .collect()
            };
            Ok((
                count(
                    db,
                    "SELECT state, COUNT(*) FROM settlements WHERE operation = 'refund' GROUP BY state ORDER BY state",
                )?,
                count(
                    db,
                    "SELECT dispute_status, COUNT(*) FROM calls WHERE dispute_status IS NOT NULL
                     GROUP BY dispute_status ORDER BY dispute_status",
                )?,
            ))
        })
        .await
    }
}
