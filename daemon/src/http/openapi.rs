//! The API's OpenAPI 3.1 document, generated from the handlers'
//! `#[utoipa::path]` annotations and the request and answer types
//! (`bookings::model`, `schemas`), served at `GET /v1/openapi.json`
//! (without the token: it describes, it holds nothing). The suite checks
//! that every route is in it, that real answers fit it, and that every
//! example in `docs/api.md` does (`daemon/tests/openapi.rs`).

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::schemas;
use crate::bookings::model;

/// The bearer token every `/v1` route but the Stripe webhook needs.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tollbridge API",
        description = "Bookings, call records, events, refunds and the accounting export of a Tollbridge node. See docs/api.md."
    ),
    security(("token" = [])),
    modifiers(&BearerToken),
    paths(
        super::healthz,
        super::readyz,
        super::metrics,
        super::status,
        super::nodes,
        super::stripe::receive,
        super::bookings::create_booking,
        super::bookings::list_bookings,
        super::bookings::show_booking,
        super::bookings::change_booking,
        super::bookings::cancel_booking,
        super::calls::list_calls,
        super::calls::show_call,
        super::calls::hang_up,
        super::recordings::get_recording,
        super::recordings::delete_recording,
        super::experts::create_expert,
        super::experts::list_experts,
        super::experts::show_expert,
        super::experts::change_expert,
        super::experts::delete_expert,
        super::refunds::create_refund,
        super::events::list_events,
        super::events::show_event,
        super::events::redeliver,
        super::exports::csv,
        super::exports::jsonl,
        serve,
    ),
    components(schemas(
        model::NewBooking,
        model::BookingPatch,
        model::Callee,
        model::Tariff,
        model::Recording,
        model::Window,
        model::StripeCard,
        model::FieldError,
        schemas::ErrorBody,
        schemas::Booking,
        schemas::BookingList,
        schemas::Call,
        schemas::CallRecording,
        super::experts::NewExpert,
        super::experts::ExpertPatch,
        super::experts::Expert,
        super::experts::ExpertDevice,
        super::experts::ExpertList,
        schemas::Live,
        schemas::CallList,
        schemas::Refund,
        schemas::HangupAnswer,
        schemas::Event,
        schemas::EventList,
        schemas::Redelivery,
        schemas::Status,
        schemas::Nodes,
        schemas::Health,
    )),
    tags(
        (name = "bookings", description = "What a call is for, and its budget"),
        (name = "calls", description = "Call records, hang-ups and refunds"),
        (name = "events", description = "The platform's webhook events and their deliveries"),
        (name = "exports", description = "The accounting export"),
        (name = "stripe", description = "Stripe's webhook"),
        (name = "operations", description = "Health, status, nodes, metrics, this document")
    )
)]
pub struct ApiDoc;

/// The document as JSON.
pub fn document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
pub(super) async fn serve() -> Json<serde_json::Value> {
    Json(document())
}
