//! Extension blocks end to end: the real daemon, SIPp as both phones, and
//! the Stripe fake as Stripe. A booking that extends automatically holds
//! the card block by block before anyone is warned, and is captured block
//! by block after the call; a card that cannot take the next block gets
//! the warning and time-up at the end of the last block it held.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::heard::*;
use common::stripe::*;
use common::*;
use tollbridge_e2e::stripe_fake::{Endpoint, Fault, StripeFake};
use tollbridge_media::prompt::{PromptName, Prompts};
use tollbridge_media::sdp::Codec;

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
/// done.
fn settled(daemon: &Daemon, booking: &str) -> Value {
    settled_calls(daemon, booking).remove(0)
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
    // Each asked for incremental authorization; the card said it is not
    // available, so each block is a hold of its own (the portable path).
    for hold in &holds {
        assert_eq!(
            param(
                hold,
                "payment_method_options[card][request_incremental_authorization]"
            ),
            Some("if_available")
        );
    }
    assert!(posts(&requests, "/increment_authorization").is_empty());
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

/// Waits until the call of `booking` has an event saying `detail`; the call.
fn event_seen(daemon: &Daemon, booking: &str, detail: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = daemon.api("GET", &format!("/v1/calls?booking={booking}"), TOKEN, None);
        let call = body["calls"][0].clone();
        if details(&call).iter().any(|d| d == detail) {
            return call;
        }
        assert!(Instant::now() < deadline, "no {detail:?}: {body}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends RFC 4733 key `key` (event number) as the caller's phone would:
/// a start packet and three end packets, one RTP timestamp.
fn press(socket: &UdpSocket, relay: SocketAddr, key: u8, first_seq: u16) {
    for (i, end) in [false, true, true, true].into_iter().enumerate() {
        let flags = if end { 0x8a } else { 0x0a };
        let marker = if i == 0 { 0x80 } else { 0 };
        let mut packet = rtp(
            marker | 96,
            first_seq + i as u16,
            0x1111,
            &[key, flags, 0x03, 0x20],
        );
        packet[4..8].copy_from_slice(&90_000u32.to_be_bytes());
        socket.send_to(&packet, relay).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An ask-mode call from caller 1 (¥1,200 a minute, 15 s, blocks of one
/// minute up to 75 s) whose phones are the test's sockets, listening for
/// `listen_for` ([`heard_call`]).
fn asking_call(daemon: &Daemon, listen_for: Duration) -> HeardCall {
    heard_call(daemon, listen_for, |expert| {
        let mut booking = card_booking(&caller_id(1), "pm_card_visa", expert);
        booking["cap_seconds"] = json!(15);
        booking["extension"] = json!({"mode": "ask", "block_seconds": 60, "max_seconds": 75});
        booking
    })
}

const OFFERED: &str = "warning played to both parties; the caller was offered an extension";

#[test]
fn in_ask_mode_the_caller_takes_a_block_with_1_and_only_the_caller_hears_the_offer() {
    let fake = StripeFake::start();
    let daemon = daemon_with_warnings(&fake);
    let prompts = Prompts::built_in("en").unwrap();
    let offer = prompts.extend_offer(1).unwrap();
    let call = asking_call(&daemon, Duration::from_secs(17));
    event_seen(&daemon, &call.booking, OFFERED);
    // The caller hears the offer out, then presses 1 (a key during it
    // would cut it short: the outcome replaces it).
    std::thread::sleep(offer.duration());
    press(&call.caller_media, call.caller_relay, 1, call.caller_seq);
    let extended = event_seen(
        &daemon,
        &call.booking,
        "paid time extended to 75 s (block 2)",
    );
    assert!(
        details(&extended)
            .iter()
            .any(|d| d == "the caller pressed 1 to extend")
    );
    // Both listen on: the caller hears the outcome; then the operator ends it.
    let [caller_thread, expert_thread] = call.listeners;
    caller_thread.join().unwrap();
    expert_thread.join().unwrap();
    let id = extended["id"].as_str().unwrap();
    let (status, _) = daemon.api("POST", &format!("/v1/calls/{id}/hangup"), TOKEN, Some("{}"));
    assert_eq!(status, 202);
    assert_passed("caller", call.caller);
    assert_passed("expert", call.expert);

    let answered = parse_ms(extended["answered_at"].as_str().unwrap());
    let caller_heard = call.caller_heard.lock().unwrap();
    let expert_heard = call.expert_heard.lock().unwrap();
    // "To extend your call by one minute, press 1." to the caller, whole;
    // the usual warning to the expert; "extended" to the caller alone.
    heard_whole("caller", &caller_heard, &offer, answered);
    assert!(prompt_frames(&expert_heard, offer.encoded(Codec::Pcmu), answered).is_empty());
    heard_whole(
        "expert",
        &expert_heard,
        &prompts.get(PromptName::Warning),
        answered,
    );
    heard_whole(
        "caller",
        &caller_heard,
        &prompts.get(PromptName::Extended),
        answered,
    );
    let extended_prompt = prompts.get(PromptName::Extended);
    assert!(
        prompt_frames(
            &expert_heard,
            extended_prompt.encoded(Codec::Pcmu),
            answered
        )
        .is_empty()
    );
    drop((caller_heard, expert_heard));

    // Talked past the first 10 s on the second hold; both captured.
    let call = settled(&daemon, &call.booking);
    assert_eq!(call["end_reason"], "hung-up");
    let talk_ms = call["talk_ms"].as_i64().unwrap();
    assert!(
        talk_ms > 10_000,
        "talked {talk_ms} ms: past the first block"
    );
    let amount = call["amount"].as_i64().unwrap();
    let rows = rows(&call);
    assert_eq!(
        rows[..2],
        [
            row("authorize", "authorize:v1", "succeeded", 300),
            row("authorize", "authorize-2:v1", "succeeded", 1_200),
        ]
    );
    let captured: i64 = rows
        .iter()
        .filter(|r| r.0 == "capture" && r.2 == "succeeded")
        .map(|r| r.3)
        .sum();
    assert_eq!((captured, call["charged"].as_i64()), (amount, Some(amount)));
    assert_eq!(
        posts(&fake.requests(), "/capture").len(),
        2,
        "one per hold: {rows:?}"
    );
}

#[test]
fn in_ask_mode_a_caller_who_presses_nothing_is_cut_at_the_cap() {
    let fake = StripeFake::start();
    let daemon = daemon_with_warnings(&fake);
    let call = asking_call(&daemon, Duration::from_secs(1));
    // A key that is not 1 extends nothing.
    event_seen(&daemon, &call.booking, OFFERED);
    press(&call.caller_media, call.caller_relay, 2, call.caller_seq);
    assert_passed("caller (BYE at the cap)", call.caller);
    assert_passed("expert (BYE at the cap)", call.expert);
    let call = settled(&daemon, &call.booking);
    assert_eq!(call["end_reason"], "cap-reached");
    assert_eq!(call["talk_ms"], 15_000);
    assert_eq!(
        rows(&call),
        [
            row("authorize", "authorize:v1", "succeeded", 300),
            row("capture", "capture:v1", "succeeded", 300),
        ]
    );
    assert_eq!(posts(&fake.requests(), "/v1/payment_intents").len(), 1);
}

#[test]
fn where_the_card_allows_it_blocks_raise_the_first_hold_and_one_capture_takes_all() {
    let fake = StripeFake::start();
    fake.allow_incremental("pm_card_visa");
    let daemon = daemon_with_warnings(&fake);
    let call = extended_call(&daemon, "pm_card_visa");
    assert_eq!(call["talk_ms"], 30_000);
    assert_eq!(call["charged"], 600);
    assert_eq!(
        rows(&call),
        [
            row("authorize", "authorize:v1", "succeeded", 200),
            row("increment", "increment-2:v1", "succeeded", 400),
            row("increment", "increment-3:v1", "succeeded", 600),
            row("capture", "capture:v1", "succeeded", 600),
        ]
    );
    let requests = fake.requests();
    assert_eq!(posts(&requests, "/v1/payment_intents").len(), 1, "one hold");
    let raised: Vec<&str> = posts(&requests, "/increment_authorization")
        .iter()
        .map(|r| param(r, "amount").unwrap())
        .collect();
    assert_eq!(raised, ["400", "600"], "each the new total");
    let intents = fake.intents();
    assert_eq!(intents.len(), 1);
    assert_eq!(intents[0]["amount_received"], 600);
}

#[test]
fn a_declined_increment_leaves_the_warning_and_time_up_at_the_end_of_the_second_block() {
    let fake = StripeFake::start();
    fake.allow_incremental("pm_card_visa");
    fake.set_card_limit("pm_card_visa", 400);
    let daemon = daemon_with_warnings(&fake);
    let call = extended_call(&daemon, "pm_card_visa");
    assert_eq!(call["end_reason"], "cap-reached");
    assert_eq!(call["talk_ms"], 20_000);
    assert_eq!(
        rows(&call),
        [
            row("authorize", "authorize:v1", "succeeded", 200),
            row("increment", "increment-2:v1", "succeeded", 400),
            row("increment", "increment-3:v1", "failed", 600),
            row("capture", "capture:v1", "succeeded", 400),
        ]
    );
    let warned = warnings(&call);
    assert_eq!(warned.len(), 1, "{:?}", details(&call));
    assert!(warned[0] > position(&call, "paid time not extended (block 3): card_declined"));
    let intents = fake.intents();
    assert_eq!(
        (intents.len(), &intents[0]["amount_received"]),
        (1, &json!(400))
    );
}

#[test]
fn a_daemon_killed_while_stripe_answers_an_increment_raises_the_hold_once() {
    let fake = StripeFake::start();
    fake.allow_incremental("pm_card_visa");
    let daemon = daemon_with_warnings(&fake);
    let (booking, caller, expert) = extending_call(&daemon, "pm_card_visa", 20);
    // Stripe raises the hold and answers 10 s later: the daemon dies in
    // between, its increment row committed and the request sent.
    fake.inject(
        Endpoint::Increment,
        Fault::SlowAnswer(Duration::from_secs(10)),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.intents().first().and_then(|i| i["amount"].as_i64()) != Some(600) {
        assert!(
            Instant::now() < deadline,
            "never raised: {:?}",
            fake.intents()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let daemon = daemon.crash_and_restart();
    drop((caller, expert));
    let call = settled(&daemon, &booking);
    assert_eq!(call["end_reason"], "recovered", "{call}");
    let amount = call["amount"].as_i64().unwrap();
    // Read back after the restart (raised), never sent twice; the call's
    // one capture takes what it talked.
    assert_eq!(
        rows(&call),
        [
            row("authorize", "authorize:v1", "succeeded", 400),
            row("increment", "increment-2:v1", "succeeded", 600),
            row("capture", "capture:v1", "succeeded", amount),
        ]
    );
    let requests = fake.requests();
    let raises = posts(&requests, "/increment_authorization");
    assert!(
        raises.iter().all(|r| r.status == 200 || r.status == 409),
        "{raises:?}"
    );
    assert_eq!(fake.intents()[0]["amount_received"], amount);
    assert_eq!(fake.intents().len(), 1);
}
