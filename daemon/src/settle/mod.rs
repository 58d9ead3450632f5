//! Settling calls with Stripe: the card hold before the bridge, and the
//! worker that captures (or releases) it after the call and reconciles
//! whatever a crash or a lost answer left open.
//!
//! Every movement is a row committed before its request is sent (the
//! ledger's settlement rows); its key and parameters never change. A request whose
//! outcome is unknown is settled by reading the PaymentIntent back (at
//! once, then after 5 min, 1 h, daily), never by sending something else
//! under the same key.

mod refund;
pub mod timed;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tollbridge_billing::rating::Currency;
use tollbridge_billing::settlement::{self, Operation, Resolution};
use tollbridge_billing::stripe::{Gateway, GatewayError, HoldRequest, Intent, ReleaseReason};

use crate::clock::now_ms;
use crate::ledger::{Ledger, Settlement as Row, SettlementState};
use crate::shutdown::Shutdown;

/// How often the worker looks for due rows when nobody wakes it.
const POLL: Duration = Duration::from_secs(1);

/// The lease under which one node at a time scans for fee holds to renew
/// and no-shows to charge.
const RECONCILER_LEASE: &str = "reconciler";

/// How long the reconciler lease outlives its holder's last renewal (it
/// renews every [`POLL`] while alive).
const RECONCILER_LEASE_TTL: Duration = Duration::from_secs(30);

/// A hold that succeeded: the PaymentIntent, and the talk time it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// `pi_...`
    pub payment_intent: String,
    /// Minor units held.
    pub amount: i64,
    /// The cap it covers.
    pub covers: Duration,
}

/// Places the card hold for a call routed to `booking`: the price of its
/// cap, off-session, manual capture. The row is committed first; the
/// answer is recorded on it and on the call. `Err` says why nobody may
/// talk (declined, authentication required, or an outcome still unknown).
pub async fn place_hold(
    ledger: &Ledger,
    gateway: &dyn Gateway,
    call_id: &str,
    booking: &str,
) -> Result<Held, String> {
    let prepared = ledger
        .begin_hold(call_id.to_owned(), booking.to_owned(), now_ms())
        .await
        .map_err(|e| format!("cannot record the hold: {e}"))?;
    let Some((row, terms)) = prepared else {
        return Err("the booking has no card to hold, or its cap's price does not fit".into());
    };
    let request = HoldRequest {
        amount: row.amount,
        currency: terms.tariff.currency,
        customer: terms.customer.clone(),
        payment_method: terms.payment_method.clone(),
        metadata: vec![
            ("call".into(), call_id.to_owned()),
            ("booking".into(), booking.to_owned()),
            ("attempt".into(), "1".into()),
        ],
        idempotency_key: row.key.clone(),
    };
    let started = std::time::Instant::now();
    let answer = gateway.hold(request).await;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        ok = answer.is_ok(),
        "stripe hold answered"
    );
    let (state, intent_id, error, next) = match &answer {
        Ok(intent) => {
            match settlement::resolve(Operation::Authorize, &intent.status, 0, row.amount) {
                Resolution::Succeeded => (
                    SettlementState::Succeeded,
                    Some(intent.id.clone()),
                    None,
                    None,
                ),
                Resolution::Failed(why) => (
                    SettlementState::Failed,
                    Some(intent.id.clone()),
                    Some(why),
                    None,
                ),
                Resolution::Resend => (
                    SettlementState::Failed,
                    Some(intent.id.clone()),
                    Some(format!("the hold is {}", intent.status)),
                    None,
                ),
            }
        }
        Err(GatewayError::Unknown(why)) => (
            SettlementState::Unknown,
            None,
            Some(why.clone()),
            Some(now_ms() + settlement::reconcile_after(1).as_millis() as i64),
        ),
        Err(e) => (SettlementState::Failed, None, Some(e.to_string()), None),
    };
    let capture_before = answer
        .as_ref()
        .ok()
        .and_then(|intent| intent.capture_before);
    let amount = row.amount;
    // All or nothing: should this fail, the row stays `sent` and the
    // reconciler finds the hold by its metadata.
    let recorded = match (state, intent_id.clone()) {
        (SettlementState::Succeeded, Some(intent)) => {
            ledger
                .hold_succeeded(row.id.clone(), intent, capture_before, now_ms())
                .await
        }
        _ => {
            ledger
                .conclude_settlement(
                    row.id.clone(),
                    state,
                    intent_id.clone(),
                    error.clone(),
                    next,
                    now_ms(),
                )
                .await
        }
    };
    if let Err(e) = recorded {
        tracing::error!(error = %e, settlement = %row.id, "cannot record the hold's answer; the reconciler will read it back");
    }
    match (state, intent_id) {
        (SettlementState::Succeeded, Some(payment_intent)) => {
            let covers = settlement::cap_for_hold(&terms.tariff, amount, terms.remaining_seconds)
                .unwrap_or(terms.remaining_seconds);
            Ok(Held {
                payment_intent,
                amount,
                covers: Duration::from_secs(covers),
            })
        }
        _ => Err(match answer {
            Err(GatewayError::Declined { code, .. }) => code,
            _ => error.unwrap_or_else(|| "the hold failed".into()),
        }),
    }
}

/// The least charges the Stripe account takes (`stripe.settlement_currency`,
/// `stripe.minimum_charge`), as billing reads them. Codes the config
/// checked already; anything else is left out.
pub fn minimums(stripe: &tollbridge_config::StripeConfig) -> settlement::Minimums {
    settlement::Minimums {
        settlement: stripe
            .settlement_currency
            .as_deref()
            .and_then(Currency::from_code),
        configured: stripe
            .minimum_charge
            .iter()
            .filter_map(|(code, minor)| Currency::from_code(code).map(|c| (c, *minor)))
            .collect(),
    }
}

/// The settlement worker.
pub struct Settler {
    ledger: Ledger,
    gateway: Arc<dyn Gateway>,
    wake: Notify,
}

impl std::fmt::Debug for Settler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settler").finish()
    }
}

impl Settler {
    /// A worker over `ledger` sending through `gateway`.
    pub fn new(ledger: Ledger, gateway: Arc<dyn Gateway>) -> Arc<Settler> {
        Arc::new(Settler {
            ledger,
            gateway,
            wake: Notify::new(),
        })
    }

    /// The gateway, for holds.
    pub fn gateway(&self) -> &dyn Gateway {
        self.gateway.as_ref()
    }

    /// Asks the worker to look for due rows now (a call just ended).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Works until the daemon stops: first every open row (the start-up
    /// reconciliation), then whatever becomes due. A row in hand when the
    /// stop comes is finished (its request answered and recorded) first.
    pub async fn run(self: Arc<Self>, mut shutdown: Shutdown) {
        let mut all_open = true;
        loop {
            if shutdown.is_requested() {
                return;
            }
            let due = self.ledger.claim_due_settlements(now_ms(), all_open).await;
            match due {
                Ok(due) => {
                    if all_open && !due.is_empty() {
                        tracing::info!(rows = due.len(), "reconciling open settlements");
                    }
                    for row in due {
                        if shutdown.is_requested() {
                            break;
                        }
                        self.process(row).await;
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read due settlements"),
            }
            all_open = false;
            if self.scan_for_fees().await {
                continue;
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                () = shutdown.requested() => return,
            }
        }
    }

    /// The reconciler's scans for fee holds to renew and no-shows (closed
    /// by `bookings::windows`) to charge, on one node at a time (the node
    /// holding the lease); true when it wrote rows to work on at once.
    async fn scan_for_fees(&self) -> bool {
        match self
            .ledger
            .hold_lease(RECONCILER_LEASE, RECONCILER_LEASE_TTL)
            .await
        {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                tracing::error!(error = %e, "cannot take the reconciler lease");
                return false;
            }
        }
        match self.ledger.renew_fee_holds(now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                bookings = n,
                "cancellation-fee holds renewed before they lapse"
            ),
            Err(e) => tracing::error!(error = %e, "cannot renew fee holds"),
        }
        match self.ledger.fee_no_shows(now_ms()).await {
            Ok(0) => false,
            Ok(n) => {
                tracing::info!(bookings = n, "cancellation fees due: no call in the window");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot look for no-shows");
                false
            }
        }
    }

    async fn record(
        &self,
        row: &Row,
        state: SettlementState,
        intent: Option<String>,
        error: Option<String>,
        next: Option<i64>,
    ) {
        let result = self
            .ledger
            .conclude_settlement(row.id.clone(), state, intent, error, next, now_ms())
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, settlement = %row.id, "cannot record a settlement outcome");
        }
        tracing::info!(settlement = %row.id, operation = %row.operation.as_str(), amount = row.amount, state = %state, "settlement");
    }

    async fn process(&self, row: Row) {
        match row.operation {
            Operation::Authorize => self.reconcile_hold(row).await,
            Operation::CancellationFee => self.fee_hold(row).await,
            operation @ (Operation::Capture | Operation::Cancel) => self.send(row, operation).await,
            Operation::Refund => self.refund(row).await,
        }
    }

    /// Sends a capture or cancel (again, with its own key and parameters).
    async fn send(&self, row: Row, operation: Operation) {
        let Some(intent) = row.payment_intent.clone() else {
            self.record(
                &row,
                SettlementState::Failed,
                None,
                Some("no PaymentIntent to act on".into()),
                None,
            )
            .await;
            return;
        };
        // A row found sent or unknown may have taken effect: read first.
        if row.state != SettlementState::Pending
            && let Ok(read) = self.gateway.retrieve(intent.clone()).await
            && self.conclude_from(&row, operation, &read).await
        {
            return;
        }
        match self.ledger.mark_sent(row.id.clone(), now_ms()).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(settlement = %row.id, "another node holds this settlement; not sending it");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot mark a settlement sent; not sending it");
                return;
            }
        }
        let answer = match operation {
            Operation::Capture => {
                self.gateway
                    .capture(intent.clone(), row.amount, row.key.clone())
                    .await
            }
            _ => {
                let reason = ReleaseReason::from_stored(row.reason.as_deref());
                self.gateway
                    .cancel(intent.clone(), row.key.clone(), reason)
                    .await
            }
        };
        match answer {
            Ok(read) => {
                if !self.conclude_from(&row, operation, &read).await {
                    self.later(&row, "the PaymentIntent did not change".into())
                        .await;
                }
            }
            Err(GatewayError::Unknown(why)) => match self.gateway.retrieve(intent).await {
                Ok(read) if self.conclude_from(&row, operation, &read).await => {}
                _ => self.later(&row, why).await,
            },
            Err(e) => {
                self.record(
                    &row,
                    SettlementState::Failed,
                    None,
                    Some(e.to_string()),
                    None,
                )
                .await
            }
        }
    }

    /// Records a hold that succeeded and what follows from it.
    async fn record_held(&self, row: &Row, read: &Intent) {
        let result = self
            .ledger
            .hold_succeeded(
                row.id.clone(),
                read.id.clone(),
                read.capture_before,
                now_ms(),
            )
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, settlement = %row.id, "cannot record a hold");
        }
        tracing::info!(settlement = %row.id, operation = %row.operation.as_str(), amount = row.amount, capture_before = ?read.capture_before, "hold placed");
    }

    /// Settles `row` from a PaymentIntent read back; false when it must
    /// be sent (again).
    async fn conclude_from(&self, row: &Row, operation: Operation, read: &Intent) -> bool {
        match settlement::resolve(operation, &read.status, read.amount_received, row.amount) {
            Resolution::Succeeded
                if matches!(operation, Operation::Authorize | Operation::CancellationFee) =>
            {
                self.record_held(row, read).await;
                true
            }
            Resolution::Succeeded => {
                self.record(
                    row,
                    SettlementState::Succeeded,
                    Some(read.id.clone()),
                    None,
                    None,
                )
                .await;
                true
            }
            Resolution::Failed(why) => {
                tracing::error!(settlement = %row.id, reason = %why, "settlement failed: needs a look");
                self.record(
                    row,
                    SettlementState::Failed,
                    Some(read.id.clone()),
                    Some(why),
                    None,
                )
                .await;
                true
            }
            Resolution::Resend => false,
        }
    }

    /// Leaves the outcome unknown and looks again later.
    async fn later(&self, row: &Row, why: String) {
        let tries = u32::try_from(row.tries + 1).unwrap_or(u32::MAX);
        let next = now_ms() + settlement::reconcile_after(tries).as_millis() as i64;
        self.record(row, SettlementState::Unknown, None, Some(why), Some(next))
            .await;
    }

    /// Places (or, after a lost answer, finds) a booking's
    /// cancellation-fee hold.
    async fn fee_hold(&self, row: Row) {
        let (Some(customer), Some(payment_method), Some(booking)) = (
            row.customer.clone(),
            row.payment_method.clone(),
            row.booking_id.clone(),
        ) else {
            self.record(
                &row,
                SettlementState::Failed,
                None,
                Some("no card or booking".into()),
                None,
            )
            .await;
            return;
        };
        if row.state != SettlementState::Pending {
            match self
                .gateway
                .find(customer.clone(), "fee_hold".into(), row.key.clone())
                .await
            {
                Ok(Some(intent)) => {
                    self.conclude_from(&row, Operation::CancellationFee, &intent)
                        .await;
                    return;
                }
                Ok(None) => {}
                Err(e) => {
                    self.later(&row, e.to_string()).await;
                    return;
                }
            }
        }
        let Some(currency) = Currency::from_code(&row.currency) else {
            self.record(
                &row,
                SettlementState::Failed,
                None,
                Some(format!("unknown currency {}", row.currency)),
                None,
            )
            .await;
            return;
        };
        match self.ledger.mark_sent(row.id.clone(), now_ms()).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(settlement = %row.id, "another node holds this settlement; not sending it");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot mark a settlement sent; not sending it");
                return;
            }
        }
        let request = HoldRequest {
            amount: row.amount,
            currency,
            customer,
            payment_method,
            metadata: vec![
                ("fee_booking".into(), booking.clone()),
                ("fee_hold".into(), row.key.clone()),
                ("booking".into(), booking),
            ],
            idempotency_key: row.key.clone(),
        };
        match self.gateway.hold(request).await {
            Ok(intent) => {
                // A hold resolves to succeeded or failed, never to a resend.
                self.conclude_from(&row, Operation::CancellationFee, &intent)
                    .await;
            }
            Err(GatewayError::Unknown(why)) => self.later(&row, why).await,
            Err(e) => {
                self.record(
                    &row,
                    SettlementState::Failed,
                    None,
                    Some(e.to_string()),
                    None,
                )
                .await
            }
        }
    }

    /// A hold whose answer was lost: find it by its metadata. Found and
    /// held, it is recorded, and the call (over by now) gets its capture or
    /// release; not found, it never happened.
    async fn reconcile_hold(&self, row: Row) {
        let (Some(customer), Some(call)) = (row.customer.clone(), row.call_id.clone()) else {
            self.record(
                &row,
                SettlementState::Failed,
                None,
                Some("no customer or call to look up".into()),
                None,
            )
            .await;
            return;
        };
        match self.gateway.find(customer, "call".into(), call).await {
            Ok(Some(intent)) if intent.status == "requires_capture" => {
                // The call (over by now) gets its capture or release in
                // the same transaction.
                self.record_held(&row, &intent).await;
                self.wake();
            }
            Ok(Some(intent)) => {
                self.record(
                    &row,
                    SettlementState::Failed,
                    Some(intent.id),
                    Some(format!("the hold is {}", intent.status)),
                    None,
                )
                .await
            }
            Ok(None) => {
                self.record(
                    &row,
                    SettlementState::Failed,
                    None,
                    Some("no PaymentIntent was created".into()),
                    None,
                )
                .await
            }
            Err(e) => self.later(&row, e.to_string()).await,
        }
    }
}
