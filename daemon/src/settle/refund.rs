//! The settlement worker's refunds. A refund, unlike a capture, is not
//! idempotent by nature (a second one gives back more money) and Stripe
//! keeps idempotency keys for 24 hours only: so a refund row that may have
//! been sent before (found `sent` or `unknown`) is first looked for among
//! its PaymentIntent's refunds by its id in the metadata, and sent again
//! (with its own key) only when it is not there. A lookup that fails sends
//! nothing; the row is looked at again later.

use tollbridge_billing::settlement::{self, Resolution};
use tollbridge_billing::stripe::{GatewayError, RefundRequest, Refunded};

use super::Settler;
use crate::clock::now_ms;
use crate::ledger::{Settlement as Row, SettlementState};

/// The metadata key holding our refund id on Stripe's Refund.
const REFUND_METADATA: &str = "refund";

impl Settler {
    /// Sends (or, after a lost answer, finds) a refund row's Refund.
    pub(super) async fn refund(&self, row: Row) {
        let Some(intent) = row.payment_intent.clone() else {
            self.refund_outcome(&row, None, Err("no PaymentIntent to refund".into()))
                .await;
            return;
        };
        if row.state != SettlementState::Pending {
            match self.find_refund(&row, &intent).await {
                Ok(Some(found)) => return self.refund_found(&row, &found).await,
                Ok(None) => {}
                Err(why) => return self.later(&row, why).await,
            }
        }
        match self.ledger.mark_sent(row.id.clone(), now_ms()).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(settlement = %row.id, "another node holds this refund; not sending it");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot mark a refund sent; not sending it");
                return;
            }
        }
        let request = RefundRequest {
            payment_intent: intent.clone(),
            amount: row.amount,
            reason: row.reason.clone(),
            metadata: [
                Some((REFUND_METADATA.to_owned(), row.id.clone())),
                row.call_id.clone().map(|call| ("call".to_owned(), call)),
            ]
            .into_iter()
            .flatten()
            .collect(),
            idempotency_key: row.key.clone(),
        };
        match self.gateway.refund(request).await {
            Ok(refunded) => self.refund_found(&row, &refunded).await,
            Err(GatewayError::Unknown(why)) => match self.find_refund(&row, &intent).await {
                Ok(Some(found)) => self.refund_found(&row, &found).await,
                _ => self.later(&row, why).await,
            },
            Err(e) => self.refund_outcome(&row, None, Err(e.to_string())).await,
        }
    }

    async fn find_refund(&self, row: &Row, intent: &str) -> Result<Option<Refunded>, String> {
        self.gateway
            .find_refund(intent.to_owned(), REFUND_METADATA.into(), row.id.clone())
            .await
            .map_err(|e| e.to_string())
    }

    async fn refund_found(&self, row: &Row, refunded: &Refunded) {
        let outcome = match settlement::resolve_refund(&refunded.status) {
            Resolution::Succeeded => Ok(()),
            Resolution::Failed(why) => Err(why),
            Resolution::Resend => Err("the refund did not take effect".into()),
        };
        self.refund_outcome(row, Some(refunded.id.clone()), outcome)
            .await;
    }

    async fn refund_outcome(
        &self,
        row: &Row,
        stripe_refund: Option<String>,
        outcome: Result<(), String>,
    ) {
        let (state, error) = match outcome {
            Ok(()) => (SettlementState::Succeeded, None),
            Err(why) => {
                tracing::error!(settlement = %row.id, reason = %why, "refund failed: needs a look");
                (SettlementState::Failed, Some(why))
            }
        };
        let recorded = self
            .ledger
            .refund_concluded(row.id.clone(), state, stripe_refund, error, None, now_ms())
            .await;
        if let Err(e) = recorded {
            tracing::error!(error = %e, settlement = %row.id, "cannot record a refund's outcome");
        }
        tracing::info!(settlement = %row.id, amount = row.amount, state = %state, "refund");
    }
}
