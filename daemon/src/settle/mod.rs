//! Settling calls with Stripe: the card hold before the bridge, and the
//! worker that captures (or releases) it after the call and reconciles
//! whatever a crash or a lost answer left open.
//!
//! Every movement is a row committed before its request is sent (the
//! ledger's settlement rows); its key and parameters never change. What
//! to do with a row is the settlement machine's to say
//! (`tollbridge_billing::settlement::machine`); this module only carries
//! its commands out: claims and outcomes in the ledger, requests to
//! Stripe, the clock read for it.

pub mod timed;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tollbridge_billing::rating::Currency;
use tollbridge_billing::settlement::machine::{
    Answer, Command, Event, Facts, Movement, Outcome, Request,
};
use tollbridge_billing::settlement::{self, Operation};
use tollbridge_billing::stripe::Gateway;

use crate::clock::now_ms;
use crate::ledger::{Ledger, Settlement as Row};
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
    // The row was written `sent`, claimed by this node: the hold goes out,
    // its first send (a lost answer is looked for after 5 minutes, not
    // after the second rung of the ladder).
    let mut movement = Movement::new(row.facts.clone(), row.state, 0);
    movement.handle(Event::Claimed, now_ms());
    drive(ledger, gateway, &mut movement).await;
    let payment_intent = hold_result(movement.outcome())?;
    let covers = settlement::cap_for_hold(&terms.tariff, row.facts.amount, terms.remaining_seconds)
        .unwrap_or(terms.remaining_seconds);
    Ok(Held {
        payment_intent,
        amount: row.facts.amount,
        covers: Duration::from_secs(covers),
    })
}

/// Places the card hold for extension block `block` of a call routed to
/// `booking`, bringing its paid time to `covered`: committed first, then
/// sent, its answer recorded. `Err` says why the paid time stays as it is.
pub async fn place_extension_hold(
    ledger: &Ledger,
    gateway: &dyn Gateway,
    call_id: &str,
    booking: &str,
    block: u32,
    covered: Duration,
) -> Result<String, String> {
    let row = ledger
        .begin_extension_hold(
            call_id.to_owned(),
            booking.to_owned(),
            block,
            covered.as_secs(),
            now_ms(),
        )
        .await
        .map_err(|e| format!("cannot record the hold: {e}"))?
        .ok_or("the booking has no card to hold, or the block's price does not fit")?;
    let mut movement = row.movement();
    if row.state == tollbridge_billing::settlement::SettlementState::Sent {
        movement.handle(Event::Claimed, now_ms());
    }
    drive(ledger, gateway, &mut movement).await;
    hold_result(movement.outcome())
}

/// What a hold's outcome means for the call: its PaymentIntent, or why
/// nobody may talk on it.
fn hold_result(outcome: Option<&Outcome>) -> Result<String, String> {
    match outcome {
        Some(Outcome::Held { payment_intent, .. }) => Ok(payment_intent.clone()),
        Some(Outcome::Failed {
            decline_code: Some(code),
            ..
        }) => Err(code.clone()),
        Some(Outcome::Failed { error, .. } | Outcome::Unknown { error, .. }) => Err(error.clone()),
        Some(Outcome::Succeeded { .. }) | None => Err("the hold failed".into()),
    }
}

/// Carries out a movement's commands until it has none left: claims in
/// the ledger, requests to Stripe, outcomes recorded. The clock is read
/// here, and only here, for the machine.
pub(crate) async fn drive(ledger: &Ledger, gateway: &dyn Gateway, movement: &mut Movement) {
    while let Some(command) = movement.poll() {
        let id = movement.facts().id.clone();
        match command {
            Command::Claim => {
                let event = match ledger.mark_sent(id.clone(), now_ms()).await {
                    Ok(true) => Event::Claimed,
                    Ok(false) => {
                        tracing::info!(settlement = %id, "another node holds this settlement, or it concluded; not sending it");
                        Event::ClaimRefused
                    }
                    Err(e) => {
                        tracing::error!(error = %e, settlement = %id, "cannot mark a settlement sent; not sending it");
                        return;
                    }
                };
                movement.handle(event, now_ms());
            }
            Command::Send(request) => {
                let answer = send(gateway, request).await;
                movement.handle(Event::Answered(answer), now_ms());
            }
            Command::Record(outcome) => record(ledger, movement.facts(), &outcome).await,
        }
    }
}

/// Sends one request; the answer is of the kind the request asked for.
async fn send(gateway: &dyn Gateway, request: Request) -> Answer {
    match request {
        Request::Hold(hold) => Answer::Intent(gateway.hold(hold).await),
        Request::Capture {
            payment_intent,
            amount,
            key,
        } => Answer::Intent(gateway.capture(payment_intent, amount, key).await),
        Request::Cancel {
            payment_intent,
            key,
            reason,
        } => Answer::Intent(gateway.cancel(payment_intent, key, reason).await),
        Request::Increment {
            payment_intent,
            amount,
            key,
        } => Answer::Intent(gateway.increment(payment_intent, amount, key).await),
        Request::Retrieve { payment_intent } => {
            Answer::Intent(gateway.retrieve(payment_intent).await)
        }
        Request::Find {
            customer,
            key,
            value,
        } => Answer::Found(gateway.find(customer, key, value).await),
        Request::Refund(refund) => Answer::Refund(gateway.refund(refund).await),
        Request::FindRefund {
            payment_intent,
            key,
            value,
        } => Answer::FoundRefund(gateway.find_refund(payment_intent, key, value).await),
    }
}

/// Records a movement's outcome on its row (and, for a hold, what follows
/// from it, in the same transaction).
async fn record(ledger: &Ledger, facts: &Facts, outcome: &Outcome) {
    let now = now_ms();
    let id = facts.id.clone();
    let state = outcome.state();
    let refund = facts.operation == Operation::Refund;
    // What the row's columns take: the PaymentIntent read, the Refund
    // made, the error, when to look again.
    let (payment_intent, stripe_refund, error, next) = match outcome.clone() {
        Outcome::Held { .. } => (None, None, None, None),
        Outcome::Succeeded {
            payment_intent,
            stripe_refund,
        } => (payment_intent, stripe_refund, None, None),
        Outcome::Failed {
            payment_intent,
            stripe_refund,
            error,
            ..
        } => (payment_intent, stripe_refund, Some(error), None),
        Outcome::Unknown {
            error,
            look_again_at,
        } => (None, None, Some(error), Some(look_again_at)),
    };
    let recorded = match outcome {
        Outcome::Held {
            payment_intent,
            capture_before,
            incremental,
        } => {
            if *incremental
                && facts.operation == Operation::Authorize
                && let Err(e) = ledger.hold_is_raisable(id.clone()).await
            {
                tracing::warn!(error = %e, settlement = %id, "cannot note that the hold can be raised; its blocks will be holds of their own");
            }
            ledger
                .hold_succeeded(id.clone(), payment_intent.clone(), *capture_before, now)
                .await
        }
        // A refund that concluded says so on its call; one still unknown
        // only waits.
        Outcome::Succeeded { .. } | Outcome::Failed { .. } if refund => {
            ledger
                .refund_concluded(id.clone(), state, stripe_refund, error, None, now)
                .await
        }
        _ => {
            ledger
                .conclude_settlement(id.clone(), state, payment_intent, error, next, now)
                .await
        }
    };
    if let Err(e) = recorded {
        tracing::error!(error = %e, settlement = %id, "cannot record a settlement outcome; it will be read back");
    }
    match outcome {
        Outcome::Failed { error, .. } => {
            tracing::error!(settlement = %id, operation = %facts.operation.as_str(), reason = %error, "settlement failed: needs a look")
        }
        _ => {
            tracing::info!(settlement = %id, operation = %facts.operation.as_str(), amount = facts.amount, state = %state, "settlement")
        }
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

    /// Works on one row picked up from the ledger.
    async fn process(&self, row: Row) {
        let mut movement = row.movement();
        movement.handle(Event::Due, now_ms());
        drive(&self.ledger, self.gateway.as_ref(), &mut movement).await;
        if let (Operation::Authorize, Some(Outcome::Held { .. })) =
            (row.facts.operation, movement.outcome())
        {
            // The call (over by now) got its capture or release.
            self.wake();
        }
    }
}
