//! The fake's Refunds, as Stripe's behave (STRIPE.md): `POST /v1/refunds`
//! on a captured PaymentIntent (its charge's `amount_refunded` grows;
//! never past `amount_received`: 400 `amount_too_large`; an uncaptured
//! PaymentIntent is 400 `charge_not_captured`), under the same
//! idempotency rules and queued faults as every POST; `GET /v1/refunds`
//! by PaymentIntent, a page at a time (`limit`, `starting_after`,
//! `has_more`), newest first.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

use super::{
    Endpoint, Recorded, Shared, error, form, idempotent, json_response, metadata_of, page_of,
    param, unix_now,
};

pub(super) async fn create(State(inner): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let params = form(&body);
    let path = "/v1/refunds".to_owned();
    idempotent(
        inner,
        Endpoint::Refund,
        path,
        headers,
        params.clone(),
        move |inner| {
            let Some(intent_id) = param(&params, "payment_intent").map(str::to_owned) else {
                return error(
                    400,
                    "invalid_request_error",
                    Some("parameter_missing"),
                    "One of `charge` or `payment_intent` is required.",
                );
            };
            if let Some(reason) = param(&params, "reason")
                && !["duplicate", "fraudulent", "requested_by_customer"].contains(&reason)
            {
                return error(
                    400,
                    "invalid_request_error",
                    Some("parameter_invalid_string"),
                    "Invalid reason",
                );
            }
            let Some(intent) = inner.intents.get_mut(&intent_id) else {
                return error(
                    404,
                    "invalid_request_error",
                    Some("resource_missing"),
                    "No such payment_intent",
                );
            };
            if intent["status"] != "succeeded" {
                return error(
                    400,
                    "invalid_request_error",
                    Some("charge_not_captured"),
                    "This charge has not been captured and cannot be refunded",
                );
            }
            let received = intent["amount_received"].as_i64().unwrap_or(0);
            let charge = &mut intent["latest_charge"];
            let refunded = charge["amount_refunded"].as_i64().unwrap_or(0);
            let amount = match param(&params, "amount").map(str::parse::<i64>) {
                None => received - refunded,
                Some(Ok(amount)) if amount > 0 => amount,
                Some(_) => {
                    return error(
                        400,
                        "invalid_request_error",
                        Some("parameter_invalid_integer"),
                        "Invalid positive integer",
                    );
                }
            };
            if refunded + amount > received {
                return error(
                    400,
                    "invalid_request_error",
                    Some("amount_too_large"),
                    "Refund amount is greater than unrefunded amount on charge",
                );
            }
            charge["amount_refunded"] = json!(refunded + amount);
            charge["refunded"] = json!(refunded + amount == received);
            let charge_id = charge["id"].clone();
            let currency = intent["currency"].clone();
            let metadata = metadata_of(&params);
            inner.next_id += 1;
            let refund = json!({
                "id": format!("re_fake{:06}", inner.next_id),
                "object": "refund",
                "amount": amount,
                "balance_transaction": null,
                "charge": charge_id,
                "created": unix_now(),
                "currency": currency,
                "metadata": metadata,
                "payment_intent": intent_id,
                "reason": param(&params, "reason"),
                "receipt_number": null,
                "source_transfer_reversal": null,
                "status": "succeeded",
                "transfer_reversal": null,
            });
            inner.refunds.push(refund.clone());
            (200, refund)
        },
    )
    .await
}

pub(super) async fn list(
    State(inner): Shared,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let Ok(mut guard) = inner.lock() else {
        return json_response(500, &json!({}));
    };
    let intent = param(&query, "payment_intent").map(str::to_owned);
    let newest_first: Vec<&Value> = guard
        .refunds
        .iter()
        .rev()
        .filter(|r| intent.as_deref().is_none_or(|i| r["payment_intent"] == i))
        .collect();
    let (page, has_more) = page_of(&newest_first, &query);
    let page: Vec<Value> = page.into_iter().cloned().collect();
    guard.requests.push(Recorded {
        method: "GET".into(),
        path: "/v1/refunds".into(),
        idempotency_key: None,
        params: query,
        status: 200,
    });
    json_response(
        200,
        &json!({"object": "list", "data": page, "has_more": has_more, "url": "/v1/refunds"}),
    )
}
