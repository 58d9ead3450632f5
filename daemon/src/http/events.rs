//! `/v1/events`: the events the booking platform is told of by webhook,
//! with every delivery attempt, and redelivery by hand.
//!
//! - `GET /v1/events?booking=ID&type=call.ended&limit=N`: oldest first;
//! - `GET /v1/events/{id}`;
//! - `POST /v1/events/{id}/redeliver`: due again at once to every
//!   endpoint subscribed to it (202).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use super::bookings::{checked_limit, cursor, internal, parsed_cursor, query_error};
use super::schemas::{ErrorBody, Event, EventList, Redelivery};
use crate::bookings::model::FieldError;
use crate::clock::now_ms;
use crate::state::Shared;

/// The `/v1/events` routes.
pub fn routes() -> axum::Router<Arc<Shared>> {
    axum::Router::new()
        .route("/events", get(list_events))
        .route("/events/{id}", get(show_event))
        .route("/events/{id}/redeliver", post(redeliver))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct EventQuery {
    booking: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// Events, oldest first, with their deliveries.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventQuery),
    responses(
        (status = 200, description = "a page", body = EventList),
        (status = 422, description = "`validation_failed`", body = ErrorBody),
        (status = 401, description = "no or wrong bearer token", body = ErrorBody)))]
pub(super) async fn list_events(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<EventQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| query_error("query", &e))?;
    let mut errors = Vec::new();
    if let Some(kind) = &query.kind
        && !tollbridge_config::WEBHOOK_EVENT_TYPES.contains(&kind.as_str())
    {
        errors.push(FieldError {
            field: "type".into(),
            message: format!(
                "must be one of {}",
                tollbridge_config::WEBHOOK_EVENT_TYPES.join(", ")
            ),
        });
    }
    let after = parsed_cursor(query.cursor.as_deref(), "evt_", &mut errors);
    let limit = checked_limit(query.limit, 100, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let mut events = shared
        .ledger
        .events(query.booking, query.kind, after, limit + 1)
        .await
        .map_err(internal)?;
    let more = events.len() as i64 > limit;
    events.truncate(usize::try_from(limit).unwrap_or(0));
    let next = more
        .then(|| events.last().map(|e| cursor(e.created_ms, &e.id)))
        .flatten();
    Ok(Json(json!({
        "events": events.iter().map(super::views::event).collect::<Vec<_>>(),
        "next": next,
    })))
}

/// One event.
#[utoipa::path(get, path = "/v1/events/{id}", tag = "events",
    params(("id" = String, Path, description = "`evt_...`")),
    responses(
        (status = 200, description = "the event", body = Event),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 401, description = "no or wrong bearer token", body = ErrorBody)))]
pub(super) async fn show_event(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let event = shared.ledger.event(id).await.map_err(internal)?;
    event
        .map(|event| Json(super::views::event(&event)))
        .ok_or_else(ApiError::not_found)
}

/// Sends an event again to every endpoint subscribed to it.
#[utoipa::path(post, path = "/v1/events/{id}/redeliver", tag = "events",
    params(("id" = String, Path, description = "`evt_...`")),
    responses(
        (status = 202, description = "due again now", body = Redelivery),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 401, description = "no or wrong bearer token", body = ErrorBody)))]
pub(super) async fn redeliver(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let due = shared
        .ledger
        .redeliver(id.clone(), now_ms())
        .await
        .map_err(internal)?
        .ok_or_else(ApiError::not_found)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "deliveries_due": due})),
    ))
}
