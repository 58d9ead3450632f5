//! The fake's PaymentIntents, as Stripe's behave (STRIPE.md): created
//! (manual capture, confirmed off-session, declined for the test cards
//! that decline, refused for a confirm that may redirect), captured up to
//! what is capturable, canceled, retrieved, and listed by customer a page
//! at a time, each POST under the idempotency rules and queued faults.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use serde_json::{Value, json};

use super::{
    Endpoint, Inner, Recorded, Shared, error, expands, form, idempotent, json_response,
    metadata_of, page_of, param, shown, unix_now,
};

/// A card charge authorized for `amount`, capturable until `capture_before`.
fn charge_json(
    id: &str,
    intent: &str,
    params: &[(String, String)],
    amount: i64,
    capture_before: i64,
) -> Value {
    json!({
        "id": id,
        "object": "charge",
        "amount": amount,
        "amount_captured": 0,
        "amount_refunded": 0,
        "billing_details": {"address": null, "email": null, "name": null, "phone": null},
        "captured": false,
        "created": unix_now(),
        "currency": param(params, "currency").unwrap_or("jpy"),
        "customer": param(params, "customer"),
        "disputed": false,
        "livemode": false,
        "metadata": {},
        "paid": true,
        "payment_intent": intent,
        "payment_method": param(params, "payment_method"),
        "payment_method_details": {
            "type": "card",
            "card": {
                "brand": "visa",
                "capture_before": capture_before,
                "country": "JP",
                "exp_month": 12,
                "exp_year": 2034,
                "funding": "credit",
                "last4": "4242",
            },
        },
        "refunded": false,
        "status": "succeeded",
    })
}

fn intent_json(id: &str, params: &[(String, String)], status: &str, amount: i64) -> Value {
    let metadata = metadata_of(params);
    json!({
        "id": id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": if status == "requires_capture" { amount } else { 0 },
        "amount_received": 0,
        "capture_method": param(params, "capture_method").unwrap_or("automatic"),
        "confirmation_method": "automatic",
        "created": 1_795_600_000,
        "currency": param(params, "currency").unwrap_or("jpy"),
        "customer": param(params, "customer"),
        "payment_method": param(params, "payment_method"),
        "livemode": false,
        "metadata": metadata,
        "payment_method_types": ["card"],
        "status": status,
    })
}

pub(super) async fn create(State(inner): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let params = form(&body);
    let path = "/v1/payment_intents".to_owned();
    idempotent(
        inner,
        Endpoint::Create,
        path,
        headers,
        params.clone(),
        move |inner| {
            let Some(amount) = param(&params, "amount").and_then(|a| a.parse::<i64>().ok()) else {
                return error(
                    400,
                    "invalid_request_error",
                    Some("parameter_missing"),
                    "Missing required param: amount.",
                );
            };
            // ¥50 for JPY, $0.50 (50 cents) for USD: 50 minor units either way.
            let minimum = 50;
            if amount < minimum {
                return error(
                    400,
                    "invalid_request_error",
                    Some("amount_too_small"),
                    "Amount must be at least the minimum charge",
                );
            }
            // A server-side confirm must rule out redirects: with automatic
            // payment methods and redirects allowed (the default on recent
            // API versions) Stripe may refuse it for want of a return_url.
            let pinned = params.iter().any(|(k, _)| k.starts_with("payment_method_types["))
                || (param(&params, "automatic_payment_methods[enabled]") == Some("true")
                    && param(&params, "automatic_payment_methods[allow_redirects]")
                        == Some("never"));
            if param(&params, "confirm") == Some("true")
                && param(&params, "return_url").is_none()
                && !pinned
            {
                return error(
                    400,
                    "invalid_request_error",
                    None,
                    "This PaymentIntent is configured to accept payment methods enabled in your Dashboard, because some of these payment methods might redirect your customer off of your page, you must provide a `return_url`. If you don't want to accept redirect-based payment methods, set `automatic_payment_methods[enabled]` to `true` and `automatic_payment_methods[allow_redirects]` to `never` when creating Setup Intents and Payment Intents.",
                );
            }
            inner.next_id += 1;
            let id = format!("pi_fake{:06}", inner.next_id);
            let card = param(&params, "payment_method").unwrap_or("");
            let on_hold: i64 = inner
                .intents
                .values()
                .filter(|i| i["status"] == "requires_capture" && i["payment_method"] == card)
                .filter_map(|i| i["amount_capturable"].as_i64())
                .sum();
            let over_limit = inner
                .card_limits
                .get(card)
                .is_some_and(|limit| on_hold + amount > *limit);
            let (status, failure) = match card {
                _ if over_limit => (
                    "requires_payment_method",
                    Some(("card_declined", "Your card has insufficient funds.")),
                ),
                "pm_card_chargeDeclined" => (
                    "requires_payment_method",
                    Some(("card_declined", "Your card was declined.")),
                ),
                "pm_card_authenticationRequired" => (
                    "requires_payment_method",
                    Some((
                        "authentication_required",
                        "Your card requires authentication.",
                    )),
                ),
                _ => ("requires_capture", None),
            };
            let mut intent = intent_json(&id, &params, status, amount);
            if failure.is_none() {
                let charge = format!("ch_fake{:06}", inner.next_id);
                let capture_before = unix_now() + inner.hold_lifetime.as_secs() as i64;
                intent["latest_charge"] =
                    charge_json(&charge, &id, &params, amount, capture_before);
                // Raisable when asked for and the card allows it.
                let asked = param(&params, "payment_method_options[card][request_incremental_authorization]")
                    == Some("if_available");
                let status = if asked && inner.incremental_cards.iter().any(|c| c == card) {
                    "available"
                } else {
                    "unavailable"
                };
                intent["latest_charge"]["payment_method_details"]["card"]["incremental_authorization"] =
                    json!({"status": status});
            }
            inner.intents.insert(id, intent.clone());
            let intent = shown(&intent, expands(&params, "latest_charge"));
            match failure {
                Some((code, message)) => {
                    let (status, mut body) = error(402, "card_error", Some(code), message);
                    if code == "card_declined" {
                        let decline = if over_limit { "insufficient_funds" } else { "generic_decline" };
                        body["error"]["decline_code"] = json!(decline);
                    }
                    body["error"]["payment_intent"] = Value::Null;
                    (status, body)
                }
                None => (200, intent),
            }
        },
    )
    .await
}

/// A POST acting on one PaymentIntent, under the idempotency rules: 404
/// when there is none; `change` refuses (an error answer) or changes it.
async fn act_on_intent(
    inner: Arc<Mutex<Inner>>,
    endpoint: Endpoint,
    id: String,
    action: &str,
    headers: HeaderMap,
    body: Bytes,
    change: impl FnOnce(&mut Value, &[(String, String)]) -> Option<(u16, Value)> + Send + 'static,
) -> Response {
    let params = form(&body);
    let path = format!("/v1/payment_intents/{id}/{action}");
    idempotent(
        inner,
        endpoint,
        path,
        headers,
        params.clone(),
        move |inner| {
            let Some(intent) = inner.intents.get_mut(&id) else {
                return error(
                    404,
                    "invalid_request_error",
                    Some("resource_missing"),
                    "No such payment_intent",
                );
            };
            if let Some(refusal) = change(intent, &params) {
                return refusal;
            }
            (200, shown(intent, expands(&params, "latest_charge")))
        },
    )
    .await
}

pub(super) async fn capture(
    State(inner): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    act_on_intent(
        inner,
        Endpoint::Capture,
        id,
        "capture",
        headers,
        body,
        |intent, params| {
            if intent["status"] != "requires_capture" {
                return Some(error(
                    400,
                    "invalid_request_error",
                    Some("payment_intent_unexpected_state"),
                    "This PaymentIntent could not be captured",
                ));
            }
            let capturable = intent["amount_capturable"].as_i64().unwrap_or(0);
            let amount = param(params, "amount_to_capture")
                .and_then(|a| a.parse().ok())
                .unwrap_or(capturable);
            if amount > capturable {
                return Some(error(
                    400,
                    "invalid_request_error",
                    Some("amount_too_large"),
                    "amount_to_capture is above amount_capturable",
                ));
            }
            intent["status"] = json!("succeeded");
            intent["amount_received"] = json!(amount);
            intent["amount_capturable"] = json!(0);
            if let Some(charge) = intent["latest_charge"].as_object_mut() {
                charge.insert("captured".into(), json!(true));
                charge.insert("amount_captured".into(), json!(amount));
            }
            None
        },
    )
    .await
}

pub(super) async fn cancel(
    State(inner): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    act_on_intent(
        inner,
        Endpoint::Cancel,
        id,
        "cancel",
        headers,
        body,
        |intent, params| {
            if intent["status"] == "succeeded" || intent["status"] == "canceled" {
                return Some(error(
                    400,
                    "invalid_request_error",
                    Some("payment_intent_unexpected_state"),
                    "This PaymentIntent cannot be canceled",
                ));
            }
            intent["status"] = json!("canceled");
            intent["amount_capturable"] = json!(0);
            intent["cancellation_reason"] = json!(param(params, "cancellation_reason"));
            None
        },
    )
    .await
}

pub(super) async fn retrieve(
    State(inner): Shared,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let Ok(mut guard) = inner.lock() else {
        return json_response(500, &json!({}));
    };
    guard.expire_holds();
    let (status, body) = match guard.intents.get(&id) {
        Some(intent) => (200, shown(intent, expands(&query, "latest_charge"))),
        None => error(
            404,
            "invalid_request_error",
            Some("resource_missing"),
            "No such payment_intent",
        ),
    };
    guard.requests.push(Recorded {
        method: Method::GET.to_string(),
        path: format!("/v1/payment_intents/{id}"),
        idempotency_key: None,
        params: query,
        status,
    });
    json_response(status, &body)
}

pub(super) async fn list(
    State(inner): Shared,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let Ok(mut guard) = inner.lock() else {
        return json_response(500, &json!({}));
    };
    guard.expire_holds();
    let customer = param(&query, "customer").map(str::to_owned);
    let expanded = expands(&query, "data.latest_charge");
    // Newest first (ids count up), a page at a time.
    let mut newest_first: Vec<&Value> = guard
        .intents
        .values()
        .filter(|i| customer.as_deref().is_none_or(|c| i["customer"] == c))
        .collect();
    newest_first.sort_by(|a, b| b["id"].as_str().cmp(&a["id"].as_str()));
    let (page, has_more) = page_of(&newest_first, &query);
    let data: Vec<Value> = page.iter().map(|i| shown(i, expanded)).collect();
    guard.requests.push(Recorded {
        method: "GET".into(),
        path: "/v1/payment_intents".into(),
        idempotency_key: None,
        params: query,
        status: 200,
    });
    json_response(
        200,
        &json!({"object": "list", "data": data, "has_more": has_more, "url": "/v1/payment_intents"}),
    )
}
