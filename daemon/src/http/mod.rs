//! The HTTP surface: health for supervisors, metrics for Prometheus, and the
//! `/v1` API for the operator's booking application.
//!
//! - `GET /healthz`: the process answers (liveness).
//! - `GET /readyz`: 200 only when the database answers, every listener is
//!   bound and we are not draining; otherwise 503 listing why.
//! - `GET /metrics`: OpenMetrics text.
//! - `GET /v1/nodes`: the nodes sharing the ledger.
//! - `/v1/...`: behind `Authorization: Bearer <http.api_token>`; errors are
//!   JSON with a stable code ([`ApiError`]).

mod auth;
mod bookings;
mod calls;
mod error;
mod events;
mod experts;
mod exports;
pub mod openapi;
mod recordings;
mod refunds;
pub use exports::range_of as export_range;
pub mod schemas;
mod stripe;
pub mod tls;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router, middleware};
use serde_json::json;

pub use error::ApiError;

use crate::state::Shared;

/// The largest request body the API takes (a booking is about 1 KiB).
pub const BODY_LIMIT: usize = 64 * 1024;

/// The largest Stripe webhook delivery taken (events with expanded
/// objects run to tens of KiB).
const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

/// How long readiness waits for the database before calling it down.
const DATABASE_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The whole HTTP application.
pub fn router(shared: Arc<Shared>) -> Router {
    let authenticated = Router::new()
        .route("/status", get(status))
        .route("/nodes", get(nodes))
        .merge(bookings::routes())
        .merge(calls::routes())
        .merge(events::routes())
        .merge(experts::routes())
        .merge(exports::routes())
        .merge(recordings::routes())
        .merge(refunds::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            auth::require_token,
        ));
    // Stripe signs its deliveries; it cannot send our bearer token.
    let v1 = Router::new()
        .route(
            "/stripe/webhook",
            axum::routing::post(stripe::receive)
                .layer(axum::extract::DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT)),
        )
        .merge(authenticated);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi::serve))
        .nest("/v1", v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "alive", body = schemas::Health)))]
pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: listeners bound, ledger reachable, not draining.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses(
        (status = 200, description = "ready", body = schemas::Health),
        (status = 503, description = "not ready, with the reasons", body = schemas::Health)))]
pub(super) async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let mut reasons = Vec::new();
    if shared.is_draining() {
        reasons.push("draining".to_owned());
    }
    if !shared.listeners_bound() {
        reasons.push("listeners not bound".to_owned());
    }
    if !shared.ledger_up() {
        reasons.push("ledger unreachable: new calls are refused".to_owned());
    }
    match tokio::time::timeout(DATABASE_PROBE_TIMEOUT, shared.ledger.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => reasons.push(format!("database: {e}")),
        Err(_) => reasons.push("database: no answer within 1s".to_owned()),
    }
    if reasons.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ready"}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not-ready", "reasons": reasons})),
        )
            .into_response()
    }
}

/// Prometheus metrics (operations.md lists them).
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String)))]
pub(super) async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    // A scrape still answers when the database does not; the settlement
    // gauges then read zero and readyz says why.
    let settlements: Vec<(String, u64)> = shared
        .ledger
        .settlement_counts()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(state, n)| (state.as_str().to_owned(), n))
        .collect();
    let webhook_pending = shared.ledger.pending_deliveries().await.unwrap_or(0);
    let (refunds, disputes) = shared
        .ledger
        .refund_and_dispute_counts()
        .await
        .unwrap_or_default();
    let sip_turned_away = shared.sip.as_ref().map(|sip| {
        let stats = sip.gate_stats();
        let read = |counter: &std::sync::atomic::AtomicU64| {
            counter.load(std::sync::atomic::Ordering::Relaxed)
        };
        [
            ("unknown-source", read(&stats.unknown_source)),
            ("malformed", read(&stats.malformed)),
            ("rate-limited", read(&stats.rate_limited)),
            ("connection-limit", read(&stats.connection_limit)),
            ("unknown-method", read(&stats.unknown_method)),
        ]
    });
    let media_calls_per_thread = shared
        .relay
        .as_ref()
        .map(|relay| relay.calls_per_thread())
        .unwrap_or_default();
    let text = shared.metrics.render(&crate::metrics::Scrape {
        uptime_seconds: shared.started.elapsed().as_secs_f64(),
        active_calls: shared.active_calls(),
        settlements: &settlements,
        refunds: &refunds,
        disputes: &disputes,
        sip_turned_away: &sip_turned_away.unwrap_or_default(),
        sip_dialogs: shared.sip.as_ref().map_or(0, |sip| sip.dialogs()),
        media_port_pairs_in_use: shared
            .relay
            .as_ref()
            .map_or(0, |relay| relay.pairs_in_use()),
        media_calls_per_thread: &media_calls_per_thread,
        media_kernel_routes: shared
            .relay
            .as_ref()
            .map_or(0, |relay| relay.kernel_routes()),
        ledger_up: shared.ledger_up(),
        ledger_writes_waiting: shared.journal.waiting(),
        ledger_writes_dropped: shared.journal.dropped(),
        webhook_pending,
        recording_frames_dropped: shared
            .recorder
            .get()
            .map_or(0, |recorder| recorder.dropped_frames()),
    });
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `GET /v1/status`: what this daemon is and how it handles money.
#[utoipa::path(get, path = "/v1/status", tag = "operations",
    responses((status = 200, description = "this node", body = schemas::Status), (status = 401, description = "no or wrong bearer token", body = schemas::ErrorBody)))]
pub(super) async fn status(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let config = shared.config.load();
    let mode = config.stripe.mode();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "stripe": {
            "mode": mode.as_str(),
            "charges": mode != tollbridge_config::StripeMode::LedgerOnly,
        },
        "node": config.node.name,
        "draining": shared.is_draining(),
        "ledger_up": shared.ledger_up(),
        "ledger_writes_waiting": shared.journal.waiting(),
        "active_calls": shared.active_calls(),
        "uptime_seconds": shared.started.elapsed().as_secs(),
    }))
}

/// The nodes sharing this node's ledger, and whether each is heard from.
#[utoipa::path(get, path = "/v1/nodes", tag = "operations",
    responses((status = 200, description = "every node", body = schemas::Nodes), (status = 401, description = "no or wrong bearer token", body = schemas::ErrorBody)))]
pub(super) async fn nodes(
    State(shared): State<Arc<Shared>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let timeout = shared.config.load().cluster.node_timeout;
    let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    let nodes = shared.ledger.nodes().await.map_err(bookings::internal)?;
    Ok(Json(json!({
        "node_timeout_ms": timeout_ms,
        "nodes": nodes.iter().map(|n| json!({
            "name": n.name,
            "version": n.version,
            "started_at": crate::clock::rfc3339(n.started_ms),
            "last_seen_ms_ago": n.silent_ms,
            "state": if n.silent_ms > timeout_ms { "silent" } else if n.draining { "draining" } else { "up" },
            "open_calls": n.open_calls,
        })).collect::<Vec<_>>(),
    })))
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tollbridge_config::{Config, Secret};
    use tower::ServiceExt;

    const TOKEN: &str = "test-token-0123456789";

    struct Harness {
        shared: Arc<Shared>,
        _dir: tempfile::TempDir,
    }

    fn harness(token: Option<&str>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::defaults(&std::collections::HashMap::new());
        config.http.api_token = token.map(Secret::inline);
        let store = crate::ledger::Ledger::open_sqlite(&dir.path().join("t.db")).unwrap();
        let shared = Shared::new(config, store, None, None);
        shared.mark_listeners_bound();
        Harness { shared, _dir: dir }
    }

    async fn send(
        shared: &Arc<Shared>,
        method: &str,
        uri: &str,
        token: Option<&str>,
    ) -> (StatusCode, String) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = router(shared.clone())
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    fn error_code(body: &str) -> String {
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        value["error"]["code"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn health_and_readiness() {
        let h = harness(None);
        assert_eq!(
            send(&h.shared, "GET", "/healthz", None).await.0,
            StatusCode::OK
        );
        let (status, body) = send(&h.shared, "GET", "/readyz", None).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, r#"{"status":"ready"}"#)
        );
    }

    #[tokio::test]
    async fn readyz_turns_503_while_draining() {
        let h = harness(None);
        let call = h.shared.call_started();
        h.shared.start_draining();
        let (status, body) = send(&h.shared, "GET", "/readyz", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("draining"), "{body}");
        // Health is about the process, not readiness: still 200.
        assert_eq!(
            send(&h.shared, "GET", "/healthz", None).await.0,
            StatusCode::OK
        );
        drop(call);
        assert_eq!(h.shared.active_calls(), 0);
    }

    #[tokio::test]
    async fn readyz_is_503_before_listeners_bind_and_after_the_database_closes() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::ledger::Ledger::open_sqlite(&dir.path().join("t.db")).unwrap();
        let shared = Shared::new(
            Config::defaults(&std::collections::HashMap::new()),
            store.clone(),
            None,
            None,
        );
        let (status, body) = send(&shared, "GET", "/readyz", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("listeners not bound"), "{body}");
        shared.mark_listeners_bound();
        store.close().await;
        let (status, body) = send(&shared, "GET", "/readyz", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("database"), "{body}");
    }

    #[tokio::test]
    async fn the_api_needs_the_bearer_token() {
        let h = harness(Some(TOKEN));
        let (status, body) = send(&h.shared, "GET", "/v1/status", None).await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (StatusCode::UNAUTHORIZED, "unauthorized")
        );
        let (status, body) = send(
            &h.shared,
            "GET",
            "/v1/status",
            Some("wrong-token-0123456789"),
        )
        .await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (StatusCode::UNAUTHORIZED, "unauthorized")
        );
        // Unknown paths under /v1 do not reveal themselves without a token.
        let (status, _) = send(&h.shared, "GET", "/v1/nothing-here", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        let (status, body) = send(&h.shared, "GET", "/v1/status", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::OK);
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["stripe"]["mode"], "ledger-only");
        assert_eq!(value["stripe"]["charges"], false);
    }

    #[tokio::test]
    async fn without_a_configured_token_the_api_is_disabled() {
        let h = harness(None);
        let (status, body) = send(&h.shared, "GET", "/v1/status", Some(TOKEN)).await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (StatusCode::UNAUTHORIZED, "api_disabled")
        );
    }

    #[tokio::test]
    async fn unknown_paths_and_methods_get_json_errors() {
        let h = harness(Some(TOKEN));
        let (status, body) = send(&h.shared, "GET", "/nope", None).await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (StatusCode::NOT_FOUND, "not_found")
        );
        let (status, body) = send(&h.shared, "GET", "/v1/nope", Some(TOKEN)).await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (StatusCode::NOT_FOUND, "not_found")
        );
        let (status, body) = send(&h.shared, "POST", "/healthz", None).await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        );
    }

    #[tokio::test]
    async fn metrics_are_exported() {
        let h = harness(None);
        let _call = h.shared.call_started();
        let (status, body) = send(&h.shared, "GET", "/metrics", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("tollbridge_active_calls 1"), "{body}");
        assert!(
            body.contains("tollbridge_settlements{state=\"pending\"} 0"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn nodes_lists_this_node_behind_the_token() {
        let h = harness(Some(TOKEN));
        let (status, body) = send(&h.shared, "GET", "/v1/nodes", None).await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (StatusCode::UNAUTHORIZED, "unauthorized")
        );
        let (status, body) = send(&h.shared, "POST", "/v1/nodes", Some(TOKEN)).await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        );

        let (status, body) = send(&h.shared, "GET", "/v1/nodes", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["node_timeout_ms"], 10_000);
        assert_eq!(value["nodes"].as_array().map(Vec::len), Some(0), "{body}");

        h.shared.ledger.heartbeat(1_000, false).await.unwrap();
        let (_, body) = send(&h.shared, "GET", "/v1/nodes", Some(TOKEN)).await;
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        let node = &value["nodes"][0];
        assert_eq!(node["name"], h.shared.ledger.node(), "{body}");
        assert_eq!(node["state"], "up", "{body}");
        assert_eq!(node["open_calls"], 0, "{body}");
    }

    #[tokio::test]
    async fn an_unreachable_ledger_is_a_503_with_a_stable_code() {
        let error = bookings::internal(crate::ledger::LedgerError::Unavailable(
            "connection refused".to_owned(),
        ));
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert_eq!(error_code(&body), "ledger_unavailable");
        assert!(!body.contains("connection refused"), "{body}");

        let error = bookings::internal(crate::ledger::LedgerError::Query("syntax".to_owned()));
        assert_eq!(
            error.into_response().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
