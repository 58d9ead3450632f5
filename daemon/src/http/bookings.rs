//! `/v1/bookings`: bookings created, read, listed and canceled. The
//! rules a booking must meet are `bookings::model`'s; the storing is the
//! ledger's.
//!
//! - `POST /v1/bookings` creates one (422 listing every invalid field);
//! - `GET /v1/bookings/{id}`, `GET /v1/bookings?called=&state=&limit=`;
//! - `PATCH /v1/bookings/{id}` changes an active one (422 for invalid
//!   fields, 409 with a stable code when its state or history forbids);
//! - `DELETE /v1/bookings/{id}` cancels (409 while it is in a call).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::schemas::{Booking, BookingList, ErrorBody};
use super::{ApiError, views};
use crate::bookings::model::{self, BookingPatch, Context, FieldError, NewBooking, ValidBooking};
use crate::ledger::{BookingState, BookingWrite, ChangeRefused, LedgerError};
use crate::state::Shared;

/// The routes, to be nested under `/v1` behind the token check.
pub fn routes() -> axum::Router<Arc<Shared>> {
    axum::Router::new()
        .route("/bookings", get(list_bookings).post(create_booking))
        .route(
            "/bookings/{id}",
            get(show_booking)
                .patch(change_booking)
                .delete(cancel_booking),
        )
}

/// The answer to a ledger that failed: 503 `ledger_unavailable` while it
/// is out of reach (try again, or another node), 500 otherwise.
pub(super) fn internal(error: LedgerError) -> ApiError {
    if let LedgerError::Unavailable(why) = &error {
        tracing::warn!(error = %why, "api request: the ledger is unreachable");
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ledger_unavailable",
            "the ledger is unreachable; try again shortly or on another node",
        );
    }
    tracing::error!(error = %error, "api request failed on the database");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; see the daemon log",
    )
}

/// 422 on `callee.expert`: no expert has that name.
fn unknown_expert(expert: &str) -> ApiError {
    ApiError::validation(vec![FieldError {
        field: "callee.expert".to_owned(),
        message: format!("no expert is called {expert:?}; create it with POST /v1/experts"),
    }])
}

/// [`internal`] for a booking write.
fn write_failed(error: BookingWrite) -> ApiError {
    match error {
        BookingWrite::Ledger(e) => internal(e),
        other => internal(LedgerError::Query(other.to_string())),
    }
}

/// A list's `limit`: `default` when absent; outside 1–500 an error on
/// `limit` is added to `errors`.
pub(super) fn checked_limit(limit: Option<i64>, default: i64, errors: &mut Vec<FieldError>) -> i64 {
    let limit = limit.unwrap_or(default);
    if !(1..=500).contains(&limit) {
        errors.push(FieldError {
            field: "limit".into(),
            message: "must be 1 to 500".into(),
        });
    }
    limit
}

/// A list page's cursor: the time and id of its last item.
pub(super) fn cursor(ms: i64, id: &str) -> String {
    format!("{ms}.{id}")
}

/// A cursor [`cursor`] made for ids starting with `prefix`; an error on
/// `cursor` is added to `errors` when it is not one.
pub(super) fn parsed_cursor(
    text: Option<&str>,
    prefix: &str,
    errors: &mut Vec<FieldError>,
) -> Option<(i64, String)> {
    let text = text?;
    let parsed = text.split_once('.').and_then(|(ms, id)| {
        let ms = ms.parse().ok()?;
        (id.starts_with(prefix) && id.len() <= 80).then(|| (ms, id.to_owned()))
    });
    if parsed.is_none() {
        errors.push(FieldError {
            field: "cursor".into(),
            message: "not a cursor this API gave (use the last page's next)".into(),
        });
    }
    parsed
}

/// 422 for a query string that does not fit, naming `field`.
pub(super) fn query_error(
    field: &str,
    rejection: &axum::extract::rejection::QueryRejection,
) -> ApiError {
    ApiError::validation(vec![FieldError {
        field: field.into(),
        message: rejection.body_text(),
    }])
}

/// The API's rules for a booking under the current config, at `now`.
fn rules(
    shared: &Shared,
    now: OffsetDateTime,
) -> impl FnOnce(NewBooking) -> Result<ValidBooking, Vec<FieldError>> + Send + 'static {
    let config = shared.config.load();
    let trunks: Vec<String> = config
        .trunks
        .iter()
        .filter(|t| t.termination.is_some())
        .map(|t| t.name.clone())
        .collect();
    let charges = config.stripe.mode() != tollbridge_config::StripeMode::LedgerOnly;
    let minimums = crate::settle::minimums(&config.stripe);
    let languages = shared.languages();
    move |booking| {
        model::validate(
            booking,
            &Context {
                now,
                trunks_with_termination: &trunks,
                charges,
                minimums: &minimums,
                languages: &languages,
            },
        )
    }
}

/// 409 `booking_overlaps`, naming the other booking.
fn overlaps(other: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "booking_overlaps",
        format!(
            "booking {other} on the same number shares a caller and overlaps this window, and neither has a PIN: a call could not tell which it is for (give one a pin, or change the callers or the window)"
        ),
    )
}

/// 409 `booking_in_call`.
fn in_call() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "booking_in_call",
        "the booking is in a call; try again after the call ends",
    )
}

/// Creates a booking.
#[utoipa::path(post, path = "/v1/bookings", tag = "bookings", request_body = NewBooking,
    responses(
        (status = 201, description = "created", body = Booking),
        (status = 409, description = "`booking_exists`, `booking_overlaps`", body = ErrorBody),
        (status = 422, description = "`validation_failed`", body = ErrorBody),
        (status = 401, description = "no or wrong bearer token", body = ErrorBody)))]
pub(super) async fn create_booking(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<NewBooking>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(booking) = body.map_err(ApiError::from_json_rejection)?;
    let now = OffsetDateTime::now_utc();
    let valid = rules(&shared, now)(booking).map_err(ApiError::validation)?;
    let id = valid
        .booking
        .id
        .clone()
        .unwrap_or_else(|| format!("bk_{}", uuid::Uuid::now_v7().simple()));
    match shared
        .ledger
        .create_booking(id, valid, crate::clock::ms_of(now))
        .await
    {
        Ok(row) => Ok((StatusCode::CREATED, Json(views::booking(&row)))),
        Err(BookingWrite::Overlaps(other)) => Err(overlaps(&other)),
        Err(BookingWrite::Exists) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "booking_exists",
            "a booking with this id already exists",
        )),
        Err(BookingWrite::UnknownExpert(expert)) => Err(unknown_expert(&expert)),
        Err(e) => Err(write_failed(e)),
    }
}

/// One booking.
#[utoipa::path(get, path = "/v1/bookings/{id}", tag = "bookings",
    params(("id" = String, Path, description = "`bk_...`")),
    responses(
        (status = 200, description = "the booking", body = Booking),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 401, description = "no or wrong bearer token", body = ErrorBody)))]
pub(super) async fn show_booking(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row = shared.ledger.booking(id).await.map_err(internal)?;
    row.map(|row| Json(views::booking(&row)))
        .ok_or_else(ApiError::not_found)
}

/// Query of `GET /v1/bookings`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct BookingQuery {
    called: Option<String>,
    state: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// Bookings, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/bookings", tag = "bookings", params(BookingQuery),
    responses(
        (status = 200, description = "a page", body = BookingList),
        (status = 422, description = "`validation_failed`", body = ErrorBody),
        (status = 401, description = "no or wrong bearer token", body = ErrorBody)))]
pub(super) async fn list_bookings(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<BookingQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| query_error("query", &e))?;
    let mut errors = Vec::new();
    let state = match query.state.as_deref().map(BookingState::parse) {
        Some(None) => {
            let words: Vec<&str> = BookingState::ALL.iter().map(|s| s.as_str()).collect();
            errors.push(FieldError {
                field: "state".into(),
                message: format!("must be one of {}", words.join(", ")),
            });
            None
        }
        Some(state) => state,
        None => None,
    };
    let before = parsed_cursor(query.cursor.as_deref(), "bk_", &mut errors);
    let limit = checked_limit(query.limit, 50, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let mut found = shared
        .ledger
        .bookings(query.called, state, before, limit + 1)
        .await
        .map_err(internal)?;
    let more = found.len() as i64 > limit;
    found.truncate(usize::try_from(limit).unwrap_or(0));
    let next = more
        .then(|| found.last().map(|b| cursor(b.created_ms, &b.id)))
        .flatten();
    Ok(Json(json!({
        "bookings": found.iter().map(views::booking).collect::<Vec<_>>(),
        "next": next,
    })))
}

/// Cancels an active booking.
#[utoipa::path(delete, path = "/v1/bookings/{id}", tag = "bookings",
    params(("id" = String, Path, description = "`bk_...`")),
    responses(
        (status = 200, description = "canceled (or already)", body = Booking),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`booking_in_call`", body = ErrorBody),
        (status = 401, description = "no or wrong bearer token", body = ErrorBody)))]
pub(super) async fn cancel_booking(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let late_cancellation = shared.config.load().billing.late_cancellation;
    let result = shared
        .ledger
        .cancel_booking(id, crate::clock::now_ms(), late_cancellation)
        .await;
    match result {
        Ok(Some(row)) => Ok(Json(views::booking(&row))),
        Ok(None) => Err(ApiError::not_found()),
        Err(BookingWrite::InCall) => Err(in_call()),
        Err(e) => Err(write_failed(e)),
    }
}

/// Changes an active booking.
#[utoipa::path(patch, path = "/v1/bookings/{id}", tag = "bookings", request_body = BookingPatch,
    params(("id" = String, Path, description = "`bk_...`")),
    responses(
        (status = 200, description = "changed", body = Booking),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`booking_in_call`, `booking_closed`, `tariff_locked`, `budget_below_used`, `booking_overlaps`", body = ErrorBody),
        (status = 422, description = "`validation_failed`", body = ErrorBody),
        (status = 401, description = "no or wrong bearer token", body = ErrorBody)))]
pub(super) async fn change_booking(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Result<Json<BookingPatch>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(patch) = body.map_err(ApiError::from_json_rejection)?;
    let refused = patch.refused_fields();
    if !refused.is_empty() {
        return Err(ApiError::validation(refused));
    }
    let now = OffsetDateTime::now_utc();
    let check = rules(&shared, now);
    let changed = shared
        .ledger
        .change_booking(id, patch, check, crate::clock::ms_of(now))
        .await;
    match changed {
        Ok(row) => Ok(Json(views::booking(&row))),
        Err(ChangeRefused::NotFound) => Err(ApiError::not_found()),
        Err(ChangeRefused::Invalid(errors)) => Err(ApiError::validation(errors)),
        Err(ChangeRefused::Closed(state)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "booking_closed",
            format!("the booking is {state}; it no longer changes"),
        )),
        Err(ChangeRefused::TariffLocked) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "tariff_locked",
            "the tariff cannot change after the booking's first call: its calls were rated and held by it",
        )),
        Err(ChangeRefused::BelowUsed(used)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "budget_below_used",
            format!("cap_seconds cannot go below the {used} s the booking's calls already used"),
        )),
        Err(ChangeRefused::Write(BookingWrite::InCall)) => Err(in_call()),
        Err(ChangeRefused::Write(BookingWrite::Overlaps(other))) => Err(overlaps(&other)),
        Err(ChangeRefused::Write(BookingWrite::UnknownExpert(expert))) => {
            Err(unknown_expert(&expert))
        }
        Err(ChangeRefused::Write(e)) => Err(write_failed(e)),
    }
}
