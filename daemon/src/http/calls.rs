//! `/v1/calls`: call records from the ledger, the calls in progress with
//! what their node sees of them live, and an operator's hang-up.
//!
//! - `GET /v1/calls?booking=&called=&caller=&status=&active=&from=&to=&limit=&cursor=`:
//!   records with their ordered events, in start order, a page at a time
//!   (`next` is the cursor of the next page); `active=true` keeps the
//!   calls not yet ended (on every node), each with `live` when this node
//!   carries it;
//! - `GET /v1/calls/{id}`: one record (with `live` likewise);
//! - `POST /v1/calls/{id}/hangup` (`{"announce": true}` optional): ends a
//!   call this node carries, after the time-up prompt when announced.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::bookings::{checked_limit, cursor, internal, parsed_cursor, query_error};
use super::schemas::{Call, CallList, ErrorBody, HangupAnswer};
use super::{ApiError, views};
use crate::bookings::model::{self, FieldError};
use crate::calls::live::{HangUpOutcome, LiveCall};
use crate::ledger::{CallFilter, CallRecord, CallStatus};
use crate::state::Shared;

/// The `/v1/calls` routes.
pub fn routes() -> axum::Router<Arc<Shared>> {
    axum::Router::new()
        .route("/calls", get(list_calls))
        .route("/calls/{id}", get(show_call))
        .route("/calls/{id}/hangup", post(hang_up))
}

/// Query of `GET /v1/calls`: any of the filters, together.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct CallQuery {
    booking: Option<String>,
    called: Option<String>,
    caller: Option<String>,
    status: Option<String>,
    active: Option<bool>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

fn instant(field: &str, value: Option<&str>, errors: &mut Vec<FieldError>) -> Option<i64> {
    let value = value?;
    match time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339) {
        Ok(at) => Some(crate::clock::ms_of(at)),
        Err(_) => {
            errors.push(FieldError {
                field: field.into(),
                message: "must be an RFC 3339 time with an offset, like 2026-12-01T00:00:00+09:00"
                    .into(),
            });
            None
        }
    }
}

/// Call records, in start order, a page at a time.
#[utoipa::path(get, path = "/v1/calls", tag = "calls", params(CallQuery),
    responses(
        (status = 200, description = "a page", body = CallList),
        (status = 422, description = "`validation_failed`", body = ErrorBody),
        (status = 401, description = "no or wrong bearer token", body = ErrorBody)))]
pub(super) async fn list_calls(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<CallQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| query_error("query", &e))?;
    let active = query.active.unwrap_or(false);
    let mut errors = Vec::new();
    if query.booking.is_none()
        && query.called.is_none()
        && query.caller.is_none()
        && query.status.is_none()
        && query.from.is_none()
        && query.to.is_none()
        && !active
    {
        errors.push(FieldError {
            field: "booking".into(),
            message: "give at least one of booking, called, caller, status, active=true, from, to"
                .into(),
        });
    }
    for (field, number) in [("called", &query.called), ("caller", &query.caller)] {
        if let Some(number) = number
            && !model::is_e164(number)
        {
            errors.push(FieldError {
                field: field.into(),
                message: "must be an E.164 number such as +815012345678".into(),
            });
        }
    }
    let status = match query.status.as_deref().map(CallStatus::parse) {
        Some(None) => {
            let words: Vec<&str> = CallStatus::ALL.iter().map(|s| s.as_str()).collect();
            errors.push(FieldError {
                field: "status".into(),
                message: format!("must be one of {}", words.join(", ")),
            });
            None
        }
        Some(status) => status,
        None => None,
    };
    let from_ms = instant("from", query.from.as_deref(), &mut errors);
    let to_ms = instant("to", query.to.as_deref(), &mut errors);
    let after = parsed_cursor(query.cursor.as_deref(), "call_", &mut errors);
    let limit = checked_limit(query.limit, 100, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let filter = CallFilter {
        booking: query.booking,
        called: query.called,
        caller: query.caller,
        status,
        open_only: active,
        from_ms,
        to_ms,
        after,
    };
    // One more than asked: whether a next page exists.
    let mut calls = shared
        .ledger
        .calls(filter, limit + 1)
        .await
        .map_err(internal)?;
    let more = calls.len() as i64 > limit;
    calls.truncate(usize::try_from(limit).unwrap_or(0));
    let next = more
        .then(|| calls.last().map(|c| cursor(c.created_ms, &c.id)))
        .flatten();
    let mut listed = Vec::with_capacity(calls.len());
    for call in &calls {
        listed.push(with_live(&shared, call).await);
    }
    Ok(Json(json!({"calls": listed, "next": next})))
}

/// One call record.
#[utoipa::path(get, path = "/v1/calls/{id}", tag = "calls",
    params(("id" = String, Path, description = "`call_...`")),
    responses(
        (status = 200, description = "the call", body = Call),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 401, description = "no or wrong bearer token", body = ErrorBody)))]
pub(super) async fn show_call(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let call = shared
        .ledger
        .call(id)
        .await
        .map_err(internal)?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(with_live(&shared, &call).await))
}

/// A record, with `live` set when the call is in progress on this node.
async fn with_live(shared: &Shared, call: &CallRecord) -> Value {
    let live = match call.ended_ms {
        None => shared.live.show(&call.id).await,
        Some(_) => None,
    };
    let mut view = views::call(call);
    view["live"] = live.as_ref().map_or(Value::Null, live_view);
    view
}

/// What the call's task says of it now.
fn live_view(live: &LiveCall) -> Value {
    let loss = |side: Option<tollbridge_media::leg::LegStats>| {
        side.map(|leg| {
            json!({
                "packets_received": leg.packets_received,
                "packets_lost": leg.lost,
                "loss_percent": loss_percent(leg.lost, leg.packets_received),
                "jitter_ms": leg.jitter_ms,
            })
        })
    };
    json!({
        "phase": live.progress.phase,
        "talk_ms": u64::try_from(live.progress.talk.as_millis()).unwrap_or(u64::MAX),
        "remaining_ms": live.progress.remaining.map(|r| u64::try_from(r.as_millis()).unwrap_or(u64::MAX)),
        "codec": live.progress.codec.map(|c| c.name()),
        "media": {
            "caller": loss(live.media.map(|m| m.caller)),
            "callee": loss(live.media.map(|m| m.callee)),
        },
    })
}

/// Lost packets as a share of those expected (received + lost), in
/// percent with one decimal.
fn loss_percent(lost: u64, received: u64) -> f64 {
    let expected = lost + received;
    if expected == 0 {
        return 0.0;
    }
    (lost as f64 * 1000.0 / expected as f64).round() / 10.0
}

/// The body of `POST /v1/calls/{id}/hangup`; none means `{}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct HangUp {
    /// Both parties hear the time-up prompt before the BYEs.
    #[serde(default)]
    announce: bool,
}

/// Ends a call this node carries.
#[utoipa::path(post, path = "/v1/calls/{id}/hangup", tag = "calls", request_body(content = HangUp, description = "optional"),
    params(("id" = String, Path, description = "`call_...`")),
    responses(
        (status = 202, description = "the hang-up is under way", body = HangupAnswer),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`call_ended`, `call_on_another_node`", body = ErrorBody),
        (status = 401, description = "no or wrong bearer token", body = ErrorBody)))]
pub(super) async fn hang_up(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        HangUp::default()
    } else {
        let Json(request) =
            Json::<HangUp>::from_bytes(&body).map_err(ApiError::from_json_rejection)?;
        request
    };
    let call = shared
        .ledger
        .call(id.clone())
        .await
        .map_err(internal)?
        .ok_or_else(ApiError::not_found)?;
    if call.ended_ms.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "call_ended",
            format!("the call has ended ({})", call.status.as_str()),
        ));
    }
    match shared.live.hang_up(&id, request.announce) {
        HangUpOutcome::Requested => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"id": id, "hangup": "requested", "announce": request.announce})),
        )),
        HangUpOutcome::NotHere if call.node != shared.ledger.node() => Err(ApiError::new(
            StatusCode::CONFLICT,
            "call_on_another_node",
            format!(
                "the call is carried by node {}; send the request to that node's API",
                call.node
            ),
        )),
        // Its task ended a moment ago; the record closes as it is written.
        HangUpOutcome::NotHere => Err(ApiError::new(
            StatusCode::CONFLICT,
            "call_ended",
            "the call is ending",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_a_share_of_the_packets_expected() {
        for (lost, received, percent) in [
            (0, 0, 0.0),
            (0, 500, 0.0),
            (5, 495, 1.0),
            (1, 2, 33.3),
            (3, 0, 100.0),
        ] {
            assert_eq!(loss_percent(lost, received), percent, "{lost}/{received}");
        }
    }
}
