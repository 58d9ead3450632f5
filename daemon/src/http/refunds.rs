//! `POST /v1/calls/{id}/refunds`: gives back part or all of a call's
//! captured charge. The refund is written first (its id the source of its
//! Stripe idempotency key) and sent by the settlement worker; its state
//! shows in the answer and then on the call record (`settlements`,
//! `refunded_amount`), and the platform hears `refund.succeeded` or
//! `refund.failed`. The same `id` asked again returns the same refund.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;
use serde_json::Value;
use tollbridge_billing::settlement::{REFUND_REASONS, RefundRefusal};

use super::ApiError;
use super::bookings::internal;
use super::schemas::{ErrorBody, Refund};
use crate::bookings::model::FieldError;
use crate::ledger::{NewRefund, RefundRefused};
use crate::state::Shared;

/// The route, under `/v1` behind the token check.
pub fn routes() -> axum::Router<Arc<Shared>> {
    axum::Router::new().route("/calls/{id}/refunds", post(create_refund))
}

/// The body: everything optional.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RefundBody {
    /// `rf_` and 1–64 of `A-Z a-z 0-9 - _`; made when absent. Asking
    /// again with the same id returns the same refund.
    id: Option<String>,
    /// Minor units; all that is left to refund when absent.
    amount: Option<i64>,
    /// `requested_by_customer`, `duplicate` or `fraudulent`.
    reason: Option<String>,
}

fn is_refund_id(text: &str) -> bool {
    text.strip_prefix("rf_").is_some_and(|rest| {
        (1..=64).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

fn checked(body: &RefundBody) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(id) = &body.id
        && !is_refund_id(id)
    {
        errors.push(FieldError {
            field: "id".into(),
            message: "must be rf_ followed by 1 to 64 letters, digits, '-' or '_'".into(),
        });
    }
    if body.amount.is_some_and(|amount| amount <= 0) {
        errors.push(FieldError {
            field: "amount".into(),
            message: "must be at least 1 minor unit".into(),
        });
    }
    if let Some(reason) = &body.reason
        && !REFUND_REASONS.contains(&reason.as_str())
    {
        errors.push(FieldError {
            field: "reason".into(),
            message: format!("must be one of {}", REFUND_REASONS.join(", ")),
        });
    }
    errors
}

/// Refunds part or all of a call's captured charge.
#[utoipa::path(post, path = "/v1/calls/{id}/refunds", tag = "calls", request_body = RefundBody,
    params(("id" = String, Path, description = "`call_...`")),
    responses(
        (status = 201, description = "written; sent within a second", body = Refund),
        (status = 200, description = "the same refund, asked again", body = Refund),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`call_not_captured`, `call_fully_refunded`, `refund_exceeds_captured`, `refund_spans_captures`, `refund_exists`", body = ErrorBody),
        (status = 422, description = "`validation_failed`", body = ErrorBody),
        (status = 401, description = "no or wrong bearer token", body = ErrorBody)))]
pub(super) async fn create_refund(
    State(shared): State<Arc<Shared>>,
    Path(call): Path<String>,
    body: Result<Json<RefundBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body.map_err(ApiError::from_json_rejection)?;
    let errors = checked(&body);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let refund = NewRefund {
        id: body
            .id
            .unwrap_or_else(|| format!("rf_{}", uuid::Uuid::now_v7().simple())),
        amount: body.amount,
        reason: body.reason,
    };
    let written = shared
        .ledger
        .create_refund(call, refund, crate::clock::now_ms())
        .await
        .map_err(internal)?;
    match written {
        Ok((row, true)) => Ok((StatusCode::CREATED, Json(super::views::refund(&row)))),
        Ok((row, false)) => Ok((StatusCode::OK, Json(super::views::refund(&row)))),
        Err(RefundRefused::NoCall) => Err(ApiError::not_found()),
        Err(RefundRefused::NotCaptured) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "call_not_captured",
            "the call's charge is not captured (yet, or at all): there is nothing to refund",
        )),
        Err(RefundRefused::Amount(RefundRefusal::NothingLeft)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "call_fully_refunded",
            "the call's charge is refunded (or being refunded) in full already",
        )),
        Err(RefundRefused::Amount(RefundRefusal::AboveRefundable { refundable })) => {
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "refund_exceeds_captured",
                format!("at most {refundable} minor units of the charge are left to refund"),
            ))
        }
        Err(RefundRefused::Amount(RefundRefusal::SpansCaptures { largest })) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "refund_spans_captures",
            format!(
                "the call was charged in parts (extension blocks) and one refund gives back from one part: refund at most {largest} minor units now, the rest in further refunds"
            ),
        )),
        Err(RefundRefused::Amount(RefundRefusal::NotPositive)) => {
            Err(ApiError::validation(vec![FieldError {
                field: "amount".into(),
                message: "must be at least 1 minor unit".into(),
            }]))
        }
        Err(RefundRefused::IdTaken(id)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "refund_exists",
            format!("refund {id} exists with other parameters or for another call"),
        )),
    }
}
