//! Refunds end to end: the real daemon, SIPp on both sides, the Stripe
//! fake as Stripe. A captured call is refunded in part and then in full
//! through the API while the fake answers 500 after applying and drops the
//! connection after applying: each refund reaches Stripe once, none is
//! made twice, the call shows what was refunded; a daemon killed while a
//! refund is on its way refunds once after its restart; bad requests
//! change nothing.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tollbridge_e2e::stripe_fake::{Endpoint, Fault, StripeFake};

/// ¥1,200 a minute: a 3 s call costs ¥60, above Stripe's ¥50 minimum.
const PRICE: i64 = 1200;

fn start(fake: &StripeFake) -> Daemon {
    start_daemon_sections(
        "",
        "30s",
        &format!(
            "[stripe]\nsecret_key = \"sk_test_fake\"\napi_base = \"{}\"\nrequest_timeout = \"1s\"\n",
            fake.url()
        ),
    )
}

/// One call of about 3 s, captured; its record.
fn captured_call(daemon: &Daemon) -> Value {
    let expert = expert("expert_answers.xml", "9", &[]);
    let mut booking = booking_json(&[caller_id(1)], &expert_uri(&expert), 600);
    booking["tariff"]["price_per_minute"] = json!(PRICE);
    booking["stripe"] = json!({"customer": "cus_test", "payment_method": "pm_card_visa"});
    let booking = create_booking(daemon, &booking);
    let caller = caller(
        daemon,
        "caller_hangs_up.xml",
        CALLER_PREFIX,
        "9",
        "0 96",
        &["-d", "3000"],
    );
    assert_passed("caller", caller);
    assert_passed("expert", expert);
    wait_call(daemon, &booking, |call| {
        call["settlements"].as_array().is_some_and(|rows| {
            rows.iter()
                .any(|r| r["operation"] == "capture" && r["state"] == "succeeded")
        })
    })
}

/// The first call of `booking` once `done` says so.
fn wait_call(daemon: &Daemon, booking: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = daemon.api("GET", &format!("/v1/calls?booking={booking}"), TOKEN, None);
        if let Some(call) = body["calls"].as_array().and_then(|c| c.first())
            && done(call)
        {
            return call.clone();
        }
        assert!(Instant::now() < deadline, "still waiting: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn refund_rows(call: &Value) -> Vec<Value> {
    call["settlements"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["operation"] == "refund")
        .cloned()
        .collect()
}

fn all_refunds_settled(call: &Value) -> bool {
    let rows = refund_rows(call);
    !rows.is_empty() && rows.iter().all(|r| r["state"] == "succeeded")
}

fn post_refund(daemon: &Daemon, call: &str, body: &Value) -> (u16, Value) {
    daemon.api(
        "POST",
        &format!("/v1/calls/{call}/refunds"),
        TOKEN,
        Some(&body.to_string()),
    )
}

#[test]
fn partial_then_full_refunds_reach_stripe_once_each_through_faults() {
    let fake = StripeFake::start();
    let daemon = start(&fake);
    let call = captured_call(&daemon);
    let id = call["id"].as_str().unwrap().to_owned();
    let booking = call["booking"].as_str().unwrap().to_owned();
    let captured = call["amount"].as_i64().unwrap();
    assert!(captured >= 50, "{call}");

    // Bad requests: each answered, none written.
    for (body, status, field) in [
        (json!({"amount": 0}), 422, "amount"),
        (json!({"amount": -5}), 422, "amount"),
        (json!({"reason": "changed my mind"}), 422, "reason"),
        (json!({"id": "refund-1"}), 422, "id"),
        (json!({"colour": "red"}), 422, "colour"),
        (json!({"amount": "ten"}), 422, "amount"),
    ] {
        let (got, answer) = post_refund(&daemon, &id, &body);
        assert_eq!(got, status, "{body}: {answer}");
        assert!(answer.to_string().contains(field), "{body}: {answer}");
    }
    let (got, _) = post_refund(&daemon, "call_nobody", &json!({}));
    assert_eq!(got, 404);
    let (got, answer) = post_refund(&daemon, &id, &json!({"amount": captured + 1}));
    assert_eq!(
        (got, answer["error"]["code"].as_str()),
        (409, Some("refund_exceeds_captured")),
        "{answer}"
    );
    let (got, _) = daemon.api(
        "POST",
        &format!("/v1/calls/{id}/refunds"),
        "wrong-token-0123456789",
        Some("{}"),
    );
    assert_eq!(got, 401);
    assert!(refund_rows(&wait_call(&daemon, &booking, |_| true)).is_empty());

    // ¥20 back, Stripe answering 500 after applying it.
    fake.inject(Endpoint::Refund, Fault::ServerErrorAfterApplying);
    let part = json!({"id": "rf_part", "amount": 20, "reason": "requested_by_customer"});
    let (got, first) = post_refund(&daemon, &id, &part);
    assert_eq!(got, 201, "{first}");
    assert_eq!(
        (&first["amount"], &first["idempotency_key"]),
        (&json!(20), &json!("tb:refund:rf_part"))
    );
    wait_call(&daemon, &booking, all_refunds_settled);
    // The same request again is the same refund.
    let (got, again) = post_refund(&daemon, &id, &part);
    assert_eq!(
        (got, &again["id"], &again["state"]),
        (200, &json!("rf_part"), &json!("succeeded")),
        "{again}"
    );

    // The rest, the connection dropped after Stripe applied it.
    fake.inject(Endpoint::Refund, Fault::DropAfterApplying);
    let (got, rest) = post_refund(&daemon, &id, &json!({}));
    assert_eq!(
        (got, &rest["amount"]),
        (201, &json!(captured - 20)),
        "{rest}"
    );
    let call = wait_call(&daemon, &booking, |call| {
        all_refunds_settled(call) && refund_rows(call).len() == 2
    });
    let (got, none_left) = post_refund(&daemon, &id, &json!({}));
    assert_eq!(
        (got, none_left["error"]["code"].as_str()),
        (409, Some("call_fully_refunded")),
        "{none_left}"
    );

    // Stripe made exactly these two refunds, each once.
    let refunds = fake.refunds();
    let made: Vec<(i64, &str)> = refunds
        .iter()
        .map(|r| {
            (
                r["amount"].as_i64().unwrap(),
                r["metadata"]["refund"].as_str().unwrap(),
            )
        })
        .collect();
    let rest_id = rest["id"].as_str().unwrap();
    assert_eq!(made, [(20, "rf_part"), (captured - 20, rest_id)]);
    assert_eq!(refunds[0]["reason"], "requested_by_customer");
    // The 500 left the outcome unknown: the refund was looked for by its
    // id in the PaymentIntent's refunds, not sent again under a new key.
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.method == "GET" && r.path == "/v1/refunds"),
        "no lookup after the 500"
    );
    let keys: std::collections::BTreeSet<Option<&str>> = requests
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/refunds")
        .map(|r| r.idempotency_key.as_deref())
        .collect();
    assert_eq!(
        keys,
        [
            Some("tb:refund:rf_part"),
            Some(format!("tb:refund:{rest_id}").as_str())
        ]
        .into_iter()
        .collect()
    );
    let intent = fake
        .intents()
        .into_iter()
        .find(|i| i["id"] == call["payment_intent"])
        .unwrap();
    assert_eq!(intent["latest_charge"]["amount_refunded"], captured);
    assert_eq!(call["refunded_amount"], captured);
    assert!(
        refund_rows(&call).iter().all(|r| r["stripe_object"]
            .as_str()
            .is_some_and(|s| s.starts_with("re_"))),
        "{call}"
    );
    let (_, metrics) = daemon.get("/metrics", None);
    assert!(
        metrics.contains("tollbridge_refunds{state=\"succeeded\"} 2"),
        "{metrics}"
    );
}

#[test]
fn a_daemon_killed_while_a_refund_is_on_its_way_refunds_once_after_restart() {
    let fake = StripeFake::start();
    let daemon = start(&fake);
    let call = captured_call(&daemon);
    let id = call["id"].as_str().unwrap().to_owned();
    let booking = call["booking"].as_str().unwrap().to_owned();
    // Stripe applies the refund and answers 5 s later; the daemon dies in
    // between, after committing the row and sending the request.
    fake.inject(Endpoint::Refund, Fault::SlowAnswer(Duration::from_secs(5)));
    let (got, asked) = post_refund(&daemon, &id, &json!({"amount": 30}));
    assert_eq!(got, 201, "{asked}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !fake
        .requests()
        .iter()
        .any(|r| r.method == "POST" && r.path == "/v1/refunds")
    {
        assert!(Instant::now() < deadline, "no refund was sent");
        std::thread::sleep(Duration::from_millis(20));
    }
    let daemon = daemon.crash_and_restart();
    let call = wait_call(&daemon, &booking, all_refunds_settled);
    assert_eq!(call["refunded_amount"], 30, "{call}");
    assert_eq!(fake.refunds().len(), 1, "{:?}", fake.refunds());
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.method == "GET" && r.path == "/v1/refunds"),
        "the restarted daemon looks for the refund before sending it again"
    );
}
