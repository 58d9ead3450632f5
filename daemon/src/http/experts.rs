//! `/v1/experts`: experts as SIP accounts their softphones register with
//! (a booking's callee `{"expert": "name"}` rings every device an expert
//! has registered). The password is kept only as its digest hash (HA1 in
//! the registrar's realm) and never returned.
//!
//! - `POST /v1/experts` `{"name", "username", "password"}` → 201;
//! - `GET /v1/experts`, `GET /v1/experts/{name}`: with the devices
//!   registered now;
//! - `PATCH /v1/experts/{name}` `{"password"}`: a new password;
//! - `DELETE /v1/experts/{name}`: the account and its devices → 204.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::ApiError;
use super::bookings::internal;
use super::schemas::ErrorBody;
use crate::bookings::model::{FieldError, is_expert_name};
use crate::clock::{now_ms, rfc3339};
use crate::ledger::{Device, ExpertRow, ExpertWrite};
use crate::state::Shared;

/// The routes, under `/v1` behind the token check.
pub fn routes() -> axum::Router<Arc<Shared>> {
    axum::Router::new()
        .route("/experts", get(list_experts).post(create_expert))
        .route(
            "/experts/{name}",
            get(show_expert).patch(change_expert).delete(delete_expert),
        )
}

/// The body of `POST /v1/experts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewExpert {
    /// What bookings call it: 1–64 letters, digits, `.`, `-`, `_`.
    pub name: String,
    /// The SIP user name its devices register as (and authenticate with):
    /// 1–64 letters, digits, `.`, `-`, `_`, `+`.
    pub username: String,
    /// 12–128 printable characters; kept only as its digest hash.
    pub password: String,
}

/// The body of `PATCH /v1/experts/{name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpertPatch {
    /// The new password (12–128 printable characters).
    pub password: String,
}

/// An expert, as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct Expert {
    /// Its name.
    pub name: String,
    /// Its SIP user name.
    pub username: String,
    /// The realm its password is hashed in.
    pub realm: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339: when its password last changed.
    pub updated_at: String,
    /// Its devices registered now.
    pub devices: Vec<ExpertDevice>,
}

/// One registered device.
#[derive(Serialize, ToSchema)]
pub struct ExpertDevice {
    /// Its Contact URI.
    pub contact: String,
    /// Where its REGISTER came from (`ip:port`): calls go there.
    pub source: String,
    /// `udp` or `tcp`.
    pub transport: String,
    /// The node it registered through.
    pub node: String,
    /// Its `User-Agent`.
    pub user_agent: Option<String>,
    /// RFC 3339.
    pub registered_at: String,
    /// RFC 3339: when the binding lapses unless refreshed.
    pub expires_at: String,
}

/// `{"experts": [...]}`.
#[derive(Serialize, ToSchema)]
pub struct ExpertList {
    /// By name.
    pub experts: Vec<Expert>,
}

fn view(expert: &ExpertRow, devices: &[Device]) -> Expert {
    Expert {
        name: expert.name.clone(),
        username: expert.username.clone(),
        realm: expert.realm.clone(),
        created_at: rfc3339(expert.created_ms),
        updated_at: rfc3339(expert.updated_ms),
        devices: devices
            .iter()
            .map(|d| ExpertDevice {
                contact: d.contact.clone(),
                source: d.received.clone(),
                transport: d.transport.clone(),
                node: d.node.clone(),
                user_agent: d.user_agent.clone(),
                registered_at: rfc3339(d.registered_ms),
                expires_at: rfc3339(d.expires_ms),
            })
            .collect(),
    }
}

fn is_username(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'+'))
}

fn password_mistake(password: &str) -> Option<FieldError> {
    let length = password.chars().count();
    let printable = password.chars().all(|c| !c.is_control());
    (!(12..=128).contains(&length) || !printable).then(|| FieldError {
        field: "password".into(),
        message: "must be 12 to 128 printable characters".into(),
    })
}

/// Creates an expert's account.
#[utoipa::path(post, path = "/v1/experts", tag = "experts", request_body = NewExpert,
    responses(
        (status = 201, description = "created", body = Expert),
        (status = 409, description = "`expert_exists`: the name or the user name is taken", body = ErrorBody),
        (status = 422, description = "`validation_failed`", body = ErrorBody),
        (status = 401, description = "no or wrong bearer token", body = ErrorBody)))]
pub(super) async fn create_expert(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<NewExpert>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body.map_err(ApiError::from_json_rejection)?;
    let mut errors = Vec::new();
    if !is_expert_name(&body.name) {
        errors.push(FieldError {
            field: "name".into(),
            message: "must be 1 to 64 letters, digits, '.', '-' or '_'".into(),
        });
    }
    if !is_username(&body.username) {
        errors.push(FieldError {
            field: "username".into(),
            message: "must be 1 to 64 letters, digits, '.', '-', '_' or '+'".into(),
        });
    }
    errors.extend(password_mistake(&body.password));
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let realm = crate::registrar::realm_of(&shared.config.load());
    let ha1 = tollbridge_sip::digest::ha1(&body.username, &realm, &body.password);
    let created = shared
        .ledger
        .create_expert(body.name, body.username, realm, ha1, now_ms())
        .await;
    match created {
        Ok(expert) => Ok((StatusCode::CREATED, Json(json!(view(&expert, &[]))))),
        Err(ExpertWrite::Taken(field)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "expert_exists",
            format!("an expert with this {field} exists"),
        )),
        Err(ExpertWrite::Ledger(e)) => Err(internal(e)),
    }
}

/// Every expert, with its devices registered now.
#[utoipa::path(get, path = "/v1/experts", tag = "experts",
    responses(
        (status = 200, description = "by name", body = ExpertList),
        (status = 401, description = "no or wrong bearer token", body = ErrorBody)))]
pub(super) async fn list_experts(
    State(shared): State<Arc<Shared>>,
) -> Result<Json<Value>, ApiError> {
    let experts = shared.ledger.experts(now_ms()).await.map_err(internal)?;
    let list = ExpertList {
        experts: experts.iter().map(|(e, d)| view(e, d)).collect(),
    };
    Ok(Json(json!(list)))
}

/// One expert, with its devices registered now.
#[utoipa::path(get, path = "/v1/experts/{name}", tag = "experts",
    params(("name" = String, Path, description = "the expert")),
    responses(
        (status = 200, description = "the expert", body = Expert),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 401, description = "no or wrong bearer token", body = ErrorBody)))]
pub(super) async fn show_expert(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let found = shared
        .ledger
        .expert(name, now_ms())
        .await
        .map_err(internal)?;
    found
        .map(|(expert, devices)| Json(json!(view(&expert, &devices))))
        .ok_or_else(ApiError::not_found)
}

/// Sets an expert's password; its devices register again with it when
/// their bindings next refresh.
#[utoipa::path(patch, path = "/v1/experts/{name}", tag = "experts", request_body = ExpertPatch,
    params(("name" = String, Path, description = "the expert")),
    responses(
        (status = 200, description = "changed", body = Expert),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`validation_failed`", body = ErrorBody),
        (status = 401, description = "no or wrong bearer token", body = ErrorBody)))]
pub(super) async fn change_expert(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Result<Json<ExpertPatch>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body.map_err(ApiError::from_json_rejection)?;
    if let Some(mistake) = password_mistake(&body.password) {
        return Err(ApiError::validation(vec![mistake]));
    }
    let ledger = &shared.ledger;
    let Some((expert, _)) = ledger
        .expert(name.clone(), now_ms())
        .await
        .map_err(internal)?
    else {
        return Err(ApiError::not_found());
    };
    let realm = crate::registrar::realm_of(&shared.config.load());
    let ha1 = tollbridge_sip::digest::ha1(&expert.username, &realm, &body.password);
    let changed = ledger
        .set_expert_password(name.clone(), realm, ha1, now_ms())
        .await
        .map_err(internal)?;
    if !changed {
        return Err(ApiError::not_found());
    }
    show_expert(State(shared), Path(name)).await
}

/// Deletes an expert's account and its devices (bookings that name it
/// find no device to ring).
#[utoipa::path(delete, path = "/v1/experts/{name}", tag = "experts",
    params(("name" = String, Path, description = "the expert")),
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 401, description = "no or wrong bearer token", body = ErrorBody)))]
pub(super) async fn delete_expert(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if shared.ledger.delete_expert(name).await.map_err(internal)? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found())
    }
}
