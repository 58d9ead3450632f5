//! The bookings and calls API through the real router and database.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tollbridge_config::{Config, Secret};
use tollbridge_daemon::args;
use tollbridge_daemon::state::Shared;
use tower::ServiceExt;

#[macro_use]
mod support;
use support::Backend;

const TOKEN: &str = "bookings-test-token-01234";

struct Api {
    shared: Arc<Shared>,
    _ledger: support::TestLedger,
}

impl Api {
    async fn new(backend: Backend) -> Api {
        let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config/tollbridge.example.toml");
        let mut config = Config::load_with(&example, &HashMap::new()).unwrap();
        config.http.api_token = Some(Secret::inline(TOKEN));
        let ledger = support::open(backend).await;
        let shared = Shared::new(config, ledger.ledger.clone(), None, None);
        shared.mark_listeners_bound();
        Api {
            shared,
            _ledger: ledger,
        }
    }

    async fn send(&self, method: &str, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
        let body = body.map(str::to_owned);
        let (status, bytes) =
            support::http::request(&self.shared, method, uri, Some(TOKEN), body).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn create(&self, body: Value) -> (StatusCode, Value) {
        self.send("POST", "/v1/bookings", Some(&body.to_string()))
            .await
    }
}

fn booking() -> Value {
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

async fn a_booking_is_created_read_listed_and_canceled(backend: Backend) {
    let api = Api::new(backend).await;
    let (status, created) = api.create(booking()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("bk_"), "{id}");
    assert_eq!(created["state"], "active");
    assert_eq!(created["has_pin"], true);
    assert!(created.get("pin").is_none(), "the PIN is never returned");
    assert_eq!(
        created["tariff"],
        json!({"currency": "jpy", "price_per_minute": 300, "increment_seconds": 6, "minimum_seconds": 0, "under_minimum": "cancel"})
    );
    assert_eq!(created["window"]["start"], "2030-01-01T01:00:00Z");

    let (status, shown) = api.send("GET", &format!("/v1/bookings/{id}"), None).await;
    assert_eq!((status, &shown), (StatusCode::OK, &created));

    let mut other = booking();
    other["called"] = json!("+81399999999");
    assert_eq!(api.create(other).await.0, StatusCode::CREATED);
    let (_, listed) = api
        .send("GET", "/v1/bookings?called=%2B81312345678", None)
        .await;
    let ids: Vec<&str> = listed["bookings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()]);

    let (status, canceled) = api
        .send("DELETE", &format!("/v1/bookings/{id}"), None)
        .await;
    assert_eq!(
        (status, canceled["state"].as_str()),
        (StatusCode::OK, Some("canceled"))
    );
    // Canceling again changes nothing and says so.
    let (status, again) = api
        .send("DELETE", &format!("/v1/bookings/{id}"), None)
        .await;
    assert_eq!(
        (status, again["state"].as_str()),
        (StatusCode::OK, Some("canceled"))
    );
    let (_, active) = api.send("GET", "/v1/bookings?state=active", None).await;
    assert_eq!(active["bookings"].as_array().unwrap().len(), 1);
}

async fn invalid_bookings_get_422_listing_each_field_and_store_nothing(backend: Backend) {
    let api = Api::new(backend).await;
    let mut bad = booking();
    bad["called"] = json!("03-1234-5678");
    bad["tariff"]["currency"] = json!("yen");
    bad["cap_seconds"] = json!(0);
    let (status, body) = api.create(bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "validation_failed");
    let fields: Vec<&str> = body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["called", "tariff.currency", "cap_seconds"]);
    let (_, listed) = api.send("GET", "/v1/bookings", None).await;
    assert_eq!(listed["bookings"], json!([]));
}

async fn malformed_requests_get_json_errors_with_stable_codes(backend: Backend) {
    let api = Api::new(backend).await;
    let (status, body) = api.send("POST", "/v1/bookings", Some("{not json")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_json"))
    );

    let mut unknown = booking();
    unknown["colour"] = json!("blue");
    let (status, body) = api.create(unknown).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_failed"))
    );
    assert!(
        body["error"]["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{body}"
    );

    let request = Request::builder()
        .method("POST")
        .uri("/v1/bookings")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::from(booking().to_string()))
        .unwrap();
    let response = tollbridge_daemon::http::router(api.shared.clone())
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let (status, body) = api.send("GET", "/v1/bookings?state=lost", None).await;
    assert_eq!(
        (status, body["error"]["fields"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("state"))
    );
    let (status, _) = api.send("GET", "/v1/bookings?limit=0", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body) = api.send("GET", "/v1/bookings/bk_missing", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

async fn a_given_id_is_kept_and_cannot_be_reused(backend: Backend) {
    let api = Api::new(backend).await;
    let mut first = booking();
    first["id"] = json!("bk_order-1042");
    let (status, created) = api.create(first.clone()).await;
    assert_eq!(
        (status, created["id"].as_str()),
        (StatusCode::CREATED, Some("bk_order-1042"))
    );
    let (status, body) = api.create(first).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("booking_exists"))
    );
}

async fn a_booking_in_a_call_cannot_be_canceled(backend: Backend) {
    let api = Api::new(backend).await;
    let (_, created) = api.create(booking()).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let in_call = id.clone();
    api.shared
        .ledger
        .run(move |db| {
            db.execute(
                "UPDATE bookings SET state = 'in-call' WHERE id = ?1",
                args![in_call],
            )?;
            Ok(())
        })
        .await
        .unwrap();
    let (status, body) = api
        .send("DELETE", &format!("/v1/bookings/{id}"), None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("booking_in_call"))
    );
}

async fn call_records_are_shown_with_their_ordered_events(backend: Backend) {
    let api = Api::new(backend).await;
    let (_, created) = api.create(booking()).await;
    let booking_id = created["id"].as_str().unwrap().to_owned();
    let for_call = booking_id.clone();
    api.shared
        .ledger
        .run(move |db| {
            db.execute(
                "INSERT INTO calls (id, booking_id, inbound_call_id, twilio_call_sid, status, created_ms, ended_ms, billed_seconds, amount, currency, end_reason)
                 VALUES ('call_1', ?1, 'sip-call-id-1', 'CA1', 'completed', 1767225600000, 1767225660000, 60, 300, 'jpy', 'caller-hung-up')",
                args![for_call],
            )?;
            for event in [
                "INSERT INTO call_events VALUES ('call_1', 2, 1767225601000, 'ringing', 180, 'Ringing', NULL)",
                "INSERT INTO call_events VALUES ('call_1', 1, 1767225600000, 'queued', NULL, NULL, NULL)",
                "INSERT INTO call_events VALUES ('call_1', 3, 1767225660000, 'completed', NULL, NULL, 'caller hung up')",
            ] {
                db.execute(event, &[])?;
            }
            Ok(())
        })
        .await
        .unwrap();
    let (status, call) = api.send("GET", "/v1/calls/call_1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(call["amount"], 300);
    assert_eq!(call["legs"]["caller"]["sip_call_id"], "sip-call-id-1");
    let statuses: Vec<&str> = call["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["queued", "ringing", "completed"]);
    assert_eq!(call["events"][1]["sip_code"], 180);

    let (_, calls) = api
        .send("GET", &format!("/v1/calls?booking={booking_id}"), None)
        .await;
    assert_eq!(calls["calls"].as_array().unwrap().len(), 1);
    let (status, _) = api.send("GET", "/v1/calls", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = api.send("GET", "/v1/calls/call_missing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn the_bearer_scheme_is_read_in_any_case(backend: Backend) {
    let api = Api::new(backend).await;
    let cases = [
        ("Bearer", StatusCode::OK),
        ("bearer", StatusCode::OK),
        ("BEARER", StatusCode::OK),
        ("bEaReR", StatusCode::OK),
        ("Basic", StatusCode::UNAUTHORIZED),
    ];
    for (scheme, expected) in cases {
        let request = Request::builder()
            .uri("/v1/bookings")
            .header("authorization", format!("{scheme} {TOKEN}"))
            .body(Body::empty())
            .unwrap();
        let response = tollbridge_daemon::http::router(api.shared.clone())
            .oneshot(request)
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "{scheme}");
    }
}

async fn a_body_over_the_limit_gets_413_and_stores_nothing(backend: Backend) {
    let api = Api::new(backend).await;
    let mut big = booking();
    big["callers"] = json!(vec!["+819012345678"; 6000]);
    let body = big.to_string();
    assert!(body.len() > tollbridge_daemon::http::BODY_LIMIT);
    let (status, answer) = api.send("POST", "/v1/bookings", Some(&body)).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large"))
    );
    let (_, list) = api.send("GET", "/v1/bookings", None).await;
    assert_eq!(list["bookings"].as_array().unwrap().len(), 0);
}

async fn a_value_of_the_wrong_type_is_named_in_field(backend: Backend) {
    let api = Api::new(backend).await;
    let cases = [
        ("cap_seconds", json!("1800"), "cap_seconds"),
        ("callers", json!(["+819012345678", 7]), "callers[1]"),
    ];
    for (key, value, field) in cases {
        let mut wrong = booking();
        wrong[key] = value;
        let (status, body) = api.create(wrong).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["fields"][0]["field"], field, "{body}");
    }
    let mut wrong = booking();
    wrong["tariff"]["price_per_minute"] = json!(-5.5);
    let (_, body) = api.create(wrong).await;
    assert_eq!(
        body["error"]["fields"][0]["field"], "tariff.price_per_minute",
        "{body}"
    );
}

async fn calls_are_found_by_the_number_dialled_with_the_bookings_they_could_have_been(
    backend: Backend,
) {
    let api = Api::new(backend).await;
    let (_, created) = api.create(booking()).await;
    let booking_id = created["id"].as_str().unwrap().to_owned();
    let candidates = json!([booking_id]).to_string();
    api.shared
        .ledger
        .run(move |db| {
            db.execute(
                "INSERT INTO calls (id, inbound_call_id, called, status, created_ms, ended_ms, end_reason, candidates)
                 VALUES ('call_pin', 'sip-1', '+81312345678', 'failed', 1767225600000, 1767225660000, 'pin-failed', ?1)",
                args![candidates],
            )?;
            db.execute(
                "INSERT INTO calls (id, inbound_call_id, called, status, created_ms)
                 VALUES ('call_other', 'sip-2', '+81399999999', 'queued', 1767225600000)",
                &[],
            )?;
            Ok(())
        })
        .await
        .unwrap();
    let (status, calls) = api
        .send("GET", "/v1/calls?called=%2B81312345678", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{calls}");
    let calls = calls["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["id"], "call_pin");
    assert_eq!(calls[0]["candidates"], json!([created["id"]]));
    let (status, body) = api.send("GET", "/v1/calls?called=81312345678", None).await;
    assert_eq!(
        (status, body["error"]["fields"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("called"))
    );
    let (status, _) = api
        .send("GET", "/v1/calls?called=%2B81312345678&limit=0", None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

/// Two bookings a call could not tell apart (same number, a shared
/// caller, overlapping windows, no PIN on either) are refused at creation,
/// naming the other; a PIN, another caller, another window, or the other
/// one canceled make it fine.
async fn bookings_a_call_could_not_tell_apart_are_refused(backend: Backend) {
    let api = Api::new(backend).await;
    let mut first = booking();
    first["pin"] = Value::Null;
    first["id"] = json!("bk_first");
    assert_eq!(api.create(first.clone()).await.0, StatusCode::CREATED);
    let later = |start: &str, end: &str| {
        let mut b = first.clone();
        b["id"] = Value::Null;
        b["window"] = json!({"start": start, "end": end});
        b
    };
    let overlapping = later("2030-01-01T10:30:00+09:00", "2030-01-01T12:00:00+09:00");
    let mut shared_caller = overlapping.clone();
    shared_caller["callers"] = json!(["+819000000000", "+819012345678"]);
    for body in [overlapping.clone(), shared_caller] {
        let (status, answer) = api.create(body).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("booking_overlaps")),
            "{answer}"
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("bk_first"),
            "{answer}"
        );
    }
    let (_, listed) = api
        .send("GET", "/v1/bookings?called=%2B81312345678", None)
        .await;
    assert_eq!(
        listed["bookings"].as_array().map(Vec::len),
        Some(1),
        "nothing stored"
    );

    let mut with_pin = overlapping.clone();
    with_pin["pin"] = json!("1234");
    let mut other_caller = overlapping.clone();
    other_caller["callers"] = json!(["+819011112222"]);
    let mut other_number = overlapping.clone();
    other_number["called"] = json!("+81312345679");
    let after = later("2030-01-01T11:00:00+09:00", "2030-01-01T12:00:00+09:00");
    for body in [with_pin, other_caller, other_number, after] {
        let (status, answer) = api.create(body).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
    let (status, _) = api.send("DELETE", "/v1/bookings/bk_first", None).await;
    assert_eq!(status, StatusCode::OK);
    let before = later("2030-01-01T09:00:00+09:00", "2030-01-01T10:30:00+09:00");
    let (status, answer) = api.create(before).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the first was canceled: {answer}"
    );
}

/// The bookings list pages newest first by cursor, each booking once.
async fn bookings_are_listed_a_page_at_a_time(backend: Backend) {
    let api = Api::new(backend).await;
    let mut made = Vec::new();
    for n in 0..7 {
        let mut b = booking();
        b["callers"] = json!([format!("+8190000000{n:02}")]);
        let (status, created) = api.create(b).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        made.push(created["id"].as_str().unwrap().to_owned());
    }
    made.reverse();
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let uri = match &cursor {
            Some(c) => format!("/v1/bookings?limit=3&cursor={c}"),
            None => "/v1/bookings?limit=3".to_owned(),
        };
        let (status, page) = api.send("GET", &uri, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        for b in page["bookings"].as_array().unwrap() {
            seen.push(b["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!((pages, seen), (3, made), "newest first, none twice");
    for bad in ["12.call_x", "nonsense", "x.bk_1"] {
        let (status, body) = api
            .send("GET", &format!("/v1/bookings?cursor={bad}"), None)
            .await;
        assert_eq!(
            (status, body["error"]["fields"][0]["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("cursor")),
            "{bad}: {body}"
        );
    }
}

/// Runs `sql` (with the booking id as ?1) on the test's database.
async fn write(api: &Api, sql: &'static str, id: &str) {
    let id = id.to_owned();
    api.shared
        .ledger
        .run(move |db| {
            db.execute(sql, args![id])?;
            Ok(())
        })
        .await
        .unwrap();
}

async fn patch(api: &Api, id: &str, body: Value) -> (StatusCode, Value) {
    api.send(
        "PATCH",
        &format!("/v1/bookings/{id}"),
        Some(&body.to_string()),
    )
    .await
}

async fn bookings_change_within_their_rules(backend: Backend) {
    let api = Api::new(backend).await;
    let (_, created) = api.create(booking()).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let other_tariff = json!({"currency": "jpy", "price_per_minute": 500});

    // What an active booking without calls may change.
    let (status, changed) = patch(
        &api,
        &id,
        json!({
            "cap_seconds": 600,
            "callers": ["+819011112222"],
            "callee": {"uri": "sip:expert@192.0.2.10"},
            "tariff": other_tariff,
            "window": {"start": "2030-01-02T10:00:00+09:00", "end": "2030-01-02T12:00:00+09:00"},
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["cap_seconds"], 600);
    assert_eq!(changed["callers"], json!(["+819011112222"]));
    assert_eq!(changed["callee"], json!({"uri": "sip:expert@192.0.2.10"}));
    assert_eq!(changed["tariff"]["price_per_minute"], 500);
    assert_eq!(changed["window"]["end"], "2030-01-02T03:00:00Z");
    assert_eq!(changed["has_pin"], true);
    let (status, changed) = patch(&api, &id, json!({"pin": null})).await;
    assert_eq!(
        (status, &changed["has_pin"]),
        (StatusCode::OK, &json!(false))
    );
    let (status, changed) = patch(&api, &id, json!({"pin": "98765"})).await;
    assert_eq!(
        (status, &changed["has_pin"]),
        (StatusCode::OK, &json!(true))
    );

    // Refused: each case with its answer; none changes anything.
    let (_, before) = api.send("GET", &format!("/v1/bookings/{id}"), None).await;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    for (body, status, code, field) in [
        (
            json!({"called": "+81399998888"}),
            unprocessable,
            "validation_failed",
            "called",
        ),
        (
            json!({"stripe": {"customer": "cus_x", "payment_method": "pm_x"}}),
            unprocessable,
            "validation_failed",
            "stripe",
        ),
        (
            json!({"cancellation_fee": 100}),
            unprocessable,
            "validation_failed",
            "cancellation_fee",
        ),
        (json!({}), unprocessable, "validation_failed", "body"),
        (
            json!({"cap_seconds": 0}),
            unprocessable,
            "validation_failed",
            "cap_seconds",
        ),
        (
            json!({"callers": [], "pin": null}),
            unprocessable,
            "validation_failed",
            "callers",
        ),
        (
            json!({"pin": "12"}),
            unprocessable,
            "validation_failed",
            "pin",
        ),
        (
            json!({"window": {"start": "2030-01-02T10:00:00+09:00", "end": "2030-01-02T09:00:00+09:00"}}),
            unprocessable,
            "validation_failed",
            "window.end",
        ),
        (
            json!({"callee": {"number": "+815011112222", "trunk": "nowhere"}}),
            unprocessable,
            "validation_failed",
            "callee.trunk",
        ),
    ] {
        let (got, answer) = patch(&api, &id, body.clone()).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
        assert!(answer.to_string().contains(field), "{body}: {answer}");
    }
    let (status, answer) = patch(&api, &id, json!({"colour": "red"})).await;
    assert_eq!(status, unprocessable, "{answer}");
    let (status, _) = patch(&api, "bk_nobody", json!({"cap_seconds": 60})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, after) = api.send("GET", &format!("/v1/bookings/{id}"), None).await;
    assert_eq!(before, after, "a refused change changed nothing");

    // After a call used 100 s: the tariff is fixed (the same one is
    // fine), the budget cannot go below 100 s, and exactly 100 s
    // completes the booking.
    write(
        &api,
        "INSERT INTO calls (id, booking_id, inbound_call_id, status, created_ms, ended_ms, billed_seconds)
         VALUES ('call_used', ?1, 'used@test', 'completed', 1, 2, 100)",
        &id,
    )
    .await;
    write(
        &api,
        "UPDATE bookings SET used_seconds = 100 WHERE id = ?1",
        &id,
    )
    .await;
    for (body, code) in [
        (
            json!({"tariff": {"currency": "jpy", "price_per_minute": 900}}),
            "tariff_locked",
        ),
        (json!({"cap_seconds": 99}), "budget_below_used"),
    ] {
        let (got, answer) = patch(&api, &id, body.clone()).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some(code)),
            "{body}: {answer}"
        );
    }
    let (status, same) = patch(
        &api,
        &id,
        json!({"tariff": other_tariff, "cap_seconds": 300}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{same}");
    assert_eq!(
        (&same["remaining_seconds"], &same["state"]),
        (&json!(200), &json!("active"))
    );
    let (status, done) = patch(&api, &id, json!({"cap_seconds": 100})).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(
        (&done["state"], &done["remaining_seconds"]),
        (&json!("completed"), &json!(0))
    );
    let (status, closed) = patch(&api, &id, json!({"cap_seconds": 900})).await;
    assert_eq!(
        (status, closed["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("booking_closed")),
        "{closed}"
    );

    // In a call: 409 until it ends.
    let (_, second) = api.create(booking()).await;
    let second = second["id"].as_str().unwrap().to_owned();
    write(
        &api,
        "UPDATE bookings SET state = 'in-call' WHERE id = ?1",
        &second,
    )
    .await;
    let (status, body) = patch(&api, &second, json!({"cap_seconds": 60})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("booking_in_call")),
        "{body}"
    );
}

/// A fee hold not placed yet follows the window: planned 4 d 12 h before
/// a window ten days away, placed at once when the window moves to two
/// days away.
async fn moving_the_window_moves_a_fee_hold_not_placed_yet(backend: Backend) {
    let api = Api::new(backend).await;
    let now = time::OffsetDateTime::now_utc();
    let at = |days: i64| {
        (now + time::Duration::days(days))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let mut body = booking();
    body["stripe"] = json!({"customer": "cus_1", "payment_method": "pm_1"});
    body["cancellation_fee"] = json!(500);
    body["window"] = json!({"start": at(10), "end": at(11)});
    let (status, created) = api.create(body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let due = |api: &Api| {
        let (shared, id) = (api.shared.clone(), id.clone());
        async move {
            shared
                .ledger
                .run(move |db| {
                    db.query_one(
                        "SELECT next_attempt_ms FROM settlements
                         WHERE booking_id = ?1 AND operation = 'cancellation-fee' AND state = 'pending'",
                        args![id],
                    )?
                    .int(0)
                })
                .await
                .unwrap()
        }
    };
    let now_ms = tollbridge_daemon::clock::now_ms();
    let day = 86_400_000;
    let planned = due(&api).await;
    assert!(
        (planned - (now_ms + 10 * day - 108 * 3_600_000)).abs() < 60_000,
        "planned {} h from now",
        (planned - now_ms) / 3_600_000
    );
    let (status, moved) = patch(&api, &id, json!({"window": {"start": at(2), "end": at(3)}})).await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    let replanned = due(&api).await;
    assert!(
        (replanned - now_ms).abs() < 60_000,
        "due at once, not in {} h",
        (replanned - now_ms) / 3_600_000
    );
}

async fn a_change_that_would_make_routing_ambiguous_is_refused(backend: Backend) {
    let api = Api::new(backend).await;
    let mut without_pin = booking();
    without_pin["pin"] = Value::Null;
    let (_, open) = api.create(without_pin).await;
    let open = open["id"].as_str().unwrap().to_owned();
    // Same number and caller, the next day: no overlap.
    let mut next_day = booking();
    next_day["window"] =
        json!({"start": "2030-01-02T10:00:00+09:00", "end": "2030-01-02T11:00:00+09:00"});
    next_day["pin"] = Value::Null;
    let (status, later) = api.create(next_day).await;
    assert_eq!(status, StatusCode::CREATED, "{later}");
    let later = later["id"].as_str().unwrap().to_owned();
    // Moving it onto the first one's window is refused, naming it; moving
    // the first one changes nothing about itself.
    let (status, body) = patch(
        &api,
        &later,
        json!({"window": {"start": "2030-01-01T10:30:00+09:00", "end": "2030-01-01T11:30:00+09:00"}}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("booking_overlaps")),
        "{body}"
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains(&open),
        "{body}"
    );
    let (status, body) = patch(
        &api,
        &open,
        json!({"window": {"start": "2030-01-01T09:00:00+09:00", "end": "2030-01-01T11:00:00+09:00"}}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a booking does not overlap itself: {body}"
    );
    // With a PIN it may overlap.
    let (status, body) = patch(
        &api,
        &later,
        json!({"pin": "2468", "window": {"start": "2030-01-01T10:30:00+09:00", "end": "2030-01-01T11:30:00+09:00"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn bookings_written_at_once_cannot_both_claim_one_window(backend: Backend) {
    let api = Api::new(backend).await;
    // Rounds of eight at once, each round on a number of its own: without
    // a lock per number, two of a round pass the check together.
    for round in 0..20 {
        let attempts = (0..8).map(|n| {
            let shared = api.shared.clone();
            tokio::spawn(async move {
                let mut body = booking();
                body["pin"] = Value::Null;
                body["called"] = json!(format!("+8131234{round:04}"));
                body["id"] = json!(format!("bk_race{round}_{n}"));
                support::http::request(
                    &shared,
                    "POST",
                    "/v1/bookings",
                    Some(TOKEN),
                    Some(body.to_string()),
                )
                .await
                .0
            })
        });
        let mut statuses = Vec::new();
        for attempt in attempts.collect::<Vec<_>>() {
            statuses.push(attempt.await.unwrap());
        }
        let created = statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count();
        let refused = statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count();
        assert_eq!((created, refused), (1, 7), "round {round}: {statuses:?}");
    }
}

on_both_backends!(
    moving_the_window_moves_a_fee_hold_not_placed_yet,
    bookings_change_within_their_rules,
    bookings_written_at_once_cannot_both_claim_one_window,
    a_change_that_would_make_routing_ambiguous_is_refused,
    bookings_are_listed_a_page_at_a_time,
    bookings_a_call_could_not_tell_apart_are_refused,
    a_booking_is_created_read_listed_and_canceled,
    invalid_bookings_get_422_listing_each_field_and_store_nothing,
    malformed_requests_get_json_errors_with_stable_codes,
    a_given_id_is_kept_and_cannot_be_reused,
    a_booking_in_a_call_cannot_be_canceled,
    call_records_are_shown_with_their_ordered_events,
    the_bearer_scheme_is_read_in_any_case,
    a_body_over_the_limit_gets_413_and_stores_nothing,
    a_value_of_the_wrong_type_is_named_in_field,
    calls_are_found_by_the_number_dialled_with_the_bookings_they_could_have_been,
);
