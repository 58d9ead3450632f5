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

use tollbridge_billing::settlement::blocks;
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
    // Each capture (one per hold the call placed, in order) with what
    // our refunds took from it, succeeded or on their way.
    let captures = db.query(
        "SELECT c.amount, c.currency, c.payment_intent,
                (SELECT CAST(COALESCE(SUM(r.amount), 0) AS BIGINT) FROM settlements r
                 WHERE r.call_id = c.call_id AND r.operation = 'refund' AND r.state <> 'failed'
                   AND r.payment_intent = c.payment_intent),
                (SELECT CAST(COALESCE(SUM(r.amount), 0) AS BIGINT) FROM settlements r
                 WHERE r.call_id = c.call_id AND r.operation = 'refund' AND r.state = 'succeeded')
         FROM settlements c
         WHERE c.call_id = ?1 AND c.operation = 'capture' AND c.state = 'succeeded' AND c.payment_intent IS NOT NULL
         ORDER BY COALESCE(c.block, 1), c.created_ms",
        args![call_id],
    )?;
    let Some(first) = captures.first() else {
        return Ok(Err(RefundRefused::NotCaptured));
    };
    let currency = first.text(1)?;
    // Refunds made outside Tollbridge (Stripe's dashboard) are known only
    // as a total: counted against the first capture.
    let outside = refunded.saturating_sub(first.int(4)?).max(0);
    let mut left = Vec::with_capacity(captures.len());
    for (i, capture) in captures.iter().enumerate() {
        let taken = capture.int(3)? + if i == 0 { outside } else { 0 };
        left.push(capture.int(0)?.saturating_sub(taken).max(0));
    }
    let (source, amount) = match blocks::refund_source(&left, refund.amount) {
        Ok(found) => found,
        Err(refusal) => return Ok(Err(refusal.into())),
    };
    let payment_intent = captures[source].text(2)?;
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
    // The call whose hold (the first or an extension block's) this is,
    // with our refunds from this charge and our succeeded ones from its
    // other charges.
    let calls = db.query(
        "SELECT c.id, c.booking_id,
                (SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM settlements s
                 WHERE s.call_id = c.id AND s.operation = 'refund' AND s.state <> 'failed'
                   AND s.payment_intent = ?1),
                (SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM settlements s
                 WHERE s.call_id = c.id AND s.operation = 'refund' AND s.state = 'succeeded'
                   AND s.payment_intent <> ?1)
         FROM calls c
         WHERE c.id IN (SELECT call_id FROM settlements WHERE payment_intent = ?1 AND operation = 'authorize')
           AND c.booking_id IS NOT NULL",
        args![payment_intent],
    )?;
    let mut outside = Vec::new();
    for call in &calls {
        let (id, ours_here, ours_elsewhere) = (call.text(0)?, call.int(2)?, call.int(3)?);
        db.execute(
            &format!(
                "UPDATE calls SET refunded_amount = {greatest}(refunded_amount, ?2) WHERE id = ?1"
            ),
            args![id.as_str(), amount_refunded + ours_elsewhere],
        )?;
        if amount_refunded > ours_here {
            outside.push((id, call.text(1)?, amount_refunded - ours_here));
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
        "UPDATE calls SET dispute_id = ?2, dispute_status = ?3, dispute_amount = ?4
         WHERE id IN (SELECT call_id FROM settlements WHERE payment_intent = ?1 AND operation = 'authorize')",
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
