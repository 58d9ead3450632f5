//! `/v1/calls`: call records from the ledger, the calls in progress with
//! what their node sees of them live, and an operator's hang-up.
//!
//! - `GET /v1/calls?booking=ID&called=+E164&active=true&limit=N`: records
//!   with their ordered events; `active=true` keeps the calls not yet
//!   ended (on every node), each with `live` when this node carries it;
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

use super::bookings::{checked_limit, internal, query_error};
use super::{ApiError, views};
use crate::bookings::model::{self, FieldError};
use crate::calls::live::{HangUpOutcome, LiveCall};
use crate::ledger::CallRecord;
use crate::state::Shared;

/// The `/v1/calls` routes.
pub fn routes() -> axum::Router<Arc<Shared>> {
    axum::Router::new()
        .route("/calls", get(list_calls))
        .route("/calls/{id}", get(show_call))
        .route("/calls/{id}/hangup", post(hang_up))
}

/// Query of `GET /v1/calls`: a booking, a dialled number, the calls in
/// progress, or any of them together.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallQuery {
    booking: Option<String>,
    called: Option<String>,
    active: Option<bool>,
    limit: Option<i64>,
}

async fn list_calls(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<CallQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| query_error("query", &e))?;
    let active = query.active.unwrap_or(false);
    let mut errors = Vec::new();
    if query.booking.is_none() && query.called.is_none() && !active {
        errors.push(FieldError {
            field: "booking".into(),
            message: "give booking=ID, called=+E164 or active=true (or several)".into(),
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
        .ledger
        .calls(query.booking, query.called, active, limit)
        .await
        .map_err(internal)?;
    let mut listed = Vec::with_capacity(calls.len());
    for call in &calls {
        listed.push(with_live(&shared, call).await);
    }
    Ok(Json(json!({"calls": listed})))
}

async fn show_call(
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
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HangUp {
    /// Both parties hear the time-up prompt before the BYEs.
    #[serde(default)]
    announce: bool,
}

async fn hang_up(
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
    match shared.live.hang_up(&id, request.announce).await {
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
