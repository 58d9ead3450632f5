//! Stripe's webhook events: recorded once by their id (on whichever node
//! receives them: the id is the table's key) and applied to the
//! settlement rows and call records they concern.

use serde_json::Value;

use super::db::Db;
use super::{Ledger, LedgerError};
use crate::args;

/// Applies one event to the rows of the PaymentIntent it concerns.
fn apply_to(
    db: &mut dyn Db,
    kind: &str,
    intent: &str,
    object: &Value,
    now: i64,
) -> Result<(), LedgerError> {
    let mut settle = |operation: &str,
                      state: &str,
                      error: Option<&str>|
     -> Result<u64, LedgerError> {
        db.execute(
            "UPDATE settlements SET state = ?3, last_error = COALESCE(?4, last_error), next_attempt_ms = NULL,
                 updated_ms = ?5
             WHERE payment_intent = ?1 AND operation = ?2 AND state IN ('pending', 'sent', 'unknown')",
            args![intent, operation, state, error, now],
        )
    };
    match kind {
        "payment_intent.succeeded" => {
            let received = object["amount_received"].as_i64().unwrap_or(-1);
            db.execute(
                "UPDATE settlements SET state = 'succeeded', next_attempt_ms = NULL, updated_ms = ?3
                 WHERE payment_intent = ?1 AND operation = 'capture' AND amount = ?2
                   AND state IN ('pending', 'sent', 'unknown')",
                args![intent, received, now],
            )?;
        }
        "payment_intent.canceled" => {
            settle("cancel", "succeeded", None)?;
            settle(
                "capture",
                "failed",
                Some("the hold was canceled or expired before capture"),
            )?;
        }
        "payment_intent.amount_capturable_updated" => {
            settle("authorize", "succeeded", None)?;
        }
        "payment_intent.payment_failed" => {
            settle("authorize", "failed", Some("payment_failed"))?;
        }
        "charge.refunded" | "charge.dispute.created" | "charge.expired" => {
            let detail = match kind {
                "charge.refunded" => "stripe: the charge was refunded",
                "charge.dispute.created" => "stripe: the customer disputed the charge",
                _ => "stripe: the uncaptured charge expired",
            };
            super::calls::lock_call_events(db, "payment_intent = ?1", args![intent])?;
            db.execute(
                "INSERT INTO call_events (call_id, seq, at_ms, status, detail)
                 SELECT id, (SELECT COALESCE(MAX(seq), 0) + 1 FROM call_events WHERE call_id = calls.id), ?2,
                        status, ?3
                 FROM calls WHERE payment_intent = ?1",
                args![intent, now, detail],
            )?;
        }
        _ => {}
    }
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
