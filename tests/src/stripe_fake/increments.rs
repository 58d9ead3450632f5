//! The fake's incremental authorization, as Stripe's behaves (STRIPE.md
//! and the API reference): only on a hold in `requires_capture` whose
//! charge said `incremental_authorization.status = available`; `amount` is
//! the new total and must be above the current one; a card that cannot
//! take it declines (402 `card_declined`) and nothing changes, the hold
//! stays capturable for what it held; at most 10 attempts per
//! PaymentIntent, declines included.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::json;

use super::{Endpoint, Shared, error, expands, form, idempotent, param, shown};

/// Stripe's most attempts per PaymentIntent.
const MOST_ATTEMPTS: u64 = 10;

pub(super) async fn increment(
    State(inner): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = form(&body);
    let path = format!("/v1/payment_intents/{id}/increment_authorization");
    idempotent(
        inner,
        Endpoint::Increment,
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
            let Some(intent) = inner.intents.get(&id).cloned() else {
                return error(
                    404,
                    "invalid_request_error",
                    Some("resource_missing"),
                    "No such payment_intent",
                );
            };
            let charge = &intent["latest_charge"];
            let available = charge["payment_method_details"]["card"]["incremental_authorization"]
                ["status"]
                == "available";
            if intent["status"] != "requires_capture" || !available {
                return error(
                    400,
                    "invalid_request_error",
                    Some("payment_intent_unexpected_state"),
                    "This PaymentIntent is not eligible for incremental authorization",
                );
            }
            let attempts = intent["incremental_attempts"].as_u64().unwrap_or(0);
            if attempts >= MOST_ATTEMPTS {
                return error(
                    400,
                    "invalid_request_error",
                    Some("incremental_authorization_attempts_exceeded"),
                    "This PaymentIntent has reached the maximum number of incremental authorizations",
                );
            }
            let current = intent["amount"].as_i64().unwrap_or(0);
            if amount <= current {
                return error(
                    400,
                    "invalid_request_error",
                    Some("amount_too_small"),
                    "The amount must be greater than the currently authorized amount",
                );
            }
            let card = intent["payment_method"].as_str().unwrap_or("").to_owned();
            let on_hold: i64 = inner
                .intents
                .values()
                .filter(|i| i["status"] == "requires_capture" && i["payment_method"] == card)
                .filter_map(|i| i["amount_capturable"].as_i64())
                .sum();
            let declined = inner
                .card_limits
                .get(&card)
                .is_some_and(|limit| on_hold + (amount - current) > *limit);
            let Some(stored) = inner.intents.get_mut(&id) else {
                return error(500, "api_error", None, "the intent vanished");
            };
            stored["incremental_attempts"] = json!(attempts + 1);
            if declined {
                let (status, mut body) = error(
                    402,
                    "card_error",
                    Some("card_declined"),
                    "Your card has insufficient funds.",
                );
                body["error"]["decline_code"] = json!("insufficient_funds");
                return (status, body);
            }
            stored["amount"] = json!(amount);
            stored["amount_capturable"] = json!(amount);
            if let Some(charge) = stored["latest_charge"].as_object_mut() {
                charge.insert("amount".into(), json!(amount));
            }
            (200, shown(stored, expands(&params, "latest_charge")))
        },
    )
    .await
}
