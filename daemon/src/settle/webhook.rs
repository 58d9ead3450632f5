//! `POST /v1/stripe/webhook`: Stripe's events, verified, de-duplicated,
//! and applied to settlements and call records. Webhooks only speed
//! things up: the worker's read-back remains the truth, so an event lost,
//! late or out of order changes nothing that matters.
//!
//! Verification is by hand (HMAC-SHA256 over `"{t}.{body}"` with the
//! endpoint secret, `hmac` + `sha2`, compared in constant time, 300 s
//! tolerance): `async-stripe-webhook` would also parse the whole typed
//! event, and we need only its id, type and object ids.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use rusqlite::{Connection, params};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::calls::task::now_ms;
use crate::http::ApiError;
use crate::state::Shared;
use crate::store::StoreError;

/// How far a signature's timestamp may be from now.
pub const TOLERANCE_SECONDS: i64 = 300;

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// No `Stripe-Signature` header, or one we cannot read.
    Malformed,
    /// The timestamp is more than the tolerance away from now.
    Stale,
    /// No `v1` signature matches.
    Mismatch,
}

/// Verifies `Stripe-Signature` (`t=<unix>,v1=<hex>[,v1=...]`) for `body`
/// with the endpoint `secret` at `now` (unix seconds).
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secret: &str,
    now: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Malformed)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => {
                signatures.push(hex::decode(value).map_err(|_| SignatureError::Malformed)?)
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - timestamp).abs() > TOLERANCE_SECONDS {
        return Err(SignatureError::Stale);
    }
    let matches = signatures.iter().any(|signature| {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            return false;
        };
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        // verify_slice compares in constant time.
        mac.verify_slice(signature).is_ok()
    });
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Receives one delivery.
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
        .store
        .call(move |conn| apply(conn, &id, &kind, &object))
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

/// Records the event once (by id) and applies it; false for a duplicate.
pub fn apply(
    conn: &mut Connection,
    id: &str,
    kind: &str,
    object: &Value,
) -> Result<bool, StoreError> {
    let tx = conn.transaction()?;
    let fresh = tx.execute(
        "INSERT OR IGNORE INTO stripe_events (id, type, received_ms) VALUES (?1, ?2, ?3)",
        params![id, kind, now_ms()],
    )? == 1;
    if fresh {
        let intent = match object["object"].as_str() {
            Some("payment_intent") => object["id"].as_str(),
            _ => object["payment_intent"].as_str(),
        };
        if let Some(intent) = intent {
            apply_to(&tx, kind, intent, object)?;
        }
        tx.execute(
            "UPDATE stripe_events SET processed_ms = ?2 WHERE id = ?1",
            params![id, now_ms()],
        )?;
    }
    tx.commit()?;
    Ok(fresh)
}

fn apply_to(conn: &Connection, kind: &str, intent: &str, object: &Value) -> Result<(), StoreError> {
    let now = now_ms();
    let settle = |operation: &str, state: &str, error: Option<&str>| -> Result<usize, StoreError> {
        Ok(conn.execute(
            "UPDATE settlements SET state = ?3, last_error = COALESCE(?4, last_error), next_attempt_ms = NULL, updated_ms = ?5
             WHERE payment_intent = ?1 AND operation = ?2 AND state IN ('pending', 'sent', 'unknown')",
            params![intent, operation, state, error, now],
        )?)
    };
    match kind {
        "payment_intent.succeeded" => {
            let received = object["amount_received"].as_i64().unwrap_or(-1);
            conn.execute(
                "UPDATE settlements SET state = 'succeeded', next_attempt_ms = NULL, updated_ms = ?3
                 WHERE payment_intent = ?1 AND operation = 'capture' AND amount = ?2
                   AND state IN ('pending', 'sent', 'unknown')",
                params![intent, received, now],
            )?;
        }
        "payment_intent.canceled" => {
            settle("cancel", "succeeded", None)?;
            settle(
                "capture",
                "failed",
                Some("the hold was canceled or expired before capture"),
            )?;
        }
        "payment_intent.amount_capturable_updated" => {
            settle("authorize", "succeeded", None)?;
        }
        "payment_intent.payment_failed" => {
            settle("authorize", "failed", Some("payment_failed"))?;
        }
        "charge.refunded" | "charge.dispute.created" | "charge.expired" => {
            let detail = match kind {
                "charge.refunded" => "stripe: the charge was refunded",
                "charge.dispute.created" => "stripe: the customer disputed the charge",
                _ => "stripe: the uncaptured charge expired",
            };
            conn.execute(
                "INSERT INTO call_events (call_id, seq, at_ms, status, detail)
                 SELECT id, (SELECT COALESCE(MAX(seq), 0) + 1 FROM call_events WHERE call_id = calls.id), ?2, status, ?3
                 FROM calls WHERE payment_intent = ?1",
                params![intent, now, detail],
            )?;
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn signature_table() {
        let secret = "whsec_test";
        let body = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
        let now = 1_800_000_000;
        let good = sign(secret, now, body);
        type Case<'a> = (Option<String>, &'a [u8], i64, Result<(), SignatureError>);
        let cases: Vec<Case> = vec![
            (Some(format!("t={now},v1={good}")), body, now, Ok(())),
            (
                Some(format!("t={now},v1={},v1={good}", "00".repeat(32))),
                body,
                now,
                Ok(()),
            ),
            (Some(format!("t={now},v1={good}")), body, now + 300, Ok(())),
            (
                Some(format!("t={now},v1={good}")),
                body,
                now + 301,
                Err(SignatureError::Stale),
            ),
            (
                Some(format!("t={now},v1={good}")),
                body,
                now - 301,
                Err(SignatureError::Stale),
            ),
            (
                Some(format!("t={now},v1={good}")),
                b"{\"id\":\"evt_2\"}",
                now,
                Err(SignatureError::Mismatch),
            ),
            (
                Some(format!("t={now},v1={}", sign("whsec_other", now, body))),
                body,
                now,
                Err(SignatureError::Mismatch),
            ),
            (
                Some(format!("t={},v1={good}", now + 1)),
                body,
                now,
                Err(SignatureError::Mismatch),
            ),
            (
                Some(format!("v1={good}")),
                body,
                now,
                Err(SignatureError::Malformed),
            ),
            (
                Some(format!("t={now}")),
                body,
                now,
                Err(SignatureError::Malformed),
            ),
            (
                Some(format!("t={now},v1=zz")),
                body,
                now,
                Err(SignatureError::Malformed),
            ),
            (
                Some("garbage".into()),
                body,
                now,
                Err(SignatureError::Malformed),
            ),
            (None, body, now, Err(SignatureError::Malformed)),
        ];
        for (header, body, at, expected) in cases {
            assert_eq!(
                verify(header.as_deref(), body, secret, at),
                expected,
                "{header:?} at {at}"
            );
        }
    }
}
