//! Stripe as far as settlement sees it: PaymentIntents, Refunds and
//! idempotency keys kept, and faults on demand (an answer lost after the
//! request took effect, a request that never arrived, keys forgotten).

use std::collections::{HashMap, VecDeque};

use tollbridge_billing::settlement::machine::{Answer, Request};
use tollbridge_billing::stripe::{GatewayError, Intent, Refunded};

/// What Stripe does with the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answers.
    None,
    /// Does it, but the answer never arrives.
    LoseAnswer,
    /// Never receives it.
    Down,
}

/// Stripe as far as settlement sees it.
#[derive(Default)]
pub struct Stripe {
    pub intents: HashMap<String, Intent>,
    pub customers: HashMap<String, String>,
    pub refunds: Vec<(String, Refunded, HashMap<String, String>)>,
    /// Idempotency key -> (a fingerprint of the request, its result).
    pub keys: HashMap<String, (String, Answer)>,
    pub faults: VecDeque<Fault>,
    /// Requests that moved money, as (kind, payment intent, amount).
    pub moved: Vec<(&'static str, String, i64)>,
    /// Every request received, for assertions on what was sent.
    pub received: Vec<Request>,
    pub next_id: u32,
}

impl Stripe {
    pub fn with_hold(amount: i64) -> (Stripe, String) {
        let mut stripe = Stripe::default();
        let id = stripe.create_intent("cus_1", amount, HashMap::new());
        (stripe, id)
    }

    pub fn create_intent(
        &mut self,
        customer: &str,
        amount: i64,
        metadata: HashMap<String, String>,
    ) -> String {
        self.next_id += 1;
        let id = format!("pi_{}", self.next_id);
        self.intents.insert(
            id.clone(),
            Intent {
                id: id.clone(),
                status: "requires_capture".into(),
                amount,
                amount_capturable: amount,
                amount_received: 0,
                incremental_authorization: false,
                metadata,
                capture_before: Some(1_900_000_000),
            },
        );
        self.customers.insert(id.clone(), customer.to_owned());
        id
    }

    pub fn forget_keys(&mut self) {
        self.keys.clear();
    }

    pub fn captures(&self) -> usize {
        self.moved.iter().filter(|m| m.0 == "capture").count()
    }

    pub fn refunded(&self) -> i64 {
        self.moved
            .iter()
            .filter(|m| m.0 == "refund")
            .map(|m| m.2)
            .sum()
    }

    pub fn handle(&mut self, request: Request) -> Result<Answer, String> {
        self.received.push(request.clone());
        let fault = self.faults.pop_front().unwrap_or(Fault::None);
        if fault == Fault::Down {
            return Err("connection refused".into());
        }
        let answer = self.apply(request);
        match fault {
            Fault::LoseAnswer => Err("timed out".into()),
            _ => Ok(answer),
        }
    }

    /// Carries a request out, idempotently by key as Stripe does.
    pub fn apply(&mut self, request: Request) -> Answer {
        let keyed = match &request {
            Request::Hold(hold) => Some((hold.idempotency_key.clone(), format!("{hold:?}"))),
            Request::Capture { key, .. } | Request::Cancel { key, .. } => {
                Some((key.clone(), format!("{request:?}")))
            }
            Request::Refund(refund) => {
                Some((refund.idempotency_key.clone(), format!("{refund:?}")))
            }
            _ => None,
        };
        if let Some((key, fingerprint)) = &keyed
            && let Some((seen, answer)) = self.keys.get(key)
        {
            if seen != fingerprint {
                panic!("idempotency key {key} reused with other parameters");
            }
            return answer.clone();
        }
        let answer = self.carry_out(request);
        if let Some((key, fingerprint)) = keyed {
            self.keys.insert(key, (fingerprint, answer.clone()));
        }
        answer
    }

    pub fn carry_out(&mut self, request: Request) -> Answer {
        match request {
            Request::Hold(hold) => {
                if hold.payment_method == "pm_declined" {
                    return Answer::Intent(Err(GatewayError::Declined {
                        code: "card_declined".into(),
                        decline_code: Some("insufficient_funds".into()),
                        message: "Your card was declined.".into(),
                    }));
                }
                let id = self.create_intent(
                    &hold.customer,
                    hold.amount,
                    hold.metadata.into_iter().collect(),
                );
                self.moved.push(("hold", id.clone(), hold.amount));
                Answer::Intent(Ok(self.intents[&id].clone()))
            }
            Request::Capture {
                payment_intent,
                amount,
                ..
            } => {
                let intent = self.intents.get_mut(&payment_intent).unwrap();
                if intent.status != "requires_capture" || amount > intent.amount_capturable {
                    return Answer::Intent(Err(GatewayError::Refused {
                        status: 400,
                        kind: "invalid_request_error".into(),
                        code: Some("payment_intent_unexpected_state".into()),
                        message: format!("the PaymentIntent is {}", intent.status),
                    }));
                }
                intent.status = "succeeded".into();
                intent.amount_received = amount;
                intent.amount_capturable = 0;
                self.moved.push(("capture", payment_intent.clone(), amount));
                Answer::Intent(Ok(intent.clone()))
            }
            Request::Cancel { payment_intent, .. } => {
                let intent = self.intents.get_mut(&payment_intent).unwrap();
                if intent.status == "requires_capture" {
                    intent.status = "canceled".into();
                    intent.amount_capturable = 0;
                    self.moved.push(("cancel", payment_intent.clone(), 0));
                }
                Answer::Intent(Ok(intent.clone()))
            }
            Request::Increment {
                payment_intent,
                amount,
                ..
            } => {
                let intent = self.intents.get_mut(&payment_intent).unwrap();
                if intent.status != "requires_capture" || !intent.incremental_authorization {
                    return Answer::Intent(Err(GatewayError::Refused {
                        status: 400,
                        kind: "invalid_request_error".into(),
                        code: Some("payment_intent_unexpected_state".into()),
                        message: "the PaymentIntent cannot be incremented".into(),
                    }));
                }
                let raised = amount - intent.amount;
                intent.amount = amount;
                intent.amount_capturable = amount;
                self.moved
                    .push(("increment", payment_intent.clone(), raised));
                Answer::Intent(Ok(intent.clone()))
            }
            Request::Retrieve { payment_intent } => {
                Answer::Intent(Ok(self.intents[&payment_intent].clone()))
            }
            Request::Find {
                customer,
                key,
                value,
            } => Answer::Found(Ok(self
                .intents
                .values()
                .find(|intent| {
                    self.customers[&intent.id] == customer
                        && intent.metadata.get(&key) == Some(&value)
                })
                .cloned())),
            Request::Refund(refund) => {
                let captured = self.intents[&refund.payment_intent].amount_received;
                let already: i64 = self
                    .refunds
                    .iter()
                    .filter(|r| r.0 == refund.payment_intent)
                    .map(|r| r.1.amount)
                    .sum();
                if already + refund.amount > captured {
                    return Answer::Refund(Err(GatewayError::Refused {
                        status: 400,
                        kind: "invalid_request_error".into(),
                        code: Some("charge_already_refunded".into()),
                        message: "more than was captured".into(),
                    }));
                }
                self.next_id += 1;
                let made = Refunded {
                    id: format!("re_{}", self.next_id),
                    status: "succeeded".into(),
                    amount: refund.amount,
                };
                let metadata = refund.metadata.into_iter().collect();
                self.refunds
                    .push((refund.payment_intent.clone(), made.clone(), metadata));
                self.moved
                    .push(("refund", refund.payment_intent.clone(), refund.amount));
                Answer::Refund(Ok(made))
            }
            Request::FindRefund {
                payment_intent,
                key,
                value,
            } => Answer::FoundRefund(Ok(self
                .refunds
                .iter()
                .find(|(intent, _, metadata)| {
                    *intent == payment_intent && metadata.get(&key) == Some(&value)
                })
                .map(|(_, refund, _)| refund.clone()))),
        }
    }
}
