//! Stripe: the gateway call settlement uses, behind a trait so the
//! settlement logic can be tested without HTTP.
//!
//! [`StripeGateway`] speaks to Stripe (or a compatible fake at
//! `stripe.api_base`) with `async-stripe`'s request types, one attempt per
//! try with our own idempotency key, over our own HTTP client ([`http`]),
//! in our own retry loop ([`retry`]) that reads the status and
//! `Stripe-Should-Retry` of every answer: `async-stripe`'s retrying
//! strategies invent a random key per call, which is useless across a
//! restart, and its client hides the header. Each attempt has its own
//! timeout.

pub mod http;
pub mod retry;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use stripe_client_core::{IdempotencyKey, RequestStrategy, StripeRequest};
use stripe_core::payment_intent::{
    CancelPaymentIntent, CancelPaymentIntentCancellationReason, CapturePaymentIntent,
    CreatePaymentIntent, CreatePaymentIntentAutomaticPaymentMethods,
    CreatePaymentIntentAutomaticPaymentMethodsAllowRedirects, CreatePaymentIntentOffSession,
    CreatePaymentIntentPaymentMethodOptions, CreatePaymentIntentPaymentMethodOptionsCard,
    CreatePaymentIntentPaymentMethodOptionsCardRequestIncrementalAuthorization,
    IncrementAuthorizationPaymentIntent, ListPaymentIntent, RetrievePaymentIntent,
};
use stripe_core::refund::{CreateRefund, CreateRefundReason, ListRefund};
use stripe_core::{PaymentIntent, PaymentIntentCaptureMethod};
use stripe_shared::PaymentFlowsPrivatePaymentMethodsCardDetailsApiResourceEnterpriseFeaturesIncrementalAuthorizationIncrementalAuthorizationStatus as IncrementalStatus;
use stripe_types::Expandable;

use crate::rating::Currency;
use http::{HttpClient, HttpError};
use retry::{Attempt, RetryPolicy};

/// A hold to place: a manual-capture PaymentIntent confirmed off-session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRequest {
    /// Minor units to hold.
    pub amount: i64,
    /// Their currency.
    pub currency: Currency,
    /// Stripe customer (`cus_...`).
    pub customer: String,
    /// The saved card (`pm_...`).
    pub payment_method: String,
    /// Booking and call ids, so a hold whose id never came back can be
    /// found by listing the customer's PaymentIntents.
    pub metadata: Vec<(String, String)>,
    /// Derived from the settlement row; never reused with other values.
    pub idempotency_key: String,
    /// Ask for incremental authorization where the card allows it
    /// (`request_incremental_authorization=if_available`).
    pub incremental: bool,
}

/// What we read of a PaymentIntent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// `pi_...`
    pub id: String,
    /// `requires_capture`, `succeeded`, `canceled`, ...
    pub status: String,
    /// The amount it was created for.
    pub amount: i64,
    /// What can still be captured.
    pub amount_capturable: i64,
    /// What was captured.
    pub amount_received: i64,
    /// Our metadata.
    pub metadata: HashMap<String, String>,
    /// Until when the hold can be captured (unix seconds), from the card
    /// charge (`latest_charge.payment_method_details.card.capture_before`)
    /// when Stripe gave it.
    pub capture_before: Option<i64>,
    /// Whether its charge can be raised by incremental authorization
    /// (`...card.incremental_authorization.status = available`).
    pub incremental_authorization: bool,
}

impl Intent {
    fn from_stripe(intent: PaymentIntent) -> Intent {
        let card = match &intent.latest_charge {
            Some(Expandable::Object(charge)) => charge
                .payment_method_details
                .as_ref()
                .and_then(|details| details.card.as_ref()),
            _ => None,
        };
        let capture_before = card.and_then(|card| card.capture_before);
        let incremental_authorization = card
            .and_then(|card| card.incremental_authorization.as_ref())
            .is_some_and(|incremental| incremental.status == IncrementalStatus::Available);
        Intent {
            id: intent.id.as_str().to_owned(),
            status: intent.status.as_str().to_owned(),
            amount: intent.amount,
            amount_capturable: intent.amount_capturable,
            amount_received: intent.amount_received,
            metadata: intent.metadata,
            capture_before,
            incremental_authorization,
        }
    }
}

/// A refund to create: part or all of a captured PaymentIntent's charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    /// The captured PaymentIntent (`pi_...`).
    pub payment_intent: String,
    /// Minor units to give back.
    pub amount: i64,
    /// One of Stripe's reasons (`requested_by_customer`, `duplicate`,
    /// `fraudulent`), when given.
    pub reason: Option<String>,
    /// Our refund id (`refund` = `rf_...`) and call, so a refund whose
    /// answer was lost can be found by listing the PaymentIntent's refunds.
    pub metadata: Vec<(String, String)>,
    /// Derived from the refund row; never reused with other values.
    pub idempotency_key: String,
}

/// Why a hold is released, as Stripe's `cancellation_reason` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseReason {
    /// Nothing is owed (a call that cost nothing, a fee no longer due).
    Abandoned,
    /// The customer canceled (a booking canceled in time).
    RequestedByCustomer,
}

impl ReleaseReason {
    /// The word a settlement row keeps.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseReason::Abandoned => "abandoned",
            ReleaseReason::RequestedByCustomer => "requested_by_customer",
        }
    }

    /// The reason a row's word names; `abandoned` for none.
    pub fn from_stored(word: Option<&str>) -> ReleaseReason {
        match word {
            Some("requested_by_customer") => ReleaseReason::RequestedByCustomer,
            _ => ReleaseReason::Abandoned,
        }
    }
}

/// What we read of a Refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refunded {
    /// `re_...`
    pub id: String,
    /// `succeeded`, `pending`, `failed`, ...
    pub status: String,
    /// Minor units.
    pub amount: i64,
}

impl Refunded {
    fn from_stripe(refund: stripe_shared::Refund) -> Refunded {
        Refunded {
            id: refund.id.as_str().to_owned(),
            status: refund.status.unwrap_or_default(),
            amount: refund.amount,
        }
    }
}

/// How many objects a listing asks for per page: Stripe's most.
const LIST_PAGE: i64 = 100;

/// Expanded in every answer that creates, reads or finds a hold: the
/// charge says until when it can be captured.
const LATEST_CHARGE: &str = "latest_charge";

/// Why a request did not give an answer we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The card was declined (402 `card_error`), including
    /// `authentication_required`: final.
    #[error("card declined: {code} ({message})")]
    Declined {
        /// `card_declined`, `authentication_required`, ...
        code: String,
        /// The bank's `decline_code`, when given.
        decline_code: Option<String>,
        /// Stripe's message.
        message: String,
    },
    /// Any other final refusal (4xx), `idempotency_error` included.
    #[error("stripe refused ({status} {kind}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Stripe's error `type`.
        kind: String,
        /// Stripe's error `code`, when given.
        code: Option<String>,
        /// Stripe's message.
        message: String,
    },
    /// Retries ran out without a definite answer: the outcome is unknown
    /// until the object is read again.
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

impl GatewayError {
    /// Whether the request may have taken effect (retry later with the
    /// same key, or re-read the object).
    pub fn is_unknown(&self) -> bool {
        matches!(self, GatewayError::Unknown(_))
    }
}

/// A boxed gateway future.
pub type GatewayFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, GatewayError>> + Send + 'a>>;

/// The Stripe operations settlement needs.
pub trait Gateway: Send + Sync {
    /// Places a hold (see [`HoldRequest`]).
    fn hold(&self, hold: HoldRequest) -> GatewayFuture<'_, Intent>;
    /// Captures `amount` of a hold, releasing the rest.
    fn capture(&self, intent: String, amount: i64, key: String) -> GatewayFuture<'_, Intent>;
    /// Releases a whole hold, saying why.
    fn cancel(
        &self,
        intent: String,
        key: String,
        reason: ReleaseReason,
    ) -> GatewayFuture<'_, Intent>;
    /// Raises a hold's authorized amount to `amount` in all.
    fn increment(&self, intent: String, amount: i64, key: String) -> GatewayFuture<'_, Intent>;
    /// Reads a PaymentIntent.
    fn retrieve(&self, intent: String) -> GatewayFuture<'_, Intent>;
    /// Finds a customer's PaymentIntent whose metadata has `key` = `value`.
    fn find(
        &self,
        customer: String,
        key: String,
        value: String,
    ) -> GatewayFuture<'_, Option<Intent>>;
    /// Creates a refund (see [`RefundRequest`]).
    fn refund(&self, refund: RefundRequest) -> GatewayFuture<'_, Refunded>;
    /// Finds a PaymentIntent's refund whose metadata has `key` = `value`,
    /// paging through all of them.
    fn find_refund(
        &self,
        payment_intent: String,
        key: String,
        value: String,
    ) -> GatewayFuture<'_, Option<Refunded>>;
}

/// [`Gateway`] over Stripe's API with `async-stripe`.
pub struct StripeGateway {
    client: HttpClient,
    policy: RetryPolicy,
    timeout: Duration,
}

impl std::fmt::Debug for StripeGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeGateway")
            .field("policy", &self.policy)
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn jitter() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()))
}

fn key(value: &str) -> Result<RequestStrategy, GatewayError> {
    IdempotencyKey::new(value)
        .map(RequestStrategy::Idempotent)
        .map_err(|e| GatewayError::Refused {
            status: 0,
            kind: "invalid_idempotency_key".into(),
            code: None,
            message: e.to_string(),
        })
}

impl StripeGateway {
    /// A gateway with `secret_key` against `api_base`, each attempt limited
    /// to `timeout`.
    pub fn new(
        secret_key: &str,
        api_base: &str,
        timeout: Duration,
        policy: RetryPolicy,
    ) -> Result<StripeGateway, GatewayError> {
        let client = HttpClient::new(secret_key, api_base)
            .map_err(|e| GatewayError::Unknown(format!("cannot build the Stripe client: {e}")))?;
        Ok(StripeGateway {
            client,
            policy,
            timeout,
        })
    }

    /// Sends a PaymentIntent write under its idempotency key, with retries.
    async fn send_keyed<R>(
        &self,
        what: &str,
        request: &R,
        strategy: RequestStrategy,
    ) -> Result<Intent, GatewayError>
    where
        R: StripeRequest<Output = PaymentIntent>,
    {
        let intent = self
            .with_retries(what, || {
                request
                    .customize()
                    .request_strategy(strategy.clone())
                    .send(&self.client)
            })
            .await?;
        Ok(Intent::from_stripe(intent))
    }

    /// Runs `attempt` until it answers, a final error, or the policy stops.
    async fn with_retries<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, GatewayError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, HttpError>>,
    {
        let mut done = 0;
        loop {
            done += 1;
            let (outcome, error) = match tokio::time::timeout(self.timeout, attempt()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(HttpError::Status {
                    code,
                    should_retry,
                    kind,
                    error_code,
                    decline_code,
                    message,
                })) => {
                    let outcome = Attempt::Status { code, should_retry };
                    let error = if code == 402 && kind == "card_error" {
                        GatewayError::Declined {
                            code: error_code.unwrap_or_else(|| "card_declined".into()),
                            decline_code,
                            message,
                        }
                    } else if code >= 500 || code == 409 || code == 429 || retry::retryable(outcome)
                    {
                        // The request may have been applied: unknown.
                        GatewayError::Unknown(format!("{code} {kind}: {message}"))
                    } else {
                        GatewayError::Refused {
                            status: code,
                            kind,
                            code: error_code,
                            message,
                        }
                    };
                    (outcome, error)
                }
                Ok(Err(e)) => (Attempt::NoResponse, GatewayError::Unknown(e.to_string())),
                Err(_) => (
                    Attempt::NoResponse,
                    GatewayError::Unknown(format!("no answer within {:?}", self.timeout)),
                ),
            };
            match self.policy.next_delay(done, outcome, jitter()) {
                Some(delay) => {
                    tracing::warn!(request = what, attempt = done, error = %error, delay_ms = delay.as_millis() as u64, "stripe request will be retried");
                    tokio::time::sleep(delay).await;
                }
                None => return Err(error),
            }
        }
    }
}

impl Gateway for StripeGateway {
    fn hold(&self, hold: HoldRequest) -> GatewayFuture<'_, Intent> {
        Box::pin(async move {
            let strategy = key(&hold.idempotency_key)?;
            let currency: stripe_types::Currency = hold.currency.code().parse().map_err(|_| {
                GatewayError::Unknown(format!(
                    "currency {} unknown to the client",
                    hold.currency.code()
                ))
            })?;
            let metadata: HashMap<String, String> = hold.metadata.iter().cloned().collect();
            let request = CreatePaymentIntent::new(hold.amount, currency)
                .customer(hold.customer.clone())
                .payment_method(hold.payment_method.clone())
                .capture_method(PaymentIntentCaptureMethod::Manual)
                .confirm(true)
                .off_session(CreatePaymentIntentOffSession::Bool(true))
                .error_on_requires_action(true)
                // Server-side confirmation has no return_url: with
                // redirect-based methods allowed (the default on recent
                // API versions) Stripe may refuse it, declining every call.
                .automatic_payment_methods(CreatePaymentIntentAutomaticPaymentMethods {
                    enabled: true,
                    allow_redirects: Some(
                        CreatePaymentIntentAutomaticPaymentMethodsAllowRedirects::Never,
                    ),
                })
                .metadata(metadata)
                .expand([LATEST_CHARGE.to_owned()]);
            let request = if hold.incremental {
                let mut card = CreatePaymentIntentPaymentMethodOptionsCard::new();
                card.request_incremental_authorization =
                    Some(CreatePaymentIntentPaymentMethodOptionsCardRequestIncrementalAuthorization::IfAvailable);
                let mut options = CreatePaymentIntentPaymentMethodOptions::new();
                options.card = Some(card);
                request.payment_method_options(options)
            } else {
                request
            };
            self.send_keyed("hold", &request, strategy).await
        })
    }

    fn increment(
        &self,
        intent: String,
        amount: i64,
        key_value: String,
    ) -> GatewayFuture<'_, Intent> {
        Box::pin(async move {
            let strategy = key(&key_value)?;
            let request = IncrementAuthorizationPaymentIntent::new(intent.as_str(), amount)
                .expand([LATEST_CHARGE.to_owned()]);
            self.send_keyed("increment", &request, strategy).await
        })
    }

    fn capture(&self, intent: String, amount: i64, key_value: String) -> GatewayFuture<'_, Intent> {
        Box::pin(async move {
            let strategy = key(&key_value)?;
            let request = CapturePaymentIntent::new(intent.as_str()).amount_to_capture(amount);
            self.send_keyed("capture", &request, strategy).await
        })
    }

    fn cancel(
        &self,
        intent: String,
        key_value: String,
        reason: ReleaseReason,
    ) -> GatewayFuture<'_, Intent> {
        Box::pin(async move {
            let strategy = key(&key_value)?;
            let reason = match reason {
                ReleaseReason::Abandoned => CancelPaymentIntentCancellationReason::Abandoned,
                ReleaseReason::RequestedByCustomer => {
                    CancelPaymentIntentCancellationReason::RequestedByCustomer
                }
            };
            let request = CancelPaymentIntent::new(intent.as_str()).cancellation_reason(reason);
            self.send_keyed("cancel", &request, strategy).await
        })
    }

    fn retrieve(&self, intent: String) -> GatewayFuture<'_, Intent> {
        Box::pin(async move {
            let request =
                RetrievePaymentIntent::new(intent.as_str()).expand([LATEST_CHARGE.to_owned()]);
            let intent = self
                .with_retries("retrieve", || request.customize().send(&self.client))
                .await?;
            Ok(Intent::from_stripe(intent))
        })
    }

    fn find(
        &self,
        customer: String,
        key_name: String,
        value: String,
    ) -> GatewayFuture<'_, Option<Intent>> {
        Box::pin(async move {
            // A customer with many PaymentIntents (a regular caller) has
            // them over several pages of at most 100: read them all.
            let mut after: Option<String> = None;
            loop {
                let mut request = ListPaymentIntent::new()
                    .customer(customer.clone())
                    .limit(LIST_PAGE)
                    .expand([format!("data.{LATEST_CHARGE}")]);
                if let Some(last) = &after {
                    request = request.starting_after(last.clone());
                }
                let page = self
                    .with_retries("list", || request.customize().send(&self.client))
                    .await?;
                let last = page.data.last().map(|intent| intent.id.as_str().to_owned());
                if let Some(found) = page
                    .data
                    .into_iter()
                    .find(|intent| intent.metadata.get(&key_name) == Some(&value))
                {
                    return Ok(Some(Intent::from_stripe(found)));
                }
                match (page.has_more, last) {
                    (true, Some(last)) => after = Some(last),
                    _ => return Ok(None),
                }
            }
        })
    }

    fn refund(&self, refund: RefundRequest) -> GatewayFuture<'_, Refunded> {
        Box::pin(async move {
            let strategy = key(&refund.idempotency_key)?;
            let metadata: HashMap<String, String> = refund.metadata.iter().cloned().collect();
            let mut request = CreateRefund::new()
                .payment_intent(refund.payment_intent.clone())
                .amount(refund.amount)
                .metadata(metadata);
            if let Some(reason) = &refund.reason {
                let reason = match reason.as_str() {
                    "duplicate" => CreateRefundReason::Duplicate,
                    "fraudulent" => CreateRefundReason::Fraudulent,
                    "requested_by_customer" => CreateRefundReason::RequestedByCustomer,
                    other => {
                        return Err(GatewayError::Refused {
                            status: 0,
                            kind: "invalid_request_error".into(),
                            code: None,
                            message: format!("{other:?} is not a Stripe refund reason"),
                        });
                    }
                };
                request = request.reason(reason);
            }
            let created = self
                .with_retries("refund", || {
                    request
                        .customize()
                        .request_strategy(strategy.clone())
                        .send(&self.client)
                })
                .await?;
            Ok(Refunded::from_stripe(created))
        })
    }

    fn find_refund(
        &self,
        payment_intent: String,
        key_name: String,
        value: String,
    ) -> GatewayFuture<'_, Option<Refunded>> {
        Box::pin(async move {
            let mut after: Option<String> = None;
            loop {
                let mut request = ListRefund::new()
                    .payment_intent(payment_intent.clone())
                    .limit(LIST_PAGE);
                if let Some(last) = &after {
                    request = request.starting_after(last.clone());
                }
                let page = self
                    .with_retries("list refunds", || request.customize().send(&self.client))
                    .await?;
                let last = page.data.last().map(|r| r.id.as_str().to_owned());
                if let Some(found) = page.data.into_iter().find(|refund| {
                    refund.metadata.as_ref().and_then(|m| m.get(&key_name)) == Some(&value)
                }) {
                    return Ok(Some(Refunded::from_stripe(found)));
                }
                match (page.has_more, last) {
                    (true, Some(last)) => after = Some(last),
                    _ => return Ok(None),
                }
            }
        })
    }
}
