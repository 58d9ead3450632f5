//! `/v1/exports`: the accounting export over HTTP, streamed a page at a
//! time (see `crate::export`).
//!
//! - `GET /v1/exports/calls.csv?from=RFC3339&to=RFC3339`
//! - `GET /v1/exports/calls.jsonl?from=...&to=...`
//!
//! Calls that started at or after `from` and before `to`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::mpsc;

use super::ApiError;
use super::bookings::query_error;
use crate::bookings::model::FieldError;
use crate::export::{Export, Format};
use crate::state::Shared;

/// The `/v1/exports` routes.
pub fn routes() -> axum::Router<Arc<Shared>> {
    axum::Router::new()
        .route("/exports/calls.csv", get(csv))
        .route("/exports/calls.jsonl", get(jsonl))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct Range {
    from: Option<String>,
    to: Option<String>,
}

/// The accounting export as CSV, streamed.
#[utoipa::path(get, path = "/v1/exports/calls.csv", tag = "exports", params(Range),
    responses(
        (status = 200, description = "one line per call, a header first", content_type = "text/csv", body = String),
        (status = 422, description = "`validation_failed`", body = super::schemas::ErrorBody),
        (status = 401, description = "no or wrong bearer token", body = super::schemas::ErrorBody)))]
pub(super) async fn csv(
    state: State<Arc<Shared>>,
    query: Result<Query<Range>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    export(state, query, Format::Csv).await
}

/// The accounting export as JSON Lines, streamed.
#[utoipa::path(get, path = "/v1/exports/calls.jsonl", tag = "exports", params(Range),
    responses(
        (status = 200, description = "one object per call", content_type = "application/jsonl", body = String),
        (status = 422, description = "`validation_failed`", body = super::schemas::ErrorBody),
        (status = 401, description = "no or wrong bearer token", body = super::schemas::ErrorBody)))]
pub(super) async fn jsonl(
    state: State<Arc<Shared>>,
    query: Result<Query<Range>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    export(state, query, Format::Jsonl).await
}

/// `from` and `to` as Unix ms, or every field that is wrong.
pub fn range_of(from: Option<&str>, to: Option<&str>) -> Result<(i64, i64), Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut read = |field: &str, value: Option<&str>| -> Option<i64> {
        let parsed = value.and_then(|v| OffsetDateTime::parse(v, &Rfc3339).ok());
        if parsed.is_none() {
            errors.push(FieldError {
                field: field.into(),
                message:
                    "required: an RFC 3339 time with an offset, like 2026-12-01T00:00:00+09:00"
                        .into(),
            });
        }
        parsed.map(crate::clock::ms_of)
    };
    let (from, to) = (read("from", from), read("to", to));
    match (from, to) {
        (Some(from), Some(to)) if from < to => Ok((from, to)),
        (Some(_), Some(_)) => Err(vec![FieldError {
            field: "to".into(),
            message: "must be after from".into(),
        }]),
        _ => Err(errors),
    }
}

async fn export(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<Range>, axum::extract::rejection::QueryRejection>,
    format: Format,
) -> Result<Response, ApiError> {
    let Query(range) = query.map_err(|e| query_error("query", &e))?;
    let (from_ms, to_ms) =
        range_of(range.from.as_deref(), range.to.as_deref()).map_err(ApiError::validation)?;
    // The first page is read before the answer starts, so a ledger that is
    // away is a clean 503 rather than a broken stream.
    shared
        .ledger
        .export_page(from_ms, to_ms, None, 1)
        .await
        .map_err(super::bookings::internal)?;
    let timezone = shared.config.load().export.timezone.clone();
    let export = Export::new(format, &timezone, crate::clock::now_ms());
    let (pages, receiver) = mpsc::channel::<Vec<u8>>(2);
    let ledger = shared.ledger.clone();
    tokio::spawn(async move {
        let sent = crate::export::stream(&ledger, &export, from_ms, to_ms, pages).await;
        if let Err(e) = sent {
            // The answer has started: all that is left is to cut it short.
            tracing::error!(error = %e, "export cut short: the ledger failed");
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(
        receiver,
        |mut receiver| async {
            receiver
                .recv()
                .await
                .map(|bytes| (Ok::<_, Infallible>(Bytes::from(bytes)), receiver))
        },
    ));
    let (content_type, name) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "calls.csv"),
        Format::Jsonl => ("application/jsonl; charset=utf-8", "calls.jsonl"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response())
}
