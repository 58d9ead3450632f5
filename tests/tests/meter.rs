//! The meter end to end: the cap that both parties hear, and a crash in
//! the middle of a call. The daemon is real, SIPp does the signalling on
//! both sides, and the test's own sockets are the parties' phones so every
//! prompt frame can be compared with the encoded prompt.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::SystemTime;

use common::heard::*;
use common::*;
use tollbridge_media::prompt::{PromptName, Prompts};
use tollbridge_media::sdp::Codec;

/// A booking in Japanese: both parties hear the built-in Japanese warning
/// and time-up, timed by their lengths, and none of the English ones.
#[test]
fn a_japanese_booking_is_warned_and_cut_in_japanese() {
    let daemon = start_daemon_sections(
        "ring_timeout = \"10s\"",
        "30s",
        "[prompts]\nwarning_before = \"5s\"\n",
    );
    let japanese = Prompts::built_in("ja").unwrap();
    let english = Prompts::built_in("en").unwrap();
    let call = heard_call(&daemon, Duration::from_secs(12), |expert| {
        let mut booking = booking_json(&[caller_id(1)], expert, 10);
        booking["language"] = serde_json::json!("ja");
        booking
    });
    // Both stay quiet through the prompts after their first 1.5 s.
    let (call, caller_heard, expert_heard) = call.cut_at_the_cap(&daemon, 10000);
    let answered = parse_ms(call["answered_at"].as_str().unwrap());
    for (who, heard) in [("caller", &caller_heard), ("expert", &expert_heard)] {
        let heard = heard.lock().unwrap();
        for name in [PromptName::Warning, PromptName::TimeUp] {
            heard_whole(who, &heard, &japanese.get(name), answered);
            let english = english.get(name);
            assert!(
                prompt_frames(&heard, english.encoded(Codec::Pcmu), answered).is_empty(),
                "{who} heard the English {name:?}"
            );
        }
        // The Japanese time-up, timed by its own length, ends at the cap.
        let time_up = japanese.get(PromptName::TimeUp);
        let told = heard_whole(who, &heard, &time_up, answered);
        let (first, last) = (told[0].1, told.last().unwrap().1);
        let expected_first = 10_000 - time_up.duration().as_millis() as i64;
        assert!(
            (expected_first - 300..expected_first + 400).contains(&first),
            "{who}: time-up began at {first} ms, expected {expected_first}"
        );
        assert!(
            (9700..10400).contains(&last),
            "{who}: time-up ended at {last} ms"
        );
    }
}

#[test]
fn at_the_cap_both_parties_hear_the_prompts_get_bye_and_the_cap_is_billed() {
    let daemon = start_daemon_sections(
        "ring_timeout = \"10s\"",
        "30s",
        "[prompts]\nwarning_before = \"3s\"\n",
    );
    let prompts = Prompts::built_in("en").unwrap();
    let warning = prompts.get(PromptName::Warning);
    let time_up = prompts.get(PromptName::TimeUp);
    let call = heard_call(&daemon, Duration::from_secs(9), |expert| {
        booking_json(&[caller_id(1)], expert, 6)
    });
    // After their first 1.5 s both stay quiet through the warning; the
    // caller talks again from 5.5 s, across the cap.
    std::thread::sleep(Duration::from_millis(4000));
    talk(
        &call.caller_media,
        call.caller_relay,
        0x11,
        0x1111,
        call.caller_seq,
        Duration::from_millis(2000),
    );
    let (call, caller_heard, expert_heard) = call.cut_at_the_cap(&daemon, 6000);
    assert_eq!(call["billed_seconds"], 6);
    assert_eq!(call["amount"], 10, "ceil(6 s × ¥100 / 60 s)");
    assert_eq!(call["currency"], "jpy");
    assert_eq!(call["rating"]["price_per_minute"], 100);
    let answered = parse_ms(call["answered_at"].as_str().unwrap());
    let cap = answered + 6000;

    // warning_before = 3 s would start the warning at 3 s, inside the
    // time-up prompt's slot: it moves earlier so each is heard whole.
    let time_up_ms = time_up.duration().as_millis() as i64;
    let warning_ms = warning.duration().as_millis() as i64;
    let warning_at = (6000 - time_up_ms - warning_ms).min(3000);
    assert!(warning_at < 3000, "the prompts are long enough to overlap");
    for (who, heard) in [("caller", &caller_heard), ("expert", &expert_heard)] {
        let heard = heard.lock().unwrap();
        // The whole warning, from its first frame, in order, ending before
        // the time-up prompt begins.
        let warned = heard_whole(who, &heard, &warning, answered);
        assert_eq!(
            warned[0].0, 0,
            "{who}: the warning starts at its first frame"
        );
        assert!(
            (warning_at - 300..warning_at + 400).contains(&warned[0].1),
            "{who}: warning at {} ms, expected {warning_at}",
            warned[0].1
        );
        // The whole time-up prompt, ending at the cap.
        let told = heard_whole(who, &heard, &time_up, answered);
        assert!(
            warned.last().unwrap().1 < told[0].1,
            "{who}: the warning ended before the time-up began"
        );
        let last = told.last().unwrap().1;
        assert!(
            (5700..6400).contains(&last),
            "{who}: time-up ended at {last} ms"
        );
        // One stream: the prompt continues the SSRC and sequence numbers
        // the party was hearing.
        let first_prompt = heard
            .iter()
            .position(|(_, p)| p.len() == 172 && p[12..] == warning.encoded(Codec::Pcmu)[..160])
            .unwrap();
        let before = &heard[first_prompt - 1].1;
        let prompt = &heard[first_prompt].1;
        assert_eq!(prompt[8..12], before[8..12], "{who}: same SSRC");
        let seq = |p: &[u8]| u16::from_be_bytes([p[2], p[3]]);
        assert_eq!(
            seq(prompt),
            seq(before).wrapping_add(1),
            "{who}: next sequence number"
        );
        assert_eq!(
            prompt[1] & 0x80,
            0x80,
            "{who}: marker on the first prompt frame"
        );
    }
    // Nothing the caller said after the cap reached the expert.
    let expert_heard = expert_heard.lock().unwrap();
    let late: Vec<i64> = expert_heard
        .iter()
        .filter(|(_, p)| p.len() == 172 && p[12..].iter().all(|b| *b == 0x11))
        .map(|(at, _)| ms_since_epoch(*at) - cap)
        .filter(|after| *after > 15)
        .collect();
    assert!(
        late.is_empty(),
        "caller audio forwarded after the cap: {late:?} ms"
    );
    let details = event_details(&call);
    assert!(
        details.contains(&"warning played to both parties"),
        "{details:?}"
    );
    assert!(
        details.contains(&"time-up played to both parties"),
        "{details:?}"
    );
    let (_, metrics) = daemon.get("/metrics", None);
    assert!(
        metrics.contains("tollbridge_talk_seconds_total{currency=\"jpy\"} 6"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollbridge_billed_amount_total{currency=\"jpy\"} 10"),
        "{metrics}"
    );
    assert_no_ports_held(&daemon);
}

#[test]
fn a_call_killed_mid_talk_is_closed_at_restart_billed_up_to_its_last_checkpoint() {
    let daemon = start_daemon_sections(
        "ring_timeout = \"10s\"",
        "30s",
        "[billing]\ncheckpoint_interval = \"500ms\"\n",
    );
    let expert = expert("expert_answers.xml", "40002", &[]);
    let booking = book(&daemon, &[caller_id(1)], None, &expert_uri(&expert));
    let caller = caller(
        &daemon,
        "caller_waits_bye.xml",
        CALLER_PREFIX,
        "40000",
        "0 96",
        &[],
    );
    wait_relay(&caller, "SIP/2.0 200 OK");
    std::thread::sleep(Duration::from_millis(3300));
    let killed_at = ms_since_epoch(SystemTime::now());
    let daemon = daemon.crash_and_restart();
    drop((caller, expert));
    let (status, body) = daemon.api("GET", &format!("/v1/calls?booking={booking}"), TOKEN, None);
    assert_eq!(status, 200, "{body}");
    let call = &body["calls"][0];
    assert_eq!(call["end_reason"], "recovered", "{call}");
    assert_eq!(call["status"], "completed");
    let answered = parse_ms(call["answered_at"].as_str().unwrap());
    let actual = killed_at - answered;
    let billed_talk = call["talk_ms"].as_i64().unwrap();
    assert!(
        billed_talk <= actual,
        "billed {billed_talk} ms of {actual} ms talked: over-billed"
    );
    assert!(
        billed_talk >= actual - 500 - 1000,
        "billed {billed_talk} ms of {actual}: more than one interval (and 1 s of scheduling slack) lost"
    );
    let billed_seconds = call["billed_seconds"].as_i64().unwrap();
    assert_eq!(billed_seconds, (billed_talk + 999) / 1000);
    assert_eq!(call["amount"], (billed_seconds * 100 + 59) / 60);
    // Closed at start-up; the BYEs to its parties are noted as they are
    // answered, before or after that (the restart races them).
    let details = event_details(call);
    assert!(
        details.contains(&"closed at start-up: the daemon stopped during the call"),
        "{details:?}"
    );
    let (_, booking_now) = daemon.api("GET", &format!("/v1/bookings/{booking}"), TOKEN, None);
    assert_eq!(booking_now["state"], "active", "the booking is released");
    assert_eq!(booking_now["used_seconds"], billed_seconds);
    assert!(daemon.wait_for_log(
        "closed calls left open by a previous run",
        Duration::from_secs(2)
    ));
}
