//! The bookings API through the real router and a ledger on either
//! backend, with the example config and a token; one booking's body.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{Value, json};
use tollbridge_config::{Config, Secret};
use tollbridge_daemon::state::Shared;

use super::{Backend, TestLedger};

pub const TOKEN: &str = "bookings-test-token-01234";

/// The API over a ledger of its own.
pub struct Api {
    pub shared: Arc<Shared>,
    _ledger: TestLedger,
}

impl Api {
    pub async fn new(backend: Backend) -> Api {
        let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config/tollbridge.example.toml");
        let mut config = Config::load_with(&example, &HashMap::new()).unwrap();
        config.http.api_token = Some(Secret::inline(TOKEN));
        let ledger = super::open(backend).await;
        let shared = Shared::new(config, ledger.ledger.clone(), None, None);
        shared.mark_listeners_bound();
        Api {
            shared,
            _ledger: ledger,
        }
    }

    pub async fn send(&self, method: &str, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
        let body = body.map(str::to_owned);
        let (status, bytes) =
            super::http::request(&self.shared, method, uri, Some(TOKEN), body).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn create(&self, body: Value) -> (StatusCode, Value) {
        self.send("POST", "/v1/bookings", Some(&body.to_string()))
            .await
    }
}

/// A valid booking body (PIN, one caller, a trunk callee, a 2030 window).
pub fn booking() -> Value {
    json!({
        "called": "+81312345678",
        "callers": ["+819012345678"],
        "pin": "4321",
        "callee": {"number": "+815011112222", "trunk": "twilio"},
        "tariff": {"currency": "jpy", "price_per_minute": 300, "increment_seconds": 6},
        "cap_seconds": 1800,
        "window": {"start": "2030-01-01T10:00:00+09:00", "end": "2030-01-01T11:00:00+09:00"}
    })
}
