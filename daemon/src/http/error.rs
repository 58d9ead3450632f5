//! The API's error body: `{"error": {"code": "...", "message": "..."}}`.
//!
//! `code` is stable and meant for programs; `message` is for people and may
//! change wording. Validation failures add `fields`: `[{"field", "message"}]`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An API error: HTTP status, stable code, human message, and for
/// validation failures the list of fields.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    fields: Option<serde_json::Value>,
}

impl ApiError {
    /// An error with the given status, stable code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            fields: None,
        }
    }

    /// 422 `validation_failed`, listing every field and why.
    pub fn validation(fields: Vec<crate::bookings::model::FieldError>) -> Self {
        let mut error = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            format!("{} field(s) are invalid", fields.len()),
        );
        error.fields = serde_json::to_value(fields).ok();
        error
    }

    /// 401: no or wrong bearer token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404: nothing at this path.
    pub fn not_found() -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    /// 405: the path exists, the method does not.
    pub fn method_not_allowed() -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this method is not allowed on this resource",
        )
    }

    /// The stable code, for logs and tests.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The answer to a JSON body that could not be taken: 413 over the
    /// size limit, 415 without `Content-Type: application/json`, 422 for a
    /// value of the wrong type (naming its field in `field`), 400 for a
    /// body that is not JSON at all.
    pub fn from_json_rejection(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is over the limit of {} bytes", super::BODY_LIMIT),
            );
        }
        match rejection {
            JsonRejection::JsonDataError(e) => {
                let field = field_of(&e).unwrap_or_default();
                ApiError::validation(vec![crate::bookings::model::FieldError {
                    field,
                    message: e.body_text(),
                }])
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            ),
            other => ApiError::new(StatusCode::BAD_REQUEST, "bad_json", other.body_text()),
        }
    }
}

/// The dotted path of the value a JSON body failed on (`tariff.currency`,
/// `callers[1]`), read from the error chain axum builds with
/// `serde_path_to_error`; `None` for the body as a whole.
fn field_of(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<serde_path_to_error::Error<serde_json::Error>>() {
            let path = found.path().to_string();
            return (path != ".").then_some(path);
        }
        current = error.source();
    }
    None
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(fields) = self.fields {
            error["fields"] = fields;
        }
        let body = Json(json!({ "error": error }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tollbridge\""),
            );
        }
        response
    }
}
