//! The accounting export against the records it comes from: 1,000 calls
//! in the ledger, exported as CSV through the real router, compared field
//! by field; bad ranges refused.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use axum::http::StatusCode;
use tollbridge_config::{Config, Secret};
use tollbridge_daemon::bookings::model::{Callee, NewBooking, Tariff, ValidBooking, Window};
use tollbridge_daemon::calls::route::Route;
use tollbridge_daemon::clock::rfc3339;
use tollbridge_daemon::export::utc;
use tollbridge_daemon::ledger::{CallEnd, CallStatus, Ledger, NewCall};
use tollbridge_daemon::state::Shared;

// One backend here: the query is the same SQL on both (the ledger suite
// runs both), and 1,000 calls through PostgreSQL would only add minutes.
#[allow(unused_macros)]
#[macro_use]
mod support;
use support::Backend;

const TOKEN: &str = "export-test-token-0123456";
const T0: i64 = 1_900_000_000_000;
const CALLS: usize = 1_000;

fn booking(n: usize) -> ValidBooking {
    ValidBooking {
        booking: NewBooking {
            id: Some(format!("bk_{n:04}")),
            called: "+815000000001".to_owned(),
            callers: vec![format!("+8190{n:08}")],
            pin: None,
            callee: Callee::Uri {
                uri: "sip:expert@127.0.0.1:5099".to_owned(),
            },
            tariff: Tariff {
                currency: "jpy".to_owned(),
                price_per_minute: 100 + n as i64,
                increment_seconds: 1 + (n % 6) as i64,
                minimum_seconds: 0,
                under_minimum: "cancel".to_owned(),
                recording_price_per_minute: 0,
            },
            cap_seconds: 1800,
            window: Window {
                start: String::new(),
                end: String::new(),
            },
            stripe: None,
            cancellation_fee: None,
            language: None,
            extension: None,
            recording: None,
        },
        window_start_ms: T0 - 3_600_000,
        window_end_ms: T0 + 3_600_000,
        minimum_charge: 50,
    }
}

/// Call `n`: connected for a few seconds, or (every seventh) refused busy.
async fn one_call(ledger: &Ledger, n: usize) {
    let id = format!("call_{n:04}");
    let at = T0 + n as i64 * 1_000;
    ledger
        .create_booking(format!("bk_{n:04}"), booking(n), at)
        .await
        .unwrap();
    ledger
        .begin_call(
            NewCall {
                id: id.clone(),
                sip_call_id: format!("{id}@caller"),
                twilio_call_sid: None,
                caller: Some(format!("+8190{n:08}")),
                called: Some("+815000000001".to_owned()),
            },
            at,
        )
        .await
        .unwrap();
    let booking = format!("bk_{n:04}");
    ledger
        .route_and_claim(id.clone(), Some("+815000000001".into()), at, move |_| {
            Route::Booking(booking.clone())
        })
        .await
        .unwrap();
    let connected = !n.is_multiple_of(7);
    if connected {
        ledger
            .record_event(
                id.clone(),
                CallStatus::InProgress,
                Some(200),
                None,
                at + 500,
            )
            .await
            .unwrap();
    }
    let end = CallEnd {
        status: if connected {
            CallStatus::Completed
        } else {
            CallStatus::Busy
        },
        reason: if connected {
            "caller-hangup"
        } else {
            "callee-busy"
        }
        .to_owned(),
        talk_ms: if connected { 1_000 + n as i64 * 37 } else { 0 },
        connected,
    };
    ledger.close_call(id, end, at + 900).await.unwrap();
}

async fn get(shared: &std::sync::Arc<Shared>, uri: &str) -> (StatusCode, String) {
    let (status, bytes) = support::http::request(shared, "GET", uri, Some(TOKEN), None).await;
    (status, String::from_utf8(bytes).unwrap())
}

async fn an_export_of_1000_calls_matches_their_records_field_by_field(backend: Backend) {
    let ledger = support::open(backend).await;
    for n in 0..CALLS {
        one_call(&ledger, n).await;
    }
    let mut config = Config::defaults(&HashMap::new());
    config.http.api_token = Some(Secret::inline(TOKEN));
    config.export.timezone = "Asia/Tokyo".to_owned();
    let shared = Shared::new(config, ledger.ledger.clone(), None, None);
    let range = format!(
        "from={}&to={}",
        rfc3339(T0 - 1).replace('+', "%2B"),
        rfc3339(T0 + CALLS as i64 * 1_000).replace('+', "%2B")
    );
    let (status, text) = get(&shared, &format!("/v1/exports/calls.csv?{range}")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header, tollbridge_daemon::export::COLUMNS);
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), CALLS, "pages of 500 joined without loss");
    for (n, record) in records.iter().enumerate() {
        let id = format!("call_{n:04}");
        assert_eq!(&record[column("call")], id, "in start order");
        let call = ledger.call(id.clone()).await.unwrap().unwrap();
        let text = |v: Option<String>| v.unwrap_or_default();
        let number = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
        let expected = [
            ("booking", text(call.booking.clone())),
            ("caller", text(call.caller.clone())),
            ("called", text(call.called.clone())),
            ("status", call.status.as_str().to_owned()),
            ("end_reason", text(call.end_reason.clone())),
            ("started_utc", utc(Some(call.created_ms))),
            ("answered_utc", utc(call.answered_ms)),
            ("ended_utc", utc(call.ended_ms)),
            ("talk_ms", number(call.talk_ms)),
            ("billed_seconds", number(call.billed_seconds)),
            ("amount", number(call.amount)),
            ("currency", text(call.currency.clone())),
            (
                "price_per_minute",
                number(call.rating.as_ref().map(|r| r.price_per_minute)),
            ),
            (
                "increment_seconds",
                number(call.rating.as_ref().map(|r| r.increment_seconds)),
            ),
            ("node", call.node.clone()),
            ("timezone", "Asia/Tokyo".to_owned()),
        ];
        for (name, value) in expected {
            assert_eq!(&record[column(name)], value, "{name} of {id}");
        }
        assert!(
            record[column("started_local")].ends_with("+09:00"),
            "{:?}",
            record
        );
    }
    // The same calls through the list, a page at a time by cursor.
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let cursor = next
            .as_ref()
            .map(|c| format!("&cursor={c}"))
            .unwrap_or_default();
        let (status, body) = get(&shared, &format!("/v1/calls?{range}&limit=300{cursor}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        for call in page["calls"].as_array().unwrap() {
            seen.push(call["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(cursor) => next = Some(cursor.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..CALLS).map(|n| format!("call_{n:04}")).collect();
    assert_eq!(seen, expected, "4 pages, in start order, none twice");
    let count = |body: &str| {
        let page: serde_json::Value = serde_json::from_str(body).unwrap();
        page["calls"].as_array().unwrap().len()
    };
    let (_, body) = get(&shared, "/v1/calls?status=busy&limit=500").await;
    assert_eq!(
        count(&body),
        CALLS.div_ceil(7),
        "every seventh call was busy"
    );
    let (_, body) = get(&shared, "/v1/calls?caller=%2B819000000042").await;
    assert_eq!(count(&body), 1);
    for query in [
        "cursor=nonsense&status=busy",
        "status=exploded",
        "caller=042",
        "from=today",
        "limit=9",
    ] {
        let (status, body) = get(&shared, &format!("/v1/calls?{query}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
    }

    // Half the range: only the calls that started in it.
    let half = format!(
        "from={}&to={}",
        rfc3339(T0 + 500_000).replace('+', "%2B"),
        rfc3339(T0 + 600_000).replace('+', "%2B")
    );
    let (_, text) = get(&shared, &format!("/v1/exports/calls.jsonl?{half}")).await;
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 100);
    assert_eq!(lines[0]["call"], "call_0500");

    // Bad ranges: 422 naming the field, nothing streamed.
    for query in [
        "",
        "from=yesterday&to=today",
        &format!("from={}", rfc3339(T0).replace('+', "%2B")),
        &format!(
            "from={}&to={}",
            rfc3339(T0).replace('+', "%2B"),
            rfc3339(T0).replace('+', "%2B")
        ),
        "from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z&format=xml",
    ] {
        let (status, body) = get(&shared, &format!("/v1/exports/calls.csv?{query}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert!(body.contains("validation_failed"), "{body}");
    }
}

on_both_backends!(an_export_of_1000_calls_matches_their_records_field_by_field,);
