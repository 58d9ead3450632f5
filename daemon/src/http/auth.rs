//! Bearer-token check for `/v1`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use crate::state::Shared;

/// Lets a request through only with `Authorization: Bearer <http.api_token>`.
/// The token is read from the config in force, so a reload takes effect on
/// the next request.
pub async fn require_token(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let config = shared.config.load();
    let Some(expected) = config.http.api_token.as_ref() else {
        return Err(ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "api_disabled",
            "the API is disabled: no http.api_token is configured",
        ));
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token);
    match presented {
        None => Err(ApiError::unauthorized(
            "missing Authorization: Bearer <token> header",
        )),
        Some(token) if constant_time_eq(token.as_bytes(), expected.expose().as_bytes()) => {
            Ok(next.run(request).await)
        }
        Some(_) => Err(ApiError::unauthorized("the bearer token is not valid")),
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is
/// matched in any case (RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// Compares two byte strings in time that depends only on their lengths, so
/// the token cannot be guessed byte by byte from response times. Written
/// here because it is four lines and the only constant-time need we have.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::{bearer_token, constant_time_eq};

    #[test]
    fn the_scheme_is_read_in_any_case() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "  Bearer   abc  "] {
            assert_eq!(bearer_token(value), Some("abc"), "{value:?}");
        }
        for value in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", ""] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }

    #[test]
    fn compares_whole_strings() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }
}
