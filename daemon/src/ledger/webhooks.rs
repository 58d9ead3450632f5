//! Stripe's webhook events: recorded once by their id (on whichever node
//! receives them: the id is the table's key) and applied to the
//! settlement rows and call records they concern.

use serde_json::Value;

use tollbridge_billing::settlement::machine::{Command, Event, Outcome};

use super::db::Db;
use super::{Ledger, LedgerError};
use crate::args;

/// The calls a PaymentIntent (`?1`) holds money for: the one it is the
/// first hold of, or an extension block of.
const CALLS_OF_INTENT: &str =
    "id IN (SELECT call_id FROM settlements WHERE payment_intent = ?1 AND operation = 'authorize')";

/// Applies one event to the rows of the PaymentIntent it concerns.
fn apply_to(
    db: &mut dyn Db,
    kind: &str,
    intent: &str,
    object: &Value,
    now: i64,
) -> Result<(), LedgerError> {
    match kind {
        "payment_intent.succeeded"
        | "payment_intent.canceled"
        | "payment_intent.amount_capturable_updated"
        | "payment_intent.payment_failed" => {
            // Each open row of the PaymentIntent hears the event; the
            // settlement machine says what, if anything, it proves.
            let rows = db.query(
                &format!(
                    "SELECT {} FROM settlements
                     WHERE payment_intent = ?1 AND state IN ('pending', 'sent', 'unknown')
                     ORDER BY created_ms, id",
                    super::settlements::COLUMNS
                ),
                args![intent],
            )?;
            for row in &rows {
                let settlement = super::settlements::settlement_from(row)?;
                let mut movement = settlement.movement();
                movement.handle(
                    Event::Webhook {
                        kind: kind.to_owned(),
                        amount_received: object["amount_received"].as_i64(),
                    },
                    now,
                );
                if let Some(Command::Record(outcome)) = movement.poll() {
                    settled_by_webhook(db, &settlement.facts.id, &outcome, now)?;
                }
            }
        }
        "charge.refund.updated" | "refund.updated" | "refund.failed" => {
            super::calls::lock_call_events(db, CALLS_OF_INTENT, args![intent])?;
            super::refunds::refund_changed(db, object, now)?;
        }
        "charge.refunded" => {
            super::calls::lock_call_events(db, CALLS_OF_INTENT, args![intent])?;
            let total = object["amount_refunded"].as_i64().unwrap_or(0);
            // Our own refunds are told as they conclude; what no refund of
            // ours accounts for was made in Stripe's dashboard.
            for (call_id, booking, outside) in super::refunds::charge_refunded(db, intent, total)? {
                let data = serde_json::json!({
                    "payment_intent": intent,
                    "charge": object["id"],
                    "amount": outside,
                    "amount_refunded": total,
                    "source": "stripe",
                });
                super::events::emit(db, "refund.succeeded", &booking, Some(&call_id), data, now)?;
            }
            note_on_calls(db, intent, "stripe: the charge was refunded", now)?;
        }
        "charge.dispute.created"
        | "charge.dispute.updated"
        | "charge.dispute.closed"
        | "charge.dispute.funds_withdrawn"
        | "charge.dispute.funds_reinstated" => {
            super::calls::lock_call_events(db, CALLS_OF_INTENT, args![intent])?;
            super::refunds::dispute_changed(db, intent, object)?;
            let told = match kind {
                "charge.dispute.created" => Some((
                    "dispute.created",
                    "stripe: the customer disputed the charge",
                )),
                "charge.dispute.closed" => {
                    Some(("dispute.closed", "stripe: the dispute was closed"))
                }
                _ => None,
            };
            if let Some((platform_kind, detail)) = told {
                let calls = db.query(
                    &format!(
                        "SELECT id, booking_id FROM calls WHERE {CALLS_OF_INTENT} AND booking_id IS NOT NULL"
                    ),
                    args![intent],
                )?;
                for call in &calls {
                    let (call_id, booking) = (call.text(0)?, call.text(1)?);
                    let data = serde_json::json!({
                        "payment_intent": intent,
                        "charge": object["charge"],
                        "dispute": object["id"],
                        "status": object["status"],
                        "amount": object["amount"],
                        "reason": object["reason"],
                    });
                    super::events::emit(db, platform_kind, &booking, Some(&call_id), data, now)?;
                }
                note_on_calls(db, intent, detail, now)?;
            }
        }
        "charge.expired" => {
            super::calls::lock_call_events(db, CALLS_OF_INTENT, args![intent])?;
            note_on_calls(db, intent, "stripe: the uncaptured charge expired", now)?;
        }
        _ => {}
    }
    Ok(())
}

/// Records what a webhook proved of settlement row `id`, and tells the
/// platform.
fn settled_by_webhook(
    db: &mut dyn Db,
    id: &str,
    outcome: &Outcome,
    now: i64,
) -> Result<(), LedgerError> {
    let state = outcome.state();
    let error = match outcome {
        Outcome::Failed { error, .. } => Some(error.as_str()),
        _ => None,
    };
    db.execute(
        "UPDATE settlements SET state = ?2, last_error = COALESCE(?3, last_error), next_attempt_ms = NULL,
             updated_ms = ?4
         WHERE id = ?1",
        args![id, state.as_str(), error, now],
    )?;
    super::settlements::tell_platform(db, id, state, error, now)
}

/// Adds `detail` as an event to the calls of `intent` (their rows are
/// locked by the caller).
fn note_on_calls(db: &mut dyn Db, intent: &str, detail: &str, now: i64) -> Result<(), LedgerError> {
    db.execute(
        &format!(
            "INSERT INTO call_events (call_id, seq, at_ms, status, detail)
             SELECT id, (SELECT COALESCE(MAX(seq), 0) + 1 FROM call_events WHERE call_id = calls.id), ?2,
                    status, ?3
             FROM calls WHERE {CALLS_OF_INTENT}"
        ),
        args![intent, now, detail],
    )?;
    Ok(())
}

impl Ledger {
    /// Records a Stripe event once (by id) and applies it; false for a
    /// duplicate (already received here or on another node).
    pub async fn apply_stripe_event(
        &self,
        id: String,
        kind: String,
        object: Value,
        now_ms: i64,
    ) -> Result<bool, LedgerError> {
        self.run(move |db| {
            let fresh = db.execute(
                "INSERT INTO stripe_events (id, type, received_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO NOTHING",
                args![id.as_str(), kind.as_str(), now_ms],
            )? == 1;
            if fresh {
                let intent = match object["object"].as_str() {
                    Some("payment_intent") => object["id"].as_str(),
                    _ => object["payment_intent"].as_str(),
                };
                if let Some(intent) = intent {
                    apply_to(db, &kind, intent, &object, now_ms)?;
                }
                db.execute(
                    "UPDATE stripe_events SET processed_ms = ?2 WHERE id = ?1",
                    args![id.as_str(), now_ms],
                )?;
            }
            Ok(fresh)
        })
        .await
    }
}
