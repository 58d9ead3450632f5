//! A stateful Stripe-compatible fake for the endpoints Tollbridge calls,
//! on 127.0.0.1, behaving as `shared/STRIPE.md` says Stripe does:
//!
//! - PaymentIntents ([`intents`]): create (manual capture, confirmed off-session),
//!   capture (at most `amount_capturable`; the rest released), cancel,
//!   retrieve, list by customer. Test cards: `pm_card_visa` holds,
//!   `pm_card_chargeDeclined` is declined (402 `card_declined`),
//!   `pm_card_authenticationRequired` needs authentication (402
//!   `authentication_required`).
//! - Idempotency: a POST's response is stored under its key once executed
//!   and replayed for the same key, a 500 included; the same key with other
//!   parameters or on another endpoint is 400 `idempotency_error`; the same
//!   key while the first is in flight is 409. Validation failures and 429s
//!   are not stored.
//! - Faults, queued per endpoint kind: 500 after applying, the connection
//!   dropped after applying, an answer slower than the client's timeout
//!   (applied; 409 to the same key until answered, then stored), 429 (not
//!   applied).
//! - Holds end: each successful hold has a card charge whose
//!   `payment_method_details.card.capture_before` is its creation plus the
//!   hold lifetime (Visa's off-session 4 days 18 hours unless a test sets
//!   another); a hold still uncaptured then is `canceled`. The charge is in
//!   `latest_charge`, as an id or, with `expand[]=latest_charge`
//!   (`data.latest_charge` on lists), whole.
//! - Refunds of captured PaymentIntents, listed by PaymentIntent a page
//!   at a time ([`refunds`]).
//! - Every request is recorded for assertions.

mod increments;
mod intents;
mod refunds;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

/// What the fake does to the next request of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Apply it, store and answer 500.
    ServerErrorAfterApplying,
    /// Apply it, store the answer, and drop the connection instead.
    DropAfterApplying,
    /// Apply it and send the answer after this long; until then the key
    /// is in flight (409), then the answer is stored.
    SlowAnswer(Duration),
    /// Answer 429 without applying or storing anything.
    RateLimited,
    /// Apply it, store and answer 500 with `Stripe-Should-Retry: false`.
    ServerErrorDoNotRetry,
}

/// Which endpoint a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /v1/payment_intents`
    Create,
    /// `POST /v1/payment_intents/{id}/capture`
    Capture,
    /// `POST /v1/payment_intents/{id}/cancel`
    Cancel,
    /// `POST /v1/payment_intents/{id}/increment_authorization`
    Increment,
    /// `POST /v1/refunds`
    Refund,
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET` or `POST`.
    pub method: String,
    /// The path.
    pub path: String,
    /// `Idempotency-Key`, when sent.
    pub idempotency_key: Option<String>,
    /// Form parameters (POST) or the query (GET).
    pub params: Vec<(String, String)>,
    /// The status answered (0 when the connection was dropped).
    pub status: u16,
}

#[derive(Debug, Clone)]
struct Stored {
    fingerprint: String,
    answer: Option<(u16, Value)>,
}

struct Inner {
    /// PaymentIntents, each with its charge whole in `latest_charge`.
    intents: HashMap<String, Value>,
    /// Refunds, oldest first.
    refunds: Vec<Value>,
    keys: HashMap<String, Stored>,
    faults: HashMap<Endpoint, Vec<Fault>>,
    requests: Vec<Recorded>,
    next_id: u64,
    hold_lifetime: Duration,
    /// Cards with a credit limit: a hold that would take what the card
    /// has on hold (uncaptured) past it is declined, `insufficient_funds`.
    card_limits: HashMap<String, i64>,
    /// Cards whose holds can be raised by incremental authorization.
    incremental_cards: Vec<String>,
}

impl Default for Inner {
    fn default() -> Inner {
        Inner {
            intents: HashMap::new(),
            refunds: Vec::new(),
            keys: HashMap::new(),
            faults: HashMap::new(),
            requests: Vec::new(),
            next_id: 0,
            card_limits: HashMap::new(),
            incremental_cards: Vec::new(),
            hold_lifetime: VISA_OFF_SESSION_HOLD,
        }
    }
}

/// How long a Visa merchant-initiated hold lives (STRIPE.md).
const VISA_OFF_SESSION_HOLD: Duration = Duration::from_secs((4 * 24 + 18) * 3600);

/// Wall-clock unix seconds, the unit of Stripe's timestamps.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Inner {
    /// Cancels every hold whose `capture_before` has passed, as the card
    /// networks do.
    fn expire_holds(&mut self) {
        let now = unix_now();
        for intent in self.intents.values_mut() {
            let ends = intent["latest_charge"]["payment_method_details"]["card"]["capture_before"]
                .as_i64();
            if intent["status"] == "requires_capture" && ends.is_some_and(|end| now >= end) {
                intent["status"] = json!("canceled");
                intent["amount_capturable"] = json!(0);
                intent["cancellation_reason"] = json!("automatic");
            }
        }
    }
}

/// A PaymentIntent as answered: its charge whole when `expanded`, else
/// its id.
fn shown(intent: &Value, expanded: bool) -> Value {
    let mut intent = intent.clone();
    if !expanded && let Some(id) = intent["latest_charge"].get("id").cloned() {
        intent["latest_charge"] = id;
    }
    intent
}

/// Whether the request asks for `field` whole (`expand[0]=field`).
fn expands(params: &[(String, String)], field: &str) -> bool {
    params
        .iter()
        .any(|(k, v)| k.starts_with("expand[") && v == field)
}

/// A running fake; stops when dropped.
pub struct StripeFake {
    /// Where it listens: use `http://{addr}` as `stripe.api_base`.
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StripeFake {
    /// Starts the fake on 127.0.0.1 and a free port, on a thread and
    /// runtime of its own (so it serves while a test blocks or awaits).
    pub fn start() -> StripeFake {
        let inner: Arc<Mutex<Inner>> = Arc::default();
        let app = Router::new()
            .route(
                "/v1/payment_intents",
                post(intents::create).get(intents::list),
            )
            .route("/v1/payment_intents/{id}", get(intents::retrieve))
            .route("/v1/payment_intents/{id}/capture", post(intents::capture))
            .route("/v1/payment_intents/{id}/cancel", post(intents::cancel))
            .route(
                "/v1/payment_intents/{id}/increment_authorization",
                post(increments::increment),
            )
            .route("/v1/refunds", post(refunds::create).get(refunds::list))
            .with_state(inner.clone());
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("fake runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("fake listener");
                let _ = address_tx.send(listener.local_addr().expect("fake address"));
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        let addr = address_rx.recv().expect("the fake starts");
        StripeFake {
            addr,
            inner,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The base URL for `stripe.api_base`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes the holds placed from now on end after `lifetime` (their
    /// `capture_before`), instead of Visa's 4 days 18 hours.
    pub fn set_hold_lifetime(&self, lifetime: Duration) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.hold_lifetime = lifetime;
        }
    }

    /// Gives the card `payment_method` a credit limit of `limit` minor
    /// units: a hold that would take its holds not yet captured or
    /// released past it is declined (`insufficient_funds`), as a card
    /// near its limit is.
    pub fn set_card_limit(&self, payment_method: &str, limit: i64) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.card_limits.insert(payment_method.to_owned(), limit);
        }
    }

    /// Lets the holds placed on `payment_method` from now on be raised by
    /// incremental authorization when asked for (their charge says
    /// `incremental_authorization.status = available`); other cards'
    /// say `unavailable`, as most do.
    pub fn allow_incremental(&self, payment_method: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.incremental_cards.push(payment_method.to_owned());
        }
    }

    /// Queues a fault for the next request to `endpoint`.
    pub fn inject(&self, endpoint: Endpoint, fault: Fault) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.faults.entry(endpoint).or_default().push(fault);
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner
            .lock()
            .map(|i| i.requests.clone())
            .unwrap_or_default()
    }

    /// Delivers `event` to a webhook endpoint at `to` (`POST
    /// /v1/stripe/webhook`) as Stripe does, signed with the endpoint's
    /// `secret` (`Stripe-Signature: t=...,v1=HMAC-SHA256(secret, t.body)`):
    /// (status, body).
    pub fn deliver_webhook(&self, to: SocketAddr, secret: &str, event: &Value) -> (u16, String) {
        let Some((body, signature)) = signed_event(secret, event) else {
            return (0, "unusable secret".into());
        };
        crate::http_request_with(
            to,
            "POST",
            "/v1/stripe/webhook",
            &[("Stripe-Signature", &signature)],
            Some(&body),
        )
        .unwrap_or_else(|e| (0, e.to_string()))
    }

    /// Every Refund, oldest first.
    pub fn refunds(&self) -> Vec<Value> {
        self.inner
            .lock()
            .map(|i| i.refunds.clone())
            .unwrap_or_default()
    }

    /// Every PaymentIntent, as JSON, its charge whole.
    pub fn intents(&self) -> Vec<Value> {
        self.inner
            .lock()
            .map(|mut i| {
                i.expire_holds();
                i.intents.values().cloned().collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for StripeFake {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Shared = State<Arc<Mutex<Inner>>>;

fn form(body: &Bytes) -> Vec<(String, String)> {
    url_decode_pairs(&String::from_utf8_lossy(body))
}

fn url_decode_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn error(status: u16, kind: &str, code: Option<&str>, message: &str) -> (u16, Value) {
    let mut body = json!({"error": {"type": kind, "message": message}});
    if let Some(code) = code {
        body["error"]["code"] = json!(code);
    }
    (status, body)
}

fn json_response(status: u16, body: &Value) -> Response {
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    // Stripe's advice to clients: retry 409, 429 and 5xx; not 4xx.
    if status >= 400 {
        let retry = matches!(status, 409 | 429 | 500..=599) && body["error"]["code"] != "no_retry";
        response = response.header("Stripe-Should-Retry", if retry { "true" } else { "false" });
    }
    response
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

/// Runs a POST with Stripe's idempotency rules and the queued faults.
async fn idempotent(
    inner: Arc<Mutex<Inner>>,
    endpoint: Endpoint,
    path: String,
    headers: HeaderMap,
    params: Vec<(String, String)>,
    apply: impl FnOnce(&mut Inner) -> (u16, Value),
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut sorted = params.clone();
    sorted.sort();
    let fingerprint = format!("{path}?{sorted:?}");
    let record = |inner: &mut Inner, status: u16| {
        inner.requests.push(Recorded {
            method: "POST".into(),
            path: path.clone(),
            idempotency_key: key.clone(),
            params: params.clone(),
            status,
        });
    };
    let (fault, replay) = {
        let Ok(mut guard) = inner.lock() else {
            return json_response(500, &json!({}));
        };
        if let Some(key) = &key
            && let Some(stored) = guard.keys.get(key).cloned()
        {
            let (status, body) = if stored.fingerprint != fingerprint {
                error(
                    400,
                    "idempotency_error",
                    None,
                    "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                )
            } else if let Some(answer) = stored.answer {
                answer
            } else {
                error(
                    409,
                    "invalid_request_error",
                    Some("idempotency_key_in_use"),
                    "another request with this key is in flight",
                )
            };
            record(&mut guard, status);
            return json_response(status, &body);
        }
        let fault = guard
            .faults
            .get_mut(&endpoint)
            .and_then(|q| (!q.is_empty()).then(|| q.remove(0)));
        if fault == Some(Fault::RateLimited) {
            record(&mut guard, 429);
            let (status, body) = error(
                429,
                "invalid_request_error",
                Some("rate_limit"),
                "Too many requests",
            );
            return json_response(status, &body);
        }
        if let Some(key) = &key {
            guard.keys.insert(
                key.clone(),
                Stored {
                    fingerprint: fingerprint.clone(),
                    answer: None,
                },
            );
        }
        guard.expire_holds();
        let (status, body) = apply(&mut guard);
        let stored = match fault {
            Some(Fault::ServerErrorAfterApplying) => {
                error(500, "api_error", None, "An unknown error occurred")
            }
            Some(Fault::ServerErrorDoNotRetry) => error(
                500,
                "api_error",
                Some("no_retry"),
                "Do not retry this request",
            ),
            _ => (status, body),
        };
        // Requests that failed validation are not stored (STRIPE.md).
        let keep = !(stored.0 == 400 && stored.1["error"]["type"] == "invalid_request_error");
        // A slow answer stays in flight (409 to the same key) until sent.
        let in_flight = matches!(fault, Some(Fault::SlowAnswer(_)));
        if let Some(key) = &key
            && !in_flight
        {
            if keep {
                guard.keys.insert(
                    key.clone(),
                    Stored {
                        fingerprint: fingerprint.clone(),
                        answer: Some(stored.clone()),
                    },
                );
            } else {
                guard.keys.remove(key);
            }
        }
        let shown = if fault == Some(Fault::DropAfterApplying) {
            0
        } else {
            stored.0
        };
        record(&mut guard, shown);
        (fault, stored)
    };
    match fault {
        Some(Fault::DropAfterApplying) => {
            let stream = futures_error_stream();
            Response::builder()
                .status(200)
                .body(Body::from_stream(stream))
                .unwrap_or_default()
        }
        Some(Fault::SlowAnswer(delay)) => {
            // Stored by a task of its own: a client that gives up drops
            // this handler, and the request must still complete.
            if let Some(key) = key.clone() {
                let (inner, answer) = (inner.clone(), replay.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Ok(mut guard) = inner.lock() {
                        guard.keys.insert(
                            key,
                            Stored {
                                fingerprint,
                                answer: Some(answer),
                            },
                        );
                    }
                });
            }
            tokio::time::sleep(delay).await;
            json_response(replay.0, &replay.1)
        }
        _ => json_response(replay.0, &replay.1),
    }
}

/// A body that fails at once: hyper aborts the connection mid-response.
fn futures_error_stream() -> impl futures_core::Stream<Item = Result<Bytes, std::io::Error>> + Send
{
    struct Failing(bool);
    impl futures_core::Stream for Failing {
        type Item = Result<Bytes, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            if self.0 {
                return std::task::Poll::Ready(None);
            }
            self.0 = true;
            std::task::Poll::Ready(Some(Err(std::io::Error::other(
                "connection dropped by the fake",
            ))))
        }
    }
    Failing(false)
}

/// One page of a list, newest first, as Stripe pages: `limit` (10 by
/// default, at most 100) after `starting_after`; the page and whether
/// more follow.
fn page_of<'a>(newest_first: &[&'a Value], query: &[(String, String)]) -> (Vec<&'a Value>, bool) {
    let limit = param(query, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(10)
        .clamp(1, 100);
    let start = match param(query, "starting_after") {
        Some(after) => newest_first
            .iter()
            .position(|item| item["id"] == after)
            .map_or(newest_first.len(), |i| i + 1),
        None => 0,
    };
    let page: Vec<&Value> = newest_first
        .iter()
        .skip(start)
        .take(limit)
        .copied()
        .collect();
    let more = start + page.len() < newest_first.len();
    (page, more)
}

/// The `metadata[key]=value` parameters of a request, as an object.
fn metadata_of(params: &[(String, String)]) -> serde_json::Map<String, Value> {
    params
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("metadata[")
                .and_then(|k| k.strip_suffix(']'))
                .map(|k| (k.to_owned(), json!(v)))
        })
        .collect()
}

/// `event` as Stripe sends it: the body and its `Stripe-Signature` header
/// (`t=...,v1=HMAC-SHA256(t.body)` with `secret`); none for a secret HMAC
/// cannot take.
pub fn signed_event(secret: &str, event: &Value) -> Option<(String, String)> {
    use hmac::Mac;
    let body = event.to_string();
    let t = unix_now();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(format!("{t}.{body}").as_bytes());
    let signature = format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()));
    Some((body, signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_decode() {
        assert_eq!(
            url_decode_pairs("amount=500&metadata%5Bcall%5D=call_1&x=a+b%2Fc"),
            vec![
                ("amount".to_owned(), "500".to_owned()),
                ("metadata[call]".to_owned(), "call_1".to_owned()),
                ("x".to_owned(), "a b/c".to_owned())
            ]
        );
    }
}
