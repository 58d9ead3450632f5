//! One money movement with Stripe (a settlement row: a hold, a capture, a
//! release, a cancellation-fee hold or a refund) as a sans-IO state
//! machine, in the manner of quinn-proto's `Connection`: the settlement
//! worker and the webhook handler feed it what happened ([`Event`]: the
//! row was picked up, claimed, answered, a webhook came) with `now`, and
//! [`Movement::poll`] says what to do next ([`Command`]: claim the row,
//! send a request, record an outcome with when to look again). It reads
//! no clock and touches no socket or database, so every path, lost
//! answers and crashes included, is tested on virtual time
//! (`billing/tests/machine/`).
//!
//! The rules it keeps:
//! - a request goes out only once its row is claimed (committed `sent`);
//! - a row that may have been sent before (found `sent` or `unknown`) is
//!   read back first, and sent again, with its own key and parameters,
//!   only when Stripe shows it did not take effect;
//! - a hold or a refund, which a resend could make twice once Stripe has
//!   forgotten the key (24 hours), is looked for by its metadata instead;
//! - an answer that is lost leaves the outcome `unknown`, looked at again
//!   after 5 minutes, an hour, then daily ([`super::reconcile_after`]).

use std::collections::VecDeque;

use super::{Operation, Resolution, reconcile_after, resolve, resolve_refund};
use crate::rating::Currency;
use crate::stripe::{GatewayError, HoldRequest, Intent, RefundRequest, Refunded, ReleaseReason};

mod messages;

pub use messages::{
    Answer, Command, Event, Facts, Outcome, REFUND_METADATA, Request, SettlementState,
};

/// Why the machine is waiting for Stripe.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Nothing asked.
    Idle,
    /// Reading back a row that may have been sent before.
    LookingBeforeSend,
    /// Waiting for the claim.
    Claiming,
    /// The request is out.
    Sending,
    /// The request's answer was lost (the reason kept): reading back.
    LookingAfterLoss(String),
    /// Outcome recorded, or left to another node.
    Done,
}

/// One movement and where it stands.
#[derive(Debug, Clone)]
pub struct Movement {
    facts: Facts,
    state: SettlementState,
    tries: u32,
    step: Step,
    commands: VecDeque<Command>,
    outcome: Option<Outcome>,
}

impl Movement {
    /// The movement of a row in `state`, sent `tries` times before this
    /// pick-up (the ledger counts the sends).
    pub fn new(facts: Facts, state: SettlementState, tries: u32) -> Movement {
        Movement {
            facts,
            state,
            tries,
            step: Step::Idle,
            commands: VecDeque::new(),
            outcome: None,
        }
    }

    /// Its facts.
    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    /// Where it stands now.
    pub fn state(&self) -> SettlementState {
        self.state
    }

    /// The outcome recorded, once there is one.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// When it wants to be looked at again (its timer), if ever.
    pub fn poll_timeout(&self) -> Option<i64> {
        match &self.outcome {
            Some(Outcome::Unknown { look_again_at, .. }) => Some(*look_again_at),
            _ => None,
        }
    }

    /// The next thing to do, if any.
    pub fn poll(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// Takes in what happened at `now` (unix milliseconds).
    pub fn handle(&mut self, event: Event, now: i64) {
        if !self.state.is_open() {
            return;
        }
        match event {
            Event::Due => self.due(),
            Event::Claimed => self.claimed(),
            Event::ClaimRefused => self.step = Step::Done,
            Event::Answered(answer) => self.answered(answer, now),
            Event::Webhook {
                kind,
                amount_received,
            } => self.webhook(&kind, amount_received),
        }
    }

    /// Picked up: send what is pending; read back what may have been sent.
    fn due(&mut self) {
        self.step = Step::Idle;
        self.outcome = None;
        let facts = &self.facts;
        let pending = self.state == SettlementState::Pending;
        let lookup = match facts.operation {
            Operation::Capture | Operation::Cancel | Operation::Increment => {
                let Some(intent) = facts.payment_intent.clone() else {
                    return self.fail(None, "no PaymentIntent to act on");
                };
                Request::Retrieve {
                    payment_intent: intent,
                }
            }
            Operation::Authorize => {
                // A call's hold is sent as its row is written; one found
                // here lost its answer and is only ever looked for.
                let (Some(customer), Some(call)) = (facts.customer.clone(), facts.call_id.clone())
                else {
                    return self.fail(None, "no customer or call to look up");
                };
                // The first hold is found by its call (holds placed before
                // extension blocks existed carry no `hold`); a block's by
                // its own key.
                let (key, value) = if facts.key == super::call_key(&call, Operation::Authorize) {
                    ("call", call)
                } else {
                    ("hold", facts.key.clone())
                };
                self.ask(
                    Step::LookingBeforeSend,
                    Request::Find {
                        customer,
                        key: key.into(),
                        value,
                    },
                );
                return;
            }
            Operation::CancellationFee => {
                let (Some(customer), Some(_), Some(_)) = (
                    facts.customer.clone(),
                    facts.payment_method.as_ref(),
                    facts.booking_id.as_ref(),
                ) else {
                    return self.fail(None, "no card or booking");
                };
                Request::Find {
                    customer,
                    key: "fee_hold".into(),
                    value: facts.key.clone(),
                }
            }
            Operation::Refund => {
                let Some(intent) = facts.payment_intent.clone() else {
                    return self.fail(None, "no PaymentIntent to refund");
                };
                Request::FindRefund {
                    payment_intent: intent,
                    key: REFUND_METADATA.into(),
                    value: facts.id.clone(),
                }
            }
        };
        if pending {
            self.claim();
        } else {
            self.ask(Step::LookingBeforeSend, lookup);
        }
    }

    /// Claims the row, after the checks the request needs.
    fn claim(&mut self) {
        if matches!(
            self.facts.operation,
            Operation::Authorize | Operation::CancellationFee
        ) && Currency::from_code(&self.facts.currency).is_none()
        {
            let why = format!("unknown currency {}", self.facts.currency);
            return self.fail(None, &why);
        }
        self.step = Step::Claiming;
        self.commands.push_back(Command::Claim);
    }

    /// Claimed: the request goes out.
    fn claimed(&mut self) {
        if matches!(self.step, Step::Done) {
            return;
        }
        self.state = SettlementState::Sent;
        match self.request() {
            Ok(request) => self.ask(Step::Sending, request),
            Err(why) => self.fail(None, &why),
        }
    }

    /// The request the row stands for.
    fn request(&self) -> Result<Request, String> {
        let facts = &self.facts;
        let intent = || {
            facts
                .payment_intent
                .clone()
                .ok_or_else(|| "no PaymentIntent to act on".to_owned())
        };
        Ok(match facts.operation {
            Operation::Capture => Request::Capture {
                payment_intent: intent()?,
                amount: facts.amount,
                key: facts.key.clone(),
            },
            Operation::Increment => Request::Increment {
                payment_intent: intent()?,
                amount: facts.amount,
                key: facts.key.clone(),
            },
            Operation::Cancel => Request::Cancel {
                payment_intent: intent()?,
                key: facts.key.clone(),
                reason: ReleaseReason::from_stored(facts.reason.as_deref()),
            },
            Operation::Authorize | Operation::CancellationFee => {
                let currency = Currency::from_code(&facts.currency)
                    .ok_or_else(|| format!("unknown currency {}", facts.currency))?;
                let (Some(customer), Some(payment_method), Some(booking)) = (
                    facts.customer.clone(),
                    facts.payment_method.clone(),
                    facts.booking_id.clone(),
                ) else {
                    return Err("no card or booking".into());
                };
                let metadata = if facts.operation == Operation::Authorize {
                    vec![
                        ("call".into(), facts.call_id.clone().unwrap_or_default()),
                        ("booking".into(), booking),
                        ("attempt".into(), "1".into()),
                        ("hold".into(), facts.key.clone()),
                    ]
                } else {
                    vec![
                        ("fee_booking".into(), booking.clone()),
                        ("fee_hold".into(), facts.key.clone()),
                        ("booking".into(), booking),
                    ]
                };
                Request::Hold(HoldRequest {
                    amount: facts.amount,
                    currency,
                    customer,
                    payment_method,
                    metadata,
                    idempotency_key: facts.key.clone(),
                    // A call's hold may be raised for an extension block
                    // where the card allows it.
                    incremental: facts.operation == Operation::Authorize,
                })
            }
            Operation::Refund => Request::Refund(RefundRequest {
                payment_intent: intent()?,
                amount: facts.amount,
                reason: facts.reason.clone(),
                metadata: [
                    Some((REFUND_METADATA.to_owned(), facts.id.clone())),
                    facts.call_id.clone().map(|call| ("call".to_owned(), call)),
                ]
                .into_iter()
                .flatten()
                .collect(),
                idempotency_key: facts.key.clone(),
            }),
        })
    }

    fn answered(&mut self, answer: Answer, now: i64) {
        let step = std::mem::replace(&mut self.step, Step::Idle);
        match (step, answer) {
            // Read back before sending.
            (Step::LookingBeforeSend, Answer::Intent(Ok(read))) => {
                if !self.conclude_from(&read) {
                    self.claim();
                }
            }
            // The read failed: capture and release are safe to resend
            // under their key, which is what they would do.
            (Step::LookingBeforeSend, Answer::Intent(Err(_))) => self.claim(),
            (Step::LookingBeforeSend, Answer::Found(Ok(Some(found)))) => {
                if self.facts.operation == Operation::Authorize
                    && found.status != "requires_capture"
                {
                    let why = format!("the hold is {}", found.status);
                    return self.fail(Some(found.id), &why);
                }
                self.conclude_from(&found);
            }
            (Step::LookingBeforeSend, Answer::Found(Ok(None))) => {
                if self.facts.operation == Operation::Authorize {
                    self.fail(None, "no PaymentIntent was created");
                } else {
                    self.claim();
                }
            }
            (Step::LookingBeforeSend, Answer::FoundRefund(Ok(Some(found)))) => {
                self.refund_found(&found)
            }
            (Step::LookingBeforeSend, Answer::FoundRefund(Ok(None))) => self.claim(),
            (Step::LookingBeforeSend, Answer::Found(Err(e)) | Answer::FoundRefund(Err(e))) => {
                self.later(e.to_string(), now)
            }
            // The request's own answer.
            (Step::Sending, Answer::Intent(Ok(read))) => {
                if !self.conclude_from(&read) {
                    self.later("the PaymentIntent did not change".into(), now);
                }
            }
            (Step::Sending, Answer::Intent(Err(GatewayError::Unknown(why)))) => {
                match self.facts.operation {
                    Operation::Capture | Operation::Cancel | Operation::Increment => {
                        if let Some(intent) = self.facts.payment_intent.clone() {
                            self.ask(
                                Step::LookingAfterLoss(why),
                                Request::Retrieve {
                                    payment_intent: intent,
                                },
                            );
                        } else {
                            self.later(why, now);
                        }
                    }
                    // A hold is found by its metadata when next due.
                    _ => self.later(why, now),
                }
            }
            (Step::Sending, Answer::Refund(Ok(refunded))) => self.refund_found(&refunded),
            (Step::Sending, Answer::Refund(Err(GatewayError::Unknown(why)))) => {
                match self.facts.payment_intent.clone() {
                    Some(intent) => self.ask(
                        Step::LookingAfterLoss(why),
                        Request::FindRefund {
                            payment_intent: intent,
                            key: REFUND_METADATA.into(),
                            value: self.facts.id.clone(),
                        },
                    ),
                    None => self.later(why, now),
                }
            }
            (Step::Sending, Answer::Intent(Err(e)) | Answer::Refund(Err(e))) => {
                let decline_code = match &e {
                    GatewayError::Declined { code, .. } => Some(code.clone()),
                    _ => None,
                };
                self.record(Outcome::Failed {
                    payment_intent: None,
                    stripe_refund: None,
                    error: e.to_string(),
                    decline_code,
                });
            }
            // Read back after a lost answer.
            (Step::LookingAfterLoss(why), Answer::Intent(Ok(read))) => {
                if !self.conclude_from(&read) {
                    self.later(why, now);
                }
            }
            (Step::LookingAfterLoss(_), Answer::FoundRefund(Ok(Some(found)))) => {
                self.refund_found(&found)
            }
            (Step::LookingAfterLoss(why), _) => self.later(why, now),
            // An answer to nothing asked (a driver's mistake): ignored.
            (step, _) => self.step = step,
        }
    }

    /// Concludes from a PaymentIntent read back; false when the request
    /// must be sent (again).
    fn conclude_from(&mut self, read: &Intent) -> bool {
        let operation = self.facts.operation;
        if operation == Operation::Increment {
            // Raised when the hold stands at the new total or more.
            match read.status.as_str() {
                "requires_capture" if read.amount >= self.facts.amount => {
                    self.record(Outcome::Held {
                        payment_intent: read.id.clone(),
                        capture_before: read.capture_before,
                        incremental: read.incremental_authorization,
                    })
                }
                "requires_capture" => return false,
                other => {
                    let why = format!("the hold is {other}");
                    self.fail(Some(read.id.clone()), &why)
                }
            }
            return true;
        }
        match resolve(
            operation,
            &read.status,
            read.amount_received,
            self.facts.amount,
        ) {
            Resolution::Succeeded
                if matches!(operation, Operation::Authorize | Operation::CancellationFee) =>
            {
                self.record(Outcome::Held {
                    payment_intent: read.id.clone(),
                    capture_before: read.capture_before,
                    incremental: read.incremental_authorization,
                })
            }
            Resolution::Succeeded => self.record(Outcome::Succeeded {
                payment_intent: Some(read.id.clone()),
                stripe_refund: None,
            }),
            Resolution::Failed(why) => self.fail(Some(read.id.clone()), &why),
            Resolution::Resend
                if matches!(operation, Operation::Authorize | Operation::CancellationFee) =>
            {
                let why = format!("the hold is {}", read.status);
                self.fail(Some(read.id.clone()), &why)
            }
            Resolution::Resend => return false,
        }
        true
    }

    fn refund_found(&mut self, found: &Refunded) {
        match resolve_refund(&found.status) {
            Resolution::Succeeded => self.record(Outcome::Succeeded {
                payment_intent: None,
                stripe_refund: Some(found.id.clone()),
            }),
            Resolution::Failed(why) => self.record(Outcome::Failed {
                payment_intent: None,
                stripe_refund: Some(found.id.clone()),
                error: why,
                decline_code: None,
            }),
            Resolution::Resend => self.record(Outcome::Failed {
                payment_intent: None,
                stripe_refund: Some(found.id.clone()),
                error: "the refund did not take effect".into(),
                decline_code: None,
            }),
        }
    }

    /// What a webhook says of the row, when it says anything.
    fn webhook(&mut self, kind: &str, amount_received: Option<i64>) {
        let operation = self.facts.operation;
        let intent = self.facts.payment_intent.clone();
        let succeeded = Outcome::Succeeded {
            payment_intent: intent.clone(),
            stripe_refund: None,
        };
        let failed = |why: &str| Outcome::Failed {
            payment_intent: intent.clone(),
            stripe_refund: None,
            error: why.to_owned(),
            decline_code: None,
        };
        let outcome = match (kind, operation) {
            ("payment_intent.succeeded", Operation::Capture)
                if amount_received == Some(self.facts.amount) =>
            {
                succeeded
            }
            ("payment_intent.canceled", Operation::Cancel) => succeeded,
            ("payment_intent.canceled", Operation::Capture) => {
                failed("the hold was canceled or expired before capture")
            }
            ("payment_intent.amount_capturable_updated", Operation::Authorize) => succeeded,
            ("payment_intent.payment_failed", Operation::Authorize) => failed("payment_failed"),
            _ => return,
        };
        self.record(outcome);
    }

    fn ask(&mut self, step: Step, request: Request) {
        self.step = step;
        self.commands.push_back(Command::Send(request));
    }

    fn fail(&mut self, payment_intent: Option<String>, why: &str) {
        self.record(Outcome::Failed {
            payment_intent,
            stripe_refund: None,
            error: why.to_owned(),
            decline_code: None,
        });
    }

    /// Leaves the outcome unknown and looks again later.
    fn later(&mut self, why: String, now: i64) {
        let after = reconcile_after(self.tries.saturating_add(1));
        let after_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
        self.record(Outcome::Unknown {
            error: why,
            look_again_at: now.saturating_add(after_ms),
        });
    }

    fn record(&mut self, outcome: Outcome) {
        self.state = outcome.state();
        self.step = Step::Done;
        self.outcome = Some(outcome.clone());
        self.commands.push_back(Command::Record(outcome));
    }
}
