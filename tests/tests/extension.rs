//! Extension blocks end to end: the real daemon, SIPp as both phones, and
//! the Stripe fake as Stripe. A booking that extends automatically holds
//! the card block by block before anyone is warned, and is captured block
//! by block after the call; a card that cannot take the next block gets
//! the warning and time-up at the end of the last block it held.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::stripe::*;
use common::*;
use tollbridge_e2e::stripe_fake::{Endpoint, Fault, StripeFake};

/// A daemon charging through `fake`, warning 3 s before the paid time
/// ends, with a media timeout longer than the calls (the phones are
/// silent).
fn daemon_with_warnings(fake: &StripeFake) -> Daemon {
    start_daemon_sections(
        "ring_timeout = \"10s\"",
        "60s",
        &format!(
            "[stripe]\nsecret_key = \"sk_test_fake\"\napi_base = \"{}\"\nrequest_timeout = \"1s\"\n\n[prompts]\nwarning_before = \"3s\"\n",
            fake.url()
        ),
    )
}

/// A call from caller 1, booked at ¥1,200 a minute for `cap_seconds` on
/// `card` and extending by 10 s blocks up to 30 s, under way: the booking
/// and both phones (the caller waits for the BYE at the cap).
fn extending_call(daemon: &Daemon, card: &str, cap_seconds: u32) -> (String, SippPeer, SippPeer) {
    let expert = expert("expert_answers.xml", "40002", &[]);
    let mut booking = card_booking(&caller_id(1), card, &expert_uri(&expert));
    booking["cap_seconds"] = json!(cap_seconds);
    booking["extension"] = json!({"mode": "auto", "block_seconds": 10, "max_seconds": 30});
    let booking = create_booking(daemon, &booking);
    let caller = caller(
        daemon,
        "caller_waits_bye.xml",
        CALLER_PREFIX,
        "40000",
        "0 96",
        &[],
    );
    (booking, caller, expert)
}

/// [`extending_call`] with a 10 s cap, to its end: the call once it and
/// every settlement of it are done.
fn extended_call(daemon: &Daemon, card: &str) -> Value {
    let (booking, caller, expert) = extending_call(daemon, card, 10);
    assert_passed("caller (BYE at the cap)", caller);
    assert_passed("expert (BYE at the cap)", expert);
    settled(daemon, &booking)
}

/// The booking's call, once it ended and every settlement row of it is
/// done, a capture among them.
fn settled(daemon: &Daemon, booking: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = daemon.api("GET", &format!("/v1/calls?booking={booking}"), TOKEN, None);
        let call = body["calls"][0].clone();
        let settled = !call["ended_at"].is_null()
            && call["settlements"].as_array().is_some_and(|rows| {
                rows.iter().any(|r| r["operation"] == "capture")
                    && rows
                        .iter()
                        .all(|r| matches!(r["state"].as_str(), Some("succeeded" | "failed")))
            });
        if settled {
            return call;
        }
        assert!(Instant::now() < deadline, "not settled: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The call's settlement rows as (operation, key suffix, state, amount).
fn rows(call: &Value) -> Vec<(String, String, String, i64)> {
    let prefix = format!("tb:call:{}:", call["id"].as_str().unwrap());
    call["settlements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["operation"].as_str().unwrap().to_owned(),
                r["idempotency_key"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches(&prefix)
                    .to_owned(),
                r["state"].as_str().unwrap().to_owned(),
                r["amount"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn row(operation: &str, key: &str, state: &str, amount: i64) -> (String, String, String, i64) {
    (operation.into(), key.into(), state.into(), amount)
}

/// Where in the call's events the warning was played, and how often.
fn warnings(call: &Value) -> Vec<usize> {
    details(call)
        .iter()
        .enumerate()
        .filter(|(_, d)| d.as_str() == "warning played to both parties")
        .map(|(i, _)| i)
        .collect()
}

fn position(call: &Value, detail: &str) -> usize {
    details(call)
        .iter()
        .position(|d| d == detail)
        .unwrap_or_else(|| panic!("no event {detail:?} in {:?}", details(call)))
}

#[test]
fn three_blocks_are_held_captured_and_nobody_is_warned_before_the_last() {
    let fake = StripeFake::start();
    let daemon = daemon_with_warnings(&fake);
    let call = extended_call(&daemon, "pm_card_visa");
    assert_eq!(call["end_reason"], "cap-reached");
    assert_eq!(call["talk_ms"], 30_000, "three 10 s blocks");
    assert_eq!(call["amount"], 600, "30 s at ¥1,200 a minute");
    assert_eq!(call["charged"], 600);
    assert_eq!(
        rows(&call),
        [
            row("authorize", "authorize:v1", "succeeded", 200),
            row("authorize", "authorize-2:v1", "succeeded", 200),
            row("authorize", "authorize-3:v1", "succeeded", 200),
            row("capture", "capture:v1", "succeeded", 200),
            row("capture", "capture-2:v1", "succeeded", 200),
            row("capture", "capture-3:v1", "succeeded", 200),
        ]
    );
    // One warning, after the last block moved the cap.
    let last_block = position(&call, "paid time extended to 30 s (block 3)");
    assert!(position(&call, "paid time extended to 20 s (block 2)") < last_block);
    let warned = warnings(&call);
    assert_eq!(warned.len(), 1, "{:?}", details(&call));
    assert!(warned[0] > last_block, "{:?}", details(&call));
    // Stripe saw three holds and three captures, each hold its own
    // PaymentIntent found again by its own key.
    let requests = fake.requests();
    let holds = posts(&requests, "/v1/payment_intents");
    assert_eq!(holds.len(), 3);
    let call_id = call["id"].as_str().unwrap();
    let hold_keys: Vec<&str> = holds
        .iter()
        .map(|h| param(h, "metadata[hold]").unwrap())
        .collect();
    assert_eq!(
        hold_keys,
        [
            format!("tb:call:{call_id}:authorize:v1"),
            format!("tb:call:{call_id}:authorize-2:v1"),
            format!("tb:call:{call_id}:authorize-3:v1"),
        ]
    );
    let captures = posts(&requests, "/capture");
    assert_eq!(captures.len(), 3);
    let captured: i64 = fake
        .intents()
        .iter()
        .filter_map(|i| i["amount_received"].as_i64())
        .sum();
    assert_eq!(captured, 600, "captured exactly the rated amount in all");
    assert!(requests.iter().all(|r| r.status != 400));
    // The platform hears of each block.
    let (_, events) = daemon.api(
        "GET",
        &format!(
            "/v1/events?booking={}&type=call.extended",
            call["booking"].as_str().unwrap()
        ),
        TOKEN,
        None,
    );
    let caps: Vec<i64> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["body"]["data"]["cap_seconds"].as_i64().unwrap())
        .collect();
    assert_eq!(caps, [20, 30], "{events}");
}

#[test]
fn a_card_that_declines_the_third_block_is_warned_and_cut_at_the_end_of_the_second() {
    let fake = StripeFake::start();
    // Room for two blocks of ¥200 on hold, not three.
    fake.set_card_limit("pm_card_visa", 400);
    let daemon = daemon_with_warnings(&fake);
    let call = extended_call(&daemon, "pm_card_visa");
    assert_eq!(call["end_reason"], "cap-reached");
    assert_eq!(call["talk_ms"], 20_000, "two blocks");
    assert_eq!(call["amount"], 400);
    assert_eq!(call["charged"], 400);
    assert_eq!(
        rows(&call),
        [
            row("authorize", "authorize:v1", "succeeded", 200),
            row("authorize", "authorize-2:v1", "succeeded", 200),
            row("authorize", "authorize-3:v1", "failed", 200),
            row("capture", "capture:v1", "succeeded", 200),
            row("capture", "capture-2:v1", "succeeded", 200),
        ]
    );
    let declined = position(&call, "paid time not extended (block 3): card_declined");
    let warned = warnings(&call);
    assert_eq!(warned.len(), 1, "{:?}", details(&call));
    assert!(warned[0] > declined, "{:?}", details(&call));
    assert!(position(&call, "time-up played to both parties") > warned[0]);
    assert_eq!(posts(&fake.requests(), "/capture").len(), 2);
}

#[test]
fn a_daemon_killed_while_stripe_answers_an_extension_hold_holds_it_once_and_releases_it() {
    let fake = StripeFake::start();
    let daemon = daemon_with_warnings(&fake);
    // A 20 s cap: the second block is held about 5 s into the call.
    let (booking, caller, expert) = extending_call(&daemon, "pm_card_visa", 20);
    let wait_for_holds = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while fake.intents().len() < n {
            assert!(
                Instant::now() < deadline,
                "no hold {n}: {:?}",
                fake.requests()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for_holds(1);
    // Stripe places the block's hold and answers 10 s later: the daemon
    // dies in between, its row committed and the request sent.
    fake.inject(Endpoint::Create, Fault::SlowAnswer(Duration::from_secs(10)));
    wait_for_holds(2);
    let daemon = daemon.crash_and_restart();
    drop((caller, expert));
    let call = settled(&daemon, &booking);
    assert_eq!(call["end_reason"], "recovered", "{call}");
    let amount = call["amount"].as_i64().unwrap();
    assert!(amount > 0 && amount <= 400, "{call}");
    // Found again by its key after the restart, never placed twice; the
    // call talked on the first hold only, so the block is released.
    let call_id = call["id"].as_str().unwrap();
    let block_key = format!("tb:call:{call_id}:authorize-2:v1");
    let requests = fake.requests();
    let creates = posts(&requests, "/v1/payment_intents");
    assert_eq!(
        creates
            .iter()
            .filter(|r| r.idempotency_key.as_deref() == Some(block_key.as_str()))
            .count(),
        1,
        "the block's hold was sent once"
    );
    assert_eq!(fake.intents().len(), 2, "two holds in all");
    assert_eq!(
        rows(&call),
        [
            row("authorize", "authorize:v1", "succeeded", 400),
            row("authorize", "authorize-2:v1", "succeeded", 200),
            row("capture", "capture:v1", "succeeded", amount),
            row("cancel", "cancel-2:v1", "succeeded", 0),
        ]
    );
    let intents = fake.intents();
    let block = intents
        .iter()
        .find(|i| i["metadata"]["hold"] == block_key.as_str())
        .unwrap();
    assert_eq!(block["status"], "canceled", "{block}");
    let first = intents
        .iter()
        .find(|i| i["id"] == call["payment_intent"])
        .unwrap();
    assert_eq!(first["amount_received"], amount);
    assert_eq!(call["charged"], amount);
}
