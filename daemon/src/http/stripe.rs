//! `POST /v1/stripe/webhook`: Stripe's events, verified
//! (`settle::webhook`), then recorded once by id and applied by the
//! ledger. No bearer token: Stripe signs its deliveries instead.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ApiError;
use crate::clock::now_ms;
use crate::settle::webhook::verify;
use crate::state::Shared;

/// Receives one delivery.
#[utoipa::path(post, path = "/v1/stripe/webhook", tag = "stripe", security(()),
    request_body(content = Object, description = "a Stripe event, signed in `Stripe-Signature`"),
    params(("Stripe-Signature" = String, Header, description = "`t=...,v1=...`")),
    responses(
        (status = 200, description = "received (or a duplicate)", body = Object),
        (status = 400, description = "`bad_signature` and other unusable deliveries", body = super::schemas::ErrorBody)))]
pub async fn receive(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(secret) = shared.config.load().stripe.webhook_secret.clone() else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "webhooks_disabled",
            "stripe.webhook_secret is not set",
        )
        .into_response();
    };
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let now = now_ms() / 1000;
    if let Err(e) = verify(header, &body, secret.expose(), now) {
        tracing::warn!(reason = ?e, "stripe webhook refused: bad signature");
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_signature",
            format!("Stripe-Signature does not verify ({e:?})"),
        )
        .into_response();
    }
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_event",
            "the body is not a JSON event",
        )
        .into_response();
    };
    let (Some(id), Some(kind)) = (event["id"].as_str(), event["type"].as_str()) else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_event",
            "the event has no id or type",
        )
        .into_response();
    };
    let (id, kind) = (id.to_owned(), kind.to_owned());
    let object = event["data"]["object"].clone();
    let applied = shared
        .ledger
        .apply_stripe_event(id, kind, object, now_ms())
        .await;
    match applied {
        Ok(fresh) => (
            StatusCode::OK,
            axum::Json(json!({"received": true, "duplicate": !fresh})),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot apply a stripe webhook");
            // Stripe retries a non-2xx delivery.
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "try again",
            )
            .into_response()
        }
    }
}
