//! The Stripe gateway against the Stripe fake: holds, captures, declines,
//! and every injected fault ending in exactly one capture with no
//! idempotency error.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tollbridge_billing::rating::Currency;
use tollbridge_billing::stripe::retry::RetryPolicy;
use tollbridge_billing::stripe::{
    Gateway, GatewayError, HoldRequest, ReleaseReason, StripeGateway,
};
use tollbridge_e2e::stripe_fake::{Endpoint, Fault, StripeFake, unix_now};

fn gateway(fake: &StripeFake) -> StripeGateway {
    let policy = RetryPolicy {
        attempts: 8,
        base: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
    StripeGateway::new(
        "sk_test_fake",
        &fake.url(),
        Duration::from_millis(500),
        policy,
    )
    .unwrap()
}

fn hold(card: &str, key: &str) -> HoldRequest {
    HoldRequest {
        amount: 1000,
        currency: Currency::Jpy,
        customer: "cus_test".into(),
        payment_method: card.into(),
        metadata: vec![
            ("call".into(), key.into()),
            ("booking".into(), "bk_1".into()),
        ],
        idempotency_key: format!("tb:call:{key}:authorize:v1"),
        incremental: false,
    }
}

#[tokio::test]
async fn a_hold_is_placed_and_captured_with_the_rated_amount() {
    let fake = StripeFake::start();
    let stripe = gateway(&fake);
    let intent = stripe.hold(hold("pm_card_visa", "call_1")).await.unwrap();
    assert_eq!(
        (intent.status.as_str(), intent.amount_capturable),
        ("requires_capture", 1000)
    );
    assert_eq!(
        intent.metadata.get("booking").map(String::as_str),
        Some("bk_1")
    );
    // Until when it can be captured, as the card charge says: Visa's
    // off-session 4 days 18 hours from now.
    let now = unix_now();
    let capture_before = intent.capture_before.expect("the hold's capture_before");
    assert!(
        (capture_before - (now + 114 * 3600)).abs() <= 5,
        "capture_before {capture_before}, now {now}"
    );
    let read = stripe.retrieve(intent.id.clone()).await.unwrap();
    assert_eq!(read.capture_before, Some(capture_before), "read back");
    let captured = stripe
        .capture(intent.id.clone(), 300, "tb:call:call_1:capture:v1".into())
        .await
        .unwrap();
    assert_eq!(
        (captured.status.as_str(), captured.amount_received),
        ("succeeded", 300)
    );
    let requests = fake.requests();
    let create = &requests[0];
    for (name, value) in [
        ("capture_method", "manual"),
        ("confirm", "true"),
        ("off_session", "true"),
        ("error_on_requires_action", "true"),
        ("automatic_payment_methods[enabled]", "true"),
        ("automatic_payment_methods[allow_redirects]", "never"),
        ("customer", "cus_test"),
        ("payment_method", "pm_card_visa"),
        ("amount", "1000"),
        ("currency", "jpy"),
        ("metadata[call]", "call_1"),
        ("expand[0]", "latest_charge"),
    ] {
        assert!(
            create.params.iter().any(|(k, v)| k == name && v == value),
            "{name}={value} missing in {:?}",
            create.params
        );
    }
    assert_eq!(
        create.idempotency_key.as_deref(),
        Some("tb:call:call_1:authorize:v1")
    );
    let expand = vec![("expand[0]".to_owned(), "latest_charge".to_owned())];
    assert_eq!(
        (requests[1].method.as_str(), &requests[1].params),
        ("GET", &expand),
        "read back with its charge"
    );
    assert_eq!(
        requests[2].params,
        vec![("amount_to_capture".to_owned(), "300".to_owned())]
    );
    // Found again by its metadata when its id is lost.
    let found = stripe
        .find("cus_test".into(), "call".into(), "call_1".into())
        .await
        .unwrap();
    assert_eq!(
        found.map(|i| (i.id, i.capture_before)),
        Some((intent.id, Some(capture_before))),
        "found with its charge"
    );
    // Released holds: cancel.
    let other = stripe.hold(hold("pm_card_visa", "call_2")).await.unwrap();
    let canceled = stripe
        .cancel(
            other.id,
            "tb:call:call_2:cancel:v1".into(),
            ReleaseReason::RequestedByCustomer,
        )
        .await
        .unwrap();
    assert_eq!(canceled.status, "canceled");
    let sent = fake
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/cancel"))
        .unwrap();
    assert!(
        sent.params.contains(&(
            "cancellation_reason".to_owned(),
            "requested_by_customer".to_owned()
        )),
        "{:?}",
        sent.params
    );
}

#[tokio::test]
async fn a_hold_left_past_its_capture_before_is_gone() {
    let fake = StripeFake::start();
    fake.set_hold_lifetime(Duration::from_secs(1));
    let stripe = gateway(&fake);
    let intent = stripe.hold(hold("pm_card_visa", "call_x")).await.unwrap();
    // Wait until the charge's capture_before has passed.
    let capture_before = intent.capture_before.expect("capture_before");
    let ends = std::time::UNIX_EPOCH + Duration::from_secs(capture_before as u64 + 1);
    if let Ok(left) = ends.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
    let read = stripe.retrieve(intent.id.clone()).await.unwrap();
    assert_eq!(
        (read.status.as_str(), read.amount_capturable),
        ("canceled", 0)
    );
    let error = stripe
        .capture(intent.id, 500, "tb:call:call_x:capture:v1".into())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, GatewayError::Refused { status: 400, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn declines_and_authentication_are_final_and_not_retried() {
    let fake = StripeFake::start();
    let stripe = gateway(&fake);
    for (card, code) in [
        ("pm_card_chargeDeclined", "card_declined"),
        ("pm_card_authenticationRequired", "authentication_required"),
    ] {
        let error = stripe.hold(hold(card, card)).await.unwrap_err();
        assert!(
            matches!(&error, GatewayError::Declined { code: c, .. } if c == code),
            "{error:?}"
        );
    }
    assert_eq!(fake.requests().len(), 2, "one request each, no retry");
}

#[tokio::test]
async fn every_fault_ends_in_exactly_one_capture_and_no_idempotency_error() {
    let faults = [
        Fault::ServerErrorAfterApplying,
        Fault::DropAfterApplying,
        Fault::SlowAnswer(Duration::from_millis(600)),
        Fault::RateLimited,
    ];
    for fault in faults {
        let fake = StripeFake::start();
        let stripe = gateway(&fake);
        let intent = stripe.hold(hold("pm_card_visa", "call_f")).await.unwrap();
        fake.inject(Endpoint::Capture, fault);
        let result = stripe
            .capture(intent.id.clone(), 400, "tb:call:call_f:capture:v1".into())
            .await;
        match fault {
            // A stored 500 is replayed to every retry: the outcome stays
            // unknown until the object is read again.
            Fault::ServerErrorAfterApplying => assert!(
                result.as_ref().is_err_and(GatewayError::is_unknown),
                "{result:?}"
            ),
            _ => assert_eq!(
                result.as_ref().map(|i| i.amount_received),
                Ok(400),
                "{fault:?}"
            ),
        }
        let read = stripe.retrieve(intent.id.clone()).await.unwrap();
        assert_eq!(
            (read.status.as_str(), read.amount_received),
            ("succeeded", 400),
            "{fault:?}"
        );
        let requests = fake.requests();
        let captures: Vec<_> = requests
            .iter()
            .filter(|r| r.path.ends_with("/capture"))
            .collect();
        assert!(
            captures
                .iter()
                .all(|r| r.idempotency_key.as_deref() == Some("tb:call:call_f:capture:v1"))
        );
        assert!(
            requests.iter().all(|r| r.status != 400),
            "{fault:?}: an idempotency error: {requests:?}"
        );
        assert!(captures.len() >= 2, "{fault:?}: retried");
        if let Fault::SlowAnswer(_) = fault {
            assert!(
                captures.iter().any(|r| r.status == 409),
                "{fault:?}: the retry met the request in flight"
            );
        }
    }
}

#[tokio::test]
async fn stripe_should_retry_false_stops_the_retries() {
    let fake = StripeFake::start();
    let stripe = gateway(&fake);
    let intent = stripe.hold(hold("pm_card_visa", "call_n")).await.unwrap();
    fake.inject(Endpoint::Capture, Fault::ServerErrorDoNotRetry);
    let result = stripe
        .capture(intent.id.clone(), 400, "tb:call:call_n:capture:v1".into())
        .await;
    // Applied but answered 500 with "do not retry": one attempt, outcome
    // unknown until read back.
    assert!(
        result.as_ref().is_err_and(GatewayError::is_unknown),
        "{result:?}"
    );
    assert_eq!(
        fake.requests()
            .iter()
            .filter(|r| r.path.ends_with("/capture"))
            .count(),
        1
    );
    let read = stripe.retrieve(intent.id).await.unwrap();
    assert_eq!(read.status, "succeeded");
}

#[tokio::test]
async fn the_fake_refuses_a_key_reused_with_other_parameters() {
    let fake = StripeFake::start();
    let stripe = gateway(&fake);
    let intent = stripe.hold(hold("pm_card_visa", "call_k")).await.unwrap();
    fake.inject(Endpoint::Capture, Fault::ServerErrorAfterApplying);
    let _ = stripe
        .capture(intent.id.clone(), 400, "tb:key".into())
        .await;
    let error = stripe
        .capture(intent.id, 500, "tb:key".into())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, GatewayError::Refused { status: 400, kind, .. } if kind == "idempotency_error"),
        "{error:?}"
    );
}

/// The same requests against Stripe's own test mode, for an operator who
/// gives a test key, a customer and a card saved for off-session use (see
/// docs/settlement.md). Ignored by default; asked for, it fails rather than
/// pass without those.
#[tokio::test]
#[ignore = "needs a Stripe test-mode account: set STRIPE_TEST_KEY, STRIPE_TEST_CUSTOMER, STRIPE_TEST_PAYMENT_METHOD and run with --ignored"]
async fn against_stripe_test_mode_when_a_test_key_is_given() {
    let (Ok(key), Ok(customer), Ok(card)) = (
        std::env::var("STRIPE_TEST_KEY"),
        std::env::var("STRIPE_TEST_CUSTOMER"),
        std::env::var("STRIPE_TEST_PAYMENT_METHOD"),
    ) else {
        panic!(
            "set STRIPE_TEST_KEY, STRIPE_TEST_CUSTOMER and STRIPE_TEST_PAYMENT_METHOD to run against Stripe test mode"
        );
    };
    assert!(
        key.starts_with("sk_test_") || key.starts_with("rk_test_"),
        "only a test-mode key"
    );
    let stripe = StripeGateway::new(
        &key,
        "https://api.stripe.com",
        Duration::from_secs(20),
        RetryPolicy::default(),
    )
    .unwrap();
    let run = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let call = format!("call_suite_{run}");
    let mut request = hold(&card, &call);
    request.customer = customer.clone();
    let intent = stripe.hold(request).await.unwrap();
    assert_eq!(intent.status, "requires_capture");
    assert!(
        intent.capture_before.is_some(),
        "the card charge says until when the hold can be captured"
    );
    let read = stripe.retrieve(intent.id.clone()).await.unwrap();
    assert_eq!(read.amount_capturable, 1000);
    assert_eq!(read.capture_before, intent.capture_before);
    let found = stripe
        .find(customer, "call".into(), call.clone())
        .await
        .unwrap();
    assert_eq!(found.map(|i| i.id), Some(intent.id.clone()));
    let captured = stripe
        .capture(intent.id, 300, format!("tb:call:{call}:capture:v1"))
        .await
        .unwrap();
    assert_eq!(
        (captured.status.as_str(), captured.amount_received),
        ("succeeded", 300)
    );
}

#[tokio::test]
async fn the_fake_refuses_a_confirm_that_may_redirect_as_stripe_may() {
    // Stripe may refuse a server-side confirm that neither rules out
    // redirect-based methods nor gives a return_url; the fake does, so a
    // hold that forgets it fails here as it could in production.
    let fake = StripeFake::start();
    let form = "amount=1000&currency=jpy&capture_method=manual&confirm=true&off_session=true\
                &customer=cus_test&payment_method=pm_card_visa";
    let address: std::net::SocketAddr = fake
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let post = |body: String| {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        write!(
            stream,
            "POST /v1/payment_intents HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer sk_test_fake\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    let refused = post(form.to_owned());
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    assert!(refused.contains("return_url"), "{refused}");
    let pinned = post(format!(
        "{form}&automatic_payment_methods[enabled]=true&automatic_payment_methods[allow_redirects]=never"
    ));
    assert!(pinned.starts_with("HTTP/1.1 200"), "{pinned}");
    // Our gateway's holds pass.
    let stripe = gateway(&fake);
    stripe.hold(hold("pm_card_visa", "call_r")).await.unwrap();
}

/// A regular customer has more PaymentIntents than one page of a listing
/// holds (100): the lookup by metadata reads every page, so an old hold
/// whose answer was lost is still found.
#[tokio::test]
async fn a_hold_is_found_by_its_metadata_past_the_first_page() {
    let fake = StripeFake::start();
    let stripe = gateway(&fake);
    for n in 0..230 {
        stripe
            .hold(hold("pm_card_visa", &format!("call_{n}")))
            .await
            .unwrap();
    }
    let oldest = stripe
        .find("cus_test".into(), "call".into(), "call_0".into())
        .await
        .unwrap()
        .expect("the oldest hold, on the third page");
    assert_eq!(oldest.id, "pi_fake000001");
    let missing = stripe
        .find("cus_test".into(), "call".into(), "call_none".into())
        .await
        .unwrap();
    assert_eq!(missing, None);
    let pages = fake
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/v1/payment_intents")
        .count();
    assert_eq!(pages, 6, "three pages per lookup");
}
