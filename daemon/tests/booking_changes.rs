//! Bookings changed through the API (`PATCH /v1/bookings/{id}`), on both
//! backends: what may change and when (table-tested), a change that
//! would overlap another booking, bookings written at once on one number,
//! and a fee hold following a moved window.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::http::StatusCode;
use serde_json::{Value, json};
use tollbridge_daemon::args;

#[macro_use]
mod support;
use support::Backend;
use support::api::{Api, TOKEN, booking};

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

/// A booking's prompt language: stored and shown at creation, changed and
/// cleared by PATCH, refused (422, nothing changed) when it is not a tag
/// or has no prompts; and it routes with its calls.
async fn a_booking_speaks_a_language_with_prompts(backend: Backend) {
    let api = Api::new(backend).await;
    let mut body = booking();
    body["language"] = json!("ja");
    let (status, created) = api.create(body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["language"], "ja");
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, _) = api
        .create({
            let mut body = booking();
            body["id"] = json!("bk_unspoken");
            body["called"] = json!("+81300000099");
            body["language"] = json!("fr");
            body
        })
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = api.send("GET", "/v1/bookings/bk_unspoken", None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a refused booking is not stored"
    );
    for (language, says) in [
        (json!("fr"), "has no prompts here (these do: en, ja)"),
        (json!("Japanese"), "a language tag"),
        (json!(7), "language"),
    ] {
        let (status, refused) = patch(&api, &id, json!({"language": language})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
        assert!(refused.to_string().contains(says), "{language}: {refused}");
    }
    let (_, shown) = api.send("GET", &format!("/v1/bookings/{id}"), None).await;
    assert_eq!(shown["language"], "ja", "a refused change changes nothing");
    let (status, changed) = patch(&api, &id, json!({"language": "en"})).await;
    assert_eq!(
        (status, &changed["language"]),
        (StatusCode::OK, &json!("en"))
    );
    let (status, changed) = patch(&api, &id, json!({"language": null})).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["language"], Value::Null, "null: prompts.language");
    patch(&api, &id, json!({"language": "ja"})).await;
    let ledger = &api.shared.ledger;
    ledger
        .begin_call(
            support::fixtures::new_call("call_ja", "+81312345678"),
            support::fixtures::T0,
        )
        .await
        .unwrap();
    let routed = ledger
        .route_and_claim(
            "call_ja".into(),
            Some(created["called"].as_str().unwrap().into()),
            support::fixtures::T0,
            move |_| tollbridge_daemon::calls::route::Route::Booking(id.clone()),
        )
        .await
        .unwrap();
    assert_eq!(routed.language.as_deref(), Some("ja"));
}

on_both_backends!(
    moving_the_window_moves_a_fee_hold_not_placed_yet,
    a_booking_speaks_a_language_with_prompts,
    bookings_change_within_their_rules,
    bookings_written_at_once_cannot_both_claim_one_window,
    a_change_that_would_make_routing_ambiguous_is_refused,
);
