//! Bookings and call records over the `/v1` API.
//!
//! - `POST /v1/bookings` creates one (422 listing every invalid field);
//! - `GET /v1/bookings/{id}`, `GET /v1/bookings?called=&state=&limit=`;
//! - `DELETE /v1/bookings/{id}` cancels (409 while it is in a call);
//! - `GET /v1/calls?booking=ID`, `GET /v1/calls/{id}`: call records with
//!   their ordered events.

pub mod model;
pub mod rows;

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::http::ApiError;
use crate::state::Shared;
use model::{Context, FieldError, NewBooking};
use rows::WriteError;

/// The routes, to be nested under `/v1` behind the token check.
pub fn routes() -> axum::Router<Arc<Shared>> {
    axum::Router::new()
        .route("/bookings", get(list_bookings).post(create_booking))
        .route("/bookings/{id}", get(show_booking).delete(cancel_booking))
        .route("/calls", get(list_calls))
        .route("/calls/{id}", get(show_call))
}

const BOOKING_STATES: [&str; 4] = ["active", "in-call", "completed", "canceled"];

fn now_ms(now: OffsetDateTime) -> i64 {
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %error, "api request failed on the database");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; see the daemon log",
    )
}

/// A list's `limit`: `default` when absent; outside 1–500 an error on
/// `limit` is added to `errors`.
fn checked_limit(limit: Option<i64>, default: i64, errors: &mut Vec<FieldError>) -> i64 {
    let limit = limit.unwrap_or(default);
    if !(1..=500).contains(&limit) {
        errors.push(FieldError {
            field: "limit".into(),
            message: "must be 1 to 500".into(),
        });
    }
    limit
}

/// 422 for a query string that does not fit, naming `field`.
fn query_error(field: &str, rejection: &axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::validation(vec![FieldError {
        field: field.into(),
        message: rejection.body_text(),
    }])
}

async fn create_booking(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<NewBooking>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(booking) = body.map_err(ApiError::from_json_rejection)?;
    let config = shared.config.load();
    let trunks: Vec<String> = config
        .trunks
        .iter()
        .filter(|t| t.termination.is_some())
        .map(|t| t.name.clone())
        .collect();
    let now = OffsetDateTime::now_utc();
    let valid = model::validate(
        booking,
        &Context {
            now,
            trunks_with_termination: &trunks,
            charges: config.stripe.mode() != tollbridge_config::StripeMode::LedgerOnly,
        },
    )
    .map_err(ApiError::validation)?;
    let id = valid
        .booking
        .id
        .clone()
        .unwrap_or_else(|| format!("bk_{}", uuid::Uuid::now_v7().simple()));
    let created_ms = now_ms(now);
    let result = shared
        .store
        .call(move |conn| {
            let tx = conn.transaction()?;
            let inserted = rows::insert(&tx, &id, &valid, created_ms);
            if inserted.is_ok() {
                // Its cancellation-fee hold, if any, committed with it.
                crate::settle::rows::plan_fee_hold(&tx, &id, created_ms)?;
            }
            tx.commit()?;
            Ok(inserted)
        })
        .await
        .map_err(internal)?;
    match result {
        Ok(row) => Ok((StatusCode::CREATED, Json(row.to_json()))),
        Err(WriteError::Exists) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "booking_exists",
            "a booking with this id already exists",
        )),
        Err(e) => Err(internal(e)),
    }
}

async fn show_booking(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row = shared
        .store
        .call(move |conn| rows::get(conn, &id))
        .await
        .map_err(internal)?;
    row.map(|row| Json(row.to_json()))
        .ok_or_else(ApiError::not_found)
}

/// Query of `GET /v1/bookings`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BookingQuery {
    called: Option<String>,
    state: Option<String>,
    limit: Option<i64>,
}

async fn list_bookings(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<BookingQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| query_error("query", &e))?;
    let mut errors = Vec::new();
    if let Some(state) = &query.state
        && !BOOKING_STATES.contains(&state.as_str())
    {
        errors.push(FieldError {
            field: "state".into(),
            message: format!("must be one of {}", BOOKING_STATES.join(", ")),
        });
    }
    let limit = checked_limit(query.limit, 50, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let found = shared
        .store
        .call(move |conn| rows::list(conn, query.called.as_deref(), query.state.as_deref(), limit))
        .await
        .map_err(internal)?;
    Ok(Json(
        json!({"bookings": found.iter().map(|b| b.to_json()).collect::<Vec<_>>()}),
    ))
}

async fn cancel_booking(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let at = now_ms(OffsetDateTime::now_utc());
    let late_cancellation = shared.config.load().billing.late_cancellation;
    let result = shared
        .store
        .call(move |conn| {
            let tx = conn.transaction()?;
            let canceled = rows::cancel(&tx, &id, at);
            if let Ok(Some(booking)) = &canceled
                && booking.state == "canceled"
            {
                // Late (within billing.late_cancellation of the window):
                // the fee is captured; earlier: released.
                let late = crate::settle::rows::is_late(&tx, &id, at, late_cancellation)?;
                let reason = if late {
                    "late cancellation"
                } else {
                    "canceled in time"
                };
                crate::settle::rows::settle_fee(&tx, &id, late, reason, at)?;
            }
            tx.commit()?;
            Ok(canceled)
        })
        .await
        .map_err(internal)?;
    match result {
        Ok(Some(row)) => Ok(Json(row.to_json())),
        Ok(None) => Err(ApiError::not_found()),
        Err(WriteError::InCall) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "booking_in_call",
            "the booking is in a call; cancel it after the call ends",
        )),
        Err(e) => Err(internal(e)),
    }
}

/// Query of `GET /v1/calls`: a booking, a dialled number, or both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallQuery {
    booking: Option<String>,
    called: Option<String>,
    limit: Option<i64>,
}

async fn list_calls(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<CallQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| query_error("query", &e))?;
    let mut errors = Vec::new();
    if query.booking.is_none() && query.called.is_none() {
        errors.push(FieldError {
            field: "booking".into(),
            message: "give booking=ID or called=+E164 (or both)".into(),
        });
    }
    if let Some(called) = &query.called
        && !model::is_e164(called)
    {
        errors.push(FieldError {
            field: "called".into(),
            message: "must be an E.164 number such as +815012345678".into(),
        });
    }
    let limit = checked_limit(query.limit, 100, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let calls = shared
        .store
        .call(move |conn| {
            let ids = crate::calls::records::call_ids(
                conn,
                query.booking.as_deref(),
                query.called.as_deref(),
                limit,
            )?;
            let mut calls = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(call) = crate::calls::records::call_json(conn, &id)? {
                    calls.push(call);
                }
            }
            Ok(calls)
        })
        .await
        .map_err(internal)?;
    Ok(Json(json!({"calls": calls})))
}

async fn show_call(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let call = shared
        .store
        .call(move |conn| crate::calls::records::call_json(conn, &id))
        .await
        .map_err(internal)?;
    call.map(Json).ok_or_else(ApiError::not_found)
}
