//! The bookings and calls API through the real router and database.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tollbridge_daemon::args;
use tower::ServiceExt;

#[macro_use]
mod support;
use support::Backend;
use support::api::{Api, TOKEN, booking};

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
        json!({"currency": "jpy", "price_per_minute": 300, "increment_seconds": 6, "minimum_seconds": 0, "under_minimum": "cancel", "recording_price_per_minute": 0})
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

async fn an_extension_policy_is_stored_shown_changed_and_refused_field_by_field(backend: Backend) {
    let api = Api::new(backend).await;
    let mut bad = booking();
    bad["extension"] = json!({"mode": "sometimes", "block_seconds": 5, "max_seconds": 600});
    let (status, body) = api.create(bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fields: Vec<&str> = body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "extension.mode",
            "extension.block_seconds",
            "extension.max_seconds",
            "extension"
        ],
        "each mistake, the missing card too"
    );
    let mut no_card = booking();
    no_card["extension"] = json!({"mode": "auto", "block_seconds": 600, "max_seconds": 3600});
    let (status, body) = api.create(no_card.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["fields"][0]["field"], "extension", "{body}");
    let (_, listed) = api.send("GET", "/v1/bookings", None).await;
    assert_eq!(listed["bookings"], json!([]), "nothing stored");

    let mut good = no_card;
    good["stripe"] = json!({"customer": "cus_1", "payment_method": "pm_1"});
    let (status, created) = api.create(good).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["extension"],
        json!({"mode": "auto", "block_seconds": 600, "max_seconds": 3600})
    );
    let id = created["id"].as_str().unwrap();
    let path = format!("/v1/bookings/{id}");
    let (status, asked) = api
        .send(
            "PATCH",
            &path,
            Some(r#"{"extension": {"mode": "ask", "block_seconds": 300, "max_seconds": 3600}}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{asked}");
    assert_eq!(asked["extension"]["mode"], "ask");
    // An offer says whole minutes it has words for.
    let (status, body) = api
        .send(
            "PATCH",
            &path,
            Some(r#"{"extension": {"mode": "ask", "block_seconds": 420, "max_seconds": 3600}}"#),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["error"]["fields"][0]["field"],
        "extension.block_seconds"
    );
    let (status, off) = api
        .send("PATCH", &path, Some(r#"{"extension": null}"#))
        .await;
    assert_eq!(status, StatusCode::OK, "{off}");
    assert_eq!(off["extension"], Value::Null);
}

async fn a_recording_option_is_stored_shown_changed_and_refused(backend: Backend) {
    let api = Api::new(backend).await;
    let mut bad = booking();
    bad["tariff"]["recording_price_per_minute"] = json!(-5);
    bad["recording"] = json!({"enabled": true});
    let (status, body) = api.create(bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["error"]["fields"][0]["field"], "tariff.recording_price_per_minute",
        "{body}"
    );
    let mut bad_expert = booking();
    bad_expert["callee"] = json!({"expert": "two words"});
    let (status, body) = api.create(bad_expert).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["error"]["fields"][0]["field"], "callee.expert",
        "{body}"
    );
    let mut no_expert = booking();
    no_expert["callee"] = json!({"expert": "nobody"});
    let (status, body) = api.create(no_expert).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains("POST /v1/experts"),
        "{body}"
    );
    let mut wrong_type = booking();
    wrong_type["recording"] = json!({"enabled": "yes"});
    let (status, body) = api.create(wrong_type).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["error"]["fields"][0]["field"], "recording.enabled",
        "{body}"
    );

    let mut recorded = booking();
    recorded["tariff"]["recording_price_per_minute"] = json!(50);
    recorded["recording"] = json!({"enabled": true, "announce": false});
    let (status, created) = api.create(recorded).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["recording"],
        json!({"enabled": true, "announce": false})
    );
    assert_eq!(created["tariff"]["recording_price_per_minute"], 50);
    let path = format!("/v1/bookings/{}", created["id"].as_str().unwrap());
    let (status, announced) = api
        .send("PATCH", &path, Some(r#"{"recording": {"enabled": true}}"#))
        .await;
    assert_eq!(status, StatusCode::OK, "{announced}");
    assert_eq!(
        announced["recording"],
        json!({"enabled": true, "announce": true})
    );
    let (status, off) = api
        .send("PATCH", &path, Some(r#"{"recording": null}"#))
        .await;
    assert_eq!(status, StatusCode::OK, "{off}");
    assert_eq!(off["recording"], Value::Null);
    let (_, shown) = api.send("GET", &path, None).await;
    assert_eq!(shown["recording"], Value::Null);
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

on_both_backends!(
    bookings_are_listed_a_page_at_a_time,
    bookings_a_call_could_not_tell_apart_are_refused,
    a_booking_is_created_read_listed_and_canceled,
    invalid_bookings_get_422_listing_each_field_and_store_nothing,
    an_extension_policy_is_stored_shown_changed_and_refused_field_by_field,
    a_recording_option_is_stored_shown_changed_and_refused,
    malformed_requests_get_json_errors_with_stable_codes,
    a_given_id_is_kept_and_cannot_be_reused,
    a_booking_in_a_call_cannot_be_canceled,
    call_records_are_shown_with_their_ordered_events,
    the_bearer_scheme_is_read_in_any_case,
    a_body_over_the_limit_gets_413_and_stores_nothing,
    a_value_of_the_wrong_type_is_named_in_field,
    calls_are_found_by_the_number_dialled_with_the_bookings_they_could_have_been,
);
