//! `/v1/calls/{id}/recording`: a call's recording file, served from the
//! disk of the node that made it, and its deletion.
//!
//! - `GET`: the WAV file (`audio/wav`), streamed, with HTTP Range for
//!   seeking (one range per request), `Last-Modified` and
//!   `X-Recording-SHA256`;
//! - `DELETE`: removes the file and records that it was (204).
//!
//! Range, `If-Range` and `HEAD` are tower-http's `ServeFile`: the same
//! code serves static files for much of the axum world.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceExt;

use super::ApiError;
use super::bookings::internal;
use super::schemas::ErrorBody;
use crate::ledger::{RecordingRow, RecordingState};
use crate::state::Shared;

/// The recording routes.
pub fn routes() -> axum::Router<Arc<Shared>> {
    axum::Router::new().route(
        "/calls/{id}/recording",
        get(get_recording).delete(delete_recording),
    )
}

/// The call's recording row when this node can act on its file; the
/// reason it cannot otherwise.
async fn servable(shared: &Shared, id: String) -> Result<RecordingRow, ApiError> {
    let Some(row) = shared.ledger.recording(id).await.map_err(internal)? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_recording",
            "no such call, or the call was not recorded",
        ));
    };
    match row.state {
        RecordingState::Recording => Err(ApiError::new(
            StatusCode::CONFLICT,
            "recording_in_progress",
            "the call is still being recorded; the file is served once it is closed",
        )),
        RecordingState::Deleted => Err(ApiError::new(
            StatusCode::GONE,
            "recording_deleted",
            format!(
                "the recording was deleted ({})",
                row.deleted_reason
                    .as_deref()
                    .unwrap_or("no reason recorded")
            ),
        )),
        _ if row.path.is_empty() => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "recording_not_made",
            format!(
                "the call was not recorded: {}",
                row.error.as_deref().unwrap_or("no reason recorded")
            ),
        )),
        _ if row.node != shared.ledger.node() => Err(ApiError::new(
            StatusCode::CONFLICT,
            "recording_on_another_node",
            format!(
                "the file is on node {}; ask that node (or share recording.dir between nodes)",
                row.node
            ),
        )),
        _ => Ok(row),
    }
}

/// The recording's file.
#[utoipa::path(get, path = "/v1/calls/{id}/recording", tag = "calls",
    params(("id" = String, Path, description = "the call"),
           ("Range" = Option<String>, Header, description = "one byte range, `bytes=START-END`")),
    responses(
        (status = 200, description = "the WAV file (16-bit PCM, 8 kHz, caller left, expert right)", content_type = "audio/wav"),
        (status = 206, description = "the bytes of the range asked for", content_type = "audio/wav"),
        (status = 416, description = "a range outside the file"),
        (status = 404, description = "`no_recording`, `recording_not_made`", body = ErrorBody),
        (status = 409, description = "`recording_in_progress`, `recording_on_another_node`", body = ErrorBody),
        (status = 410, description = "`recording_deleted`, `recording_missing`", body = ErrorBody),
        (status = 401, description = "no or wrong bearer token", body = ErrorBody)))]
pub(super) async fn get_recording(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let row = servable(&shared, id).await?;
    let served = tower_http::services::ServeFile::new_with_mime(
        &row.path,
        &"audio/wav".parse().map_err(|_| ApiError::not_found())?,
    )
    .oneshot(request)
    .await
    .map_err(|e| {
        tracing::error!(error = %e, path = %row.path, "cannot serve a recording");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the recording cannot be read",
        )
    })?;
    if served.status() == StatusCode::NOT_FOUND {
        tracing::error!(call = %row.call_id, path = %row.path, "a recording's file is missing");
        return Err(ApiError::new(
            StatusCode::GONE,
            "recording_missing",
            "the recording's file is no longer on this node's disk",
        ));
    }
    let mut response = served.map(Body::new);
    if let Some(sha256) = row.sha256.as_deref()
        && let Ok(value) = HeaderValue::from_str(sha256)
    {
        response.headers_mut().insert("x-recording-sha256", value);
    }
    Ok(response)
}

/// Deletes the recording's file, and records that it was.
#[utoipa::path(delete, path = "/v1/calls/{id}/recording", tag = "calls",
    params(("id" = String, Path, description = "the call")),
    responses(
        (status = 204, description = "deleted (the call's record keeps when and why)"),
        (status = 404, description = "`no_recording`, `recording_not_made`", body = ErrorBody),
        (status = 409, description = "`recording_in_progress`, `recording_on_another_node`", body = ErrorBody),
        (status = 410, description = "`recording_deleted`", body = ErrorBody),
        (status = 401, description = "no or wrong bearer token", body = ErrorBody)))]
pub(super) async fn delete_recording(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let row = servable(&shared, id).await?;
    match crate::calls::recording::delete(&shared.ledger, &row.call_id, &row.path, "api".into())
        .await
    {
        Ok(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(why) => {
            tracing::error!(call = %row.call_id, path = %row.path, error = %why, "cannot delete a recording");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the recording cannot be deleted",
            ))
        }
    }
}
