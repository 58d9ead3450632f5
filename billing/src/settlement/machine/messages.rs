//! What the settlement machine takes and gives: a row's state and facts,
//! the events fed to it, Stripe's requests and answers, and the outcomes
//! and commands it hands back.

use std::fmt;

use crate::settlement::Operation;
use crate::stripe::{GatewayError, HoldRequest, Intent, RefundRequest, Refunded, ReleaseReason};

/// Where a settlement row stands, as the ledger stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SettlementState {
    /// Written, not sent yet.
    Pending,
    /// Sent; its answer is not recorded yet (a crash may have cut it).
    Sent,
    /// Done.
    Succeeded,
    /// Refused for good; needs a look.
    Failed,
    /// The answer was lost; looked at again by reading Stripe back.
    Unknown,
}

impl SettlementState {
    /// Every state, in declaration order.
    pub const ALL: &'static [SettlementState] = &[
        SettlementState::Pending,
        SettlementState::Sent,
        SettlementState::Succeeded,
        SettlementState::Failed,
        SettlementState::Unknown,
    ];

    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            SettlementState::Pending => "pending",
            SettlementState::Sent => "sent",
            SettlementState::Succeeded => "succeeded",
            SettlementState::Failed => "failed",
            SettlementState::Unknown => "unknown",
        }
    }

    /// The state a stored word names.
    pub fn parse(word: &str) -> Option<SettlementState> {
        SettlementState::ALL
            .iter()
            .copied()
            .find(|state| state.as_str() == word)
    }

    /// Whether the row still has work to do.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            SettlementState::Pending | SettlementState::Sent | SettlementState::Unknown
        )
    }
}

impl fmt::Display for SettlementState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The metadata key holding our settlement id on a Stripe Refund.
pub const REFUND_METADATA: &str = "refund";

/// What a movement is: its row's facts, fixed when the row was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// `st_...` (for a refund, `rf_...`): the row's id.
    pub id: String,
    /// What it does.
    pub operation: Operation,
    /// Its idempotency key.
    pub key: String,
    /// Minor units.
    pub amount: i64,
    /// Lower-case ISO code.
    pub currency: String,
    /// The PaymentIntent acted on (or, for a hold, created).
    pub payment_intent: Option<String>,
    /// The Stripe customer (holds).
    pub customer: Option<String>,
    /// The card (holds).
    pub payment_method: Option<String>,
    /// The call it settles.
    pub call_id: Option<String>,
    /// The booking.
    pub booking_id: Option<String>,
    /// A release's or a refund's reason, as stored.
    pub reason: Option<String>,
}

/// What happened to a movement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The worker picked the row up (it is pending, or due for a look).
    Due,
    /// The row is committed `sent` and claimed by this node: send.
    Claimed,
    /// Another node holds the row: leave it alone.
    ClaimRefused,
    /// Stripe answered the request last asked for.
    Answered(Answer),
    /// A verified Stripe webhook about the row's PaymentIntent.
    Webhook {
        /// Its `type`.
        kind: String,
        /// The PaymentIntent's `amount_received`, when it has one.
        amount_received: Option<i64>,
    },
}

/// Stripe's answer to a [`Request`], of the kind the request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// To a hold, capture, cancel or retrieve: the PaymentIntent.
    Intent(Result<Intent, GatewayError>),
    /// To a lookup by metadata.
    Found(Result<Option<Intent>, GatewayError>),
    /// To a refund.
    Refund(Result<Refunded, GatewayError>),
    /// To a lookup of a refund by metadata.
    FoundRefund(Result<Option<Refunded>, GatewayError>),
}

/// A request to Stripe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Place a hold (answered with [`Answer::Intent`]).
    Hold(HoldRequest),
    /// Capture `amount` of a hold ([`Answer::Intent`]).
    Capture {
        /// `pi_...`
        payment_intent: String,
        /// Minor units.
        amount: i64,
        /// Idempotency key.
        key: String,
    },
    /// Release a hold ([`Answer::Intent`]).
    Cancel {
        /// `pi_...`
        payment_intent: String,
        /// Idempotency key.
        key: String,
        /// Why, in Stripe's words.
        reason: ReleaseReason,
    },
    /// Raise a hold's authorized amount to `amount` in all
    /// ([`Answer::Intent`]).
    Increment {
        /// `pi_...`
        payment_intent: String,
        /// The new total, minor units.
        amount: i64,
        /// The row's key.
        key: String,
    },
    /// Read a PaymentIntent back ([`Answer::Intent`]).
    Retrieve {
        /// `pi_...`
        payment_intent: String,
    },
    /// Find a customer's PaymentIntent by one metadata value
    /// ([`Answer::Found`]).
    Find {
        /// `cus_...`
        customer: String,
        /// Metadata key.
        key: String,
        /// Its value.
        value: String,
    },
    /// Give money back ([`Answer::Refund`]).
    Refund(RefundRequest),
    /// Find a PaymentIntent's refund by one metadata value
    /// ([`Answer::FoundRefund`]).
    FindRefund {
        /// `pi_...`
        payment_intent: String,
        /// Metadata key.
        key: String,
        /// Its value.
        value: String,
    },
}

/// What to record of a movement; it is then over, or (unknown) due again
/// at `look_again_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A hold is in place: record it and what follows from it (the call's
    /// capture or release, a fee's renewal).
    Held {
        /// `pi_...`
        payment_intent: String,
        /// Until when it can be captured (unix seconds), when Stripe said.
        capture_before: Option<i64>,
        /// Its charge can be raised by incremental authorization.
        incremental: bool,
    },
    /// Done.
    Succeeded {
        /// The PaymentIntent acted on, when read.
        payment_intent: Option<String>,
        /// The Refund made (`re_...`), for a refund.
        stripe_refund: Option<String>,
    },
    /// Refused for good.
    Failed {
        /// The PaymentIntent acted on, when read.
        payment_intent: Option<String>,
        /// The Refund made, for a refund.
        stripe_refund: Option<String>,
        /// Why.
        error: String,
        /// The card's decline code, when a card was declined.
        decline_code: Option<String>,
    },
    /// The answer was lost: look again at `look_again_at`.
    Unknown {
        /// Why it is not known.
        error: String,
        /// Unix milliseconds (the ledger keeps it no later than the hold's
        /// end allows).
        look_again_at: i64,
    },
}

impl Outcome {
    /// The state the row takes.
    pub fn state(&self) -> SettlementState {
        match self {
            Outcome::Held { .. } | Outcome::Succeeded { .. } => SettlementState::Succeeded,
            Outcome::Failed { .. } => SettlementState::Failed,
            Outcome::Unknown { .. } => SettlementState::Unknown,
        }
    }
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Commit the row `sent`, claimed by this node; answer with
    /// [`Event::Claimed`] or [`Event::ClaimRefused`].
    Claim,
    /// Send this to Stripe; answer with [`Event::Answered`].
    Send(Request),
    /// Record this outcome on the row.
    Record(Outcome),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_from_its_word() {
        for state in SettlementState::ALL {
            assert_eq!(SettlementState::parse(state.as_str()), Some(*state));
            assert_eq!(state.to_string(), state.as_str());
        }
        assert_eq!(SettlementState::parse("done"), None);
        let open: Vec<_> = SettlementState::ALL
            .iter()
            .filter(|state| state.is_open())
            .collect();
        assert_eq!(
            open,
            [
                &SettlementState::Pending,
                &SettlementState::Sent,
                &SettlementState::Unknown
            ]
        );
    }
}
