//! What the settlement tests share: a daemon charging through the Stripe
//! fake, card bookings, calls the caller ends, and reading what the fake
//! was sent.

use tollbridge_e2e::stripe_fake::{Recorded, StripeFake};

use super::*;

/// ¥1,200 a minute: 3 s of talk costs ¥60, above Stripe's ¥50 minimum.
pub const PRICE: i64 = 1200;

pub const WEBHOOK_SECRET: &str = "whsec_test_secret";

pub fn start(fake: &StripeFake) -> Daemon {
    start_daemon_sections(
        "ring_timeout = \"10s\"",
        "30s",
        &format!(
            "[stripe]\nsecret_key = \"sk_test_fake\"\napi_base = \"{}\"\nrequest_timeout = \"1s\"\nwebhook_secret = \"{WEBHOOK_SECRET}\"\n",
            fake.url()
        ),
    )
}

/// A booking with a card, ¥1,200 a minute, 600 s cap.
pub fn book_with_card(daemon: &Daemon, caller: &str, card: &str, expert: &str) -> String {
    create_booking(daemon, &card_booking(caller, card, expert))
}

/// [`booking_json`] at [`PRICE`] with a card.
pub fn card_booking(caller: &str, card: &str, expert: &str) -> Value {
    let mut booking = booking_json(&[caller.to_owned()], expert, 600);
    booking["tariff"]["price_per_minute"] = json!(PRICE);
    booking["stripe"] = json!({"customer": "cus_test", "payment_method": card});
    booking
}

/// Runs one call of about `talk_ms` that the caller ends.
pub fn call_and_hang_up(daemon: &Daemon, caller_prefix: &str, calls: u32, talk_ms: u32) -> String {
    let caller = caller(
        daemon,
        "caller_hangs_up.xml",
        caller_prefix,
        "40000",
        "0 96",
        &[
            "-d",
            &talk_ms.to_string(),
            "-m",
            &calls.to_string(),
            "-r",
            "10",
            "-l",
            "20",
        ],
    );
    assert_passed("caller", caller)
}

pub fn posts<'a>(requests: &'a [Recorded], suffix: &str) -> Vec<&'a Recorded> {
    requests
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with(suffix))
        .collect()
}

pub fn param<'a>(request: &'a Recorded, name: &str) -> Option<&'a str> {
    request
        .params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Waits until every settlement of `booking`'s calls is settled, then
/// returns the calls.
pub fn settled_calls(daemon: &Daemon, booking: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = daemon.api("GET", &format!("/v1/calls?booking={booking}"), TOKEN, None);
        let calls = body["calls"].as_array().cloned().unwrap_or_default();
        let open = calls.iter().any(|call| {
            call["ended_at"].is_null()
                || call["settlements"].as_array().is_none_or(|s| {
                    s.iter()
                        .any(|row| !matches!(row["state"].as_str(), Some("succeeded" | "failed")))
                })
        });
        if !calls.is_empty() && !open {
            return calls;
        }
        assert!(Instant::now() < deadline, "settlements still open: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
