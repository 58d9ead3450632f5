//! The OpenAPI document (`GET /v1/openapi.json`) against the code and the
//! docs: every route the router has is in it with its methods (and no
//! other method answers), real answers of the API fit its schemas, and
//! every JSON example in `docs/api.md` fits the schema its comment names.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{Value, json};
use tollbridge_config::{Config, Secret};
use tollbridge_daemon::state::Shared;

#[macro_use]
mod support;
use support::Backend;
use support::fixtures::*;

const TOKEN: &str = "openapi-test-token-0123456";

async fn shared(backend: Backend) -> (Arc<Shared>, support::TestLedger) {
    let mut config = Config::defaults(&HashMap::new());
    config.http.api_token = Some(Secret::inline(TOKEN));
    let ledger = support::open(backend).await;
    let shared = Shared::new(config, ledger.ledger.clone(), None, None);
    shared.mark_listeners_bound();
    (shared, ledger)
}

async fn send(
    shared: &Arc<Shared>,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let body = body.map(|b| b.to_string());
    let (status, bytes) = support::http::request(shared, method, uri, Some(TOKEN), body).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The document, as served.
async fn document(shared: &Arc<Shared>) -> Value {
    let (status, doc) = send(shared, "GET", "/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    doc
}

/// Checks `value` against component `name` of `doc`; the errors.
fn errors_against(doc: &Value, name: &str, value: &Value) -> Vec<String> {
    assert!(
        doc["components"]["schemas"][name].is_object(),
        "no schema {name} in the document"
    );
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": doc["components"],
    });
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

fn assert_fits(doc: &Value, name: &str, value: &Value) {
    let errors = errors_against(doc, name, value);
    assert!(errors.is_empty(), "{name}: {errors:?}\n{value:#}");
}

/// The paths the router's source declares, as the document writes them.
fn routes_in_source() -> BTreeSet<String> {
    let sources = [
        include_str!("../src/http/mod.rs"),
        include_str!("../src/http/bookings.rs"),
        include_str!("../src/http/calls.rs"),
        include_str!("../src/http/events.rs"),
        include_str!("../src/http/experts.rs"),
        include_str!("../src/http/exports.rs"),
        include_str!("../src/http/recordings.rs"),
        include_str!("../src/http/refunds.rs"),
    ];
    let mut paths = BTreeSet::new();
    for source in sources {
        let mut rest = source;
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            let quoted = rest.trim_start();
            let Some(path) = quoted.strip_prefix('"').and_then(|q| q.split('"').next()) else {
                continue;
            };
            let root =
                ["/healthz", "/readyz", "/metrics"].contains(&path) || path.starts_with("/v1/");
            paths.insert(if root {
                path.to_owned()
            } else {
                format!("/v1{path}")
            });
        }
    }
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_in_the_document_with_exactly_its_methods() {
    let (shared, _ledger) = shared(Backend::Sqlite).await;
    let doc = document(&shared).await;
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let declared = routes_in_source();
    assert!(declared.len() >= 18, "{declared:?}");
    assert_eq!(declared, documented, "routes in the code vs the document");
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{id}", "x_0")
            .replace("/bookings/x_0", "/bookings/bk_none")
            .replace("/calls/x_0", "/calls/call_none")
            .replace("/events/x_0", "/events/evt_none");
        for method in ["GET", "POST", "PATCH", "DELETE", "PUT"] {
            let documented = item.get(method.to_lowercase()).is_some();
            let body = (method != "GET" && method != "DELETE").then(|| json!({}));
            let (status, answer) = send(&shared, method, &concrete, body).await;
            if documented {
                assert_ne!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {concrete}: {answer}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {concrete} is not documented: {answer}"
                );
            }
        }
    }
}

async fn real_answers_fit_the_document(backend: Backend) {
    let (shared, ledger) = shared(backend).await;
    let doc = document(&shared).await;
    let (_, health) = send(&shared, "GET", "/healthz", None).await;
    assert_fits(&doc, "Health", &health);
    let (_, status) = send(&shared, "GET", "/v1/status", None).await;
    assert_fits(&doc, "Status", &status);
    ledger.heartbeat(T0, false).await.unwrap();
    let (_, nodes) = send(&shared, "GET", "/v1/nodes", None).await;
    assert_fits(&doc, "Nodes", &nodes);

    let new = json!({
        "called": "+81312345678", "callers": ["+819012345678"],
        "callee": {"uri": "sip:expert@192.0.2.10"},
        "tariff": {"currency": "jpy", "price_per_minute": 300},
        "cap_seconds": 600,
        "window": {"start": "2030-01-01T10:00:00+09:00", "end": "2030-01-01T11:00:00+09:00"}
    });
    assert_fits(&doc, "NewBooking", &new);
    let (status, booking) = send(&shared, "POST", "/v1/bookings", Some(new)).await;
    assert_eq!(status, StatusCode::CREATED, "{booking}");
    assert_fits(&doc, "Booking", &booking);
    let id = booking["id"].as_str().unwrap().to_owned();
    let (_, changed) = send(
        &shared,
        "PATCH",
        &format!("/v1/bookings/{id}"),
        Some(json!({"cap_seconds": 900})),
    )
    .await;
    assert_fits(&doc, "Booking", &changed);
    let (_, list) = send(&shared, "GET", "/v1/bookings?limit=1", None).await;
    assert_fits(&doc, "BookingList", &list);
    let (_, invalid) = send(
        &shared,
        "POST",
        "/v1/bookings",
        Some(json!({"called": "x"})),
    )
    .await;
    assert_fits(&doc, "ErrorBody", &invalid);
    let (_, missing) = send(&shared, "GET", "/v1/bookings/bk_none", None).await;
    assert_fits(&doc, "ErrorBody", &missing);

    // A call that talked and ended, with its events.
    talking_call(&ledger, "call_1", "bk_1", "+81399999999").await;
    ledger
        .close_call("call_1".into(), talked(30_000), T0 + 31_000)
        .await
        .unwrap();
    let (_, call) = send(&shared, "GET", "/v1/calls/call_1", None).await;
    assert_fits(&doc, "Call", &call);
    let (_, calls) = send(&shared, "GET", "/v1/calls?booking=bk_1", None).await;
    assert_fits(&doc, "CallList", &calls);
    let (_, refused) = send(&shared, "POST", "/v1/calls/call_1/refunds", Some(json!({}))).await;
    assert_eq!(refused["error"]["code"], "call_not_captured", "{refused}");
    assert_fits(&doc, "ErrorBody", &refused);
    let (_, events) = send(&shared, "GET", "/v1/events?booking=bk_1", None).await;
    assert!(!events["events"].as_array().unwrap().is_empty(), "{events}");
    assert_fits(&doc, "EventList", &events);
    let event = events["events"][0]["id"].as_str().unwrap().to_owned();
    let (_, one) = send(&shared, "GET", &format!("/v1/events/{event}"), None).await;
    assert_fits(&doc, "Event", &one);
    let (_, due) = send(
        &shared,
        "POST",
        &format!("/v1/events/{event}/redeliver"),
        None,
    )
    .await;
    assert_fits(&doc, "Redelivery", &due);
}

/// Every ```json block of docs/api.md, with the schema its comment names.
fn examples() -> Vec<(String, String)> {
    let text = include_str!("../../docs/api.md");
    let mut found = Vec::new();
    let mut previous = "";
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "```json" {
            let name = previous
                .trim()
                .strip_prefix("<!-- schema: ")
                .and_then(|rest| rest.strip_suffix(" -->"))
                .unwrap_or_else(|| panic!("a ```json block in api.md without a <!-- schema: Name --> line before it, after {previous:?}"))
                .to_owned();
            let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            found.push((name, block.join("\n")));
        }
        if !line.trim().is_empty() {
            previous = line;
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_in_the_api_docs_fits_the_document() {
    let (shared, _ledger) = shared(Backend::Sqlite).await;
    let doc = document(&shared).await;
    let examples = examples();
    assert!(examples.len() >= 10, "{}", examples.len());
    for (name, text) in &examples {
        let value: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("an api.md example for {name} is not JSON: {e}\n{text}"));
        assert_fits(&doc, name, &value);
    }
    // The check can fail: a wrong example is caught.
    let (name, text) = &examples[0];
    let mut broken: Value = serde_json::from_str(text).unwrap();
    broken["error"]["code"] = json!(42);
    assert!(!errors_against(&doc, name, &broken).is_empty());
}

on_both_backends!(real_answers_fit_the_document,);
