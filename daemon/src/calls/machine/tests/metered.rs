//! The meter and a talking call's end: caps, warnings and time-up, the
//! card hold that gates the bridge, silence, draining, the operator's
//! hang-up, progress.

use super::*;

/// A connected call with a cap: answered at 2 s.
fn capped(cap_seconds: u64) -> Harness {
    let mut h = Harness::new(CALLER_OFFER);
    h.feed(Input::Cap(Duration::from_secs(cap_seconds)), 0.1);
    h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.1);
    h.feed(Input::CalleePlaced(Ok("out-1".into())), 0.2);
    h.feed(Input::CalleeAnswered(callee_answer("0 101")), 2.0);
    h
}

fn plays(commands: &[Command]) -> Vec<(Side, PromptName, PromptMode)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Play(side, name, mode) => Some((*side, *name, *mode)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_hour_long_call_under_a_two_hour_cap_is_metered_to_the_millisecond() {
    let mut h = capped(7200);
    assert!(h.log.contains(&Command::ForwardUntil(h.at(7202.0))));
    // The first deadline is the warning, 6 s before the cap.
    assert_eq!(h.call.deadline(), Some(h.at(7196.0)));
    let out = h.feed(Input::CallerHungUp, 3602.25);
    assert!(plays(&out).is_empty());
    assert_eq!(h.end().talk, Duration::from_millis(3_600_250));
    assert_eq!(h.end().reason, "caller-hangup");
}

#[test]
fn at_the_cap_both_are_warned_told_and_hung_up() {
    // Cap 10 s, warning 6 s before (at 4 s of talk), time-up 2 s long.
    let mut h = capped(10);
    let answered = 2.0;
    assert_eq!(h.call.deadline(), Some(h.at(answered + 4.0)));
    assert!(h.tick(answered + 3.999).is_empty());
    let out = h.tick(answered + 4.0);
    assert_eq!(
        plays(&out),
        [
            (Side::Caller, PromptName::Warning, PromptMode::Mix),
            (Side::Callee, PromptName::Warning, PromptMode::Mix)
        ]
    );
    assert_eq!(
        h.call.deadline(),
        Some(h.at(answered + 8.0)),
        "time-up ends at the cap"
    );
    let out = h.tick(answered + 8.0);
    assert_eq!(
        plays(&out),
        [
            (Side::Caller, PromptName::TimeUp, PromptMode::Replace),
            (Side::Callee, PromptName::TimeUp, PromptMode::Replace)
        ]
    );
    assert_eq!(h.call.deadline(), Some(h.at(answered + 10.0)));
    // The timer fires 30 ms late: talk is still exactly the cap.
    let out = h.tick(answered + 10.030);
    assert!(has(&out, &Command::HangUpCaller) && has(&out, &Command::HangUpCallee));
    assert_eq!(out.last(), Some(&Command::Finish));
    let end = h.end();
    assert_eq!(
        (end.status, end.reason, end.talk),
        (Status::Completed, "cap-reached", Duration::from_secs(10))
    );
    // A BYE lost on one leg (its transaction times out) changes nothing.
    assert!(
        h.feed(Input::CalleeFailed("Timeout".into()), answered + 42.0)
            .is_empty()
    );
    assert_eq!(
        h.log
            .iter()
            .filter(|c| matches!(c, Command::RecordEnd(_)))
            .count(),
        1
    );
}

#[test]
fn a_hang_up_in_the_same_millisecond_as_the_cap_bills_the_cap() {
    let mut h = capped(10);
    // The BYE is handled before the cap's timer: the due timer runs first.
    let out = h.feed(Input::CallerHungUp, 12.0);
    assert_eq!(h.end().reason, "cap-reached");
    assert_eq!(h.end().talk, Duration::from_secs(10));
    assert!(has(&out, &Command::HangUpCallee));
    assert_eq!(
        h.log
            .iter()
            .filter(|c| matches!(c, Command::RecordEnd(_)))
            .count(),
        1
    );
    // One millisecond earlier it is the caller's hang-up, one ms short.
    let mut h = capped(10);
    h.feed(Input::CallerHungUp, 11.999);
    assert_eq!(
        (h.end().reason, h.end().talk),
        ("caller-hangup", Duration::from_millis(9999))
    );
}

#[test]
fn a_caller_hanging_up_during_the_warning_ends_the_call_there() {
    let mut h = capped(10);
    h.tick(6.0);
    let out = h.feed(Input::CallerHungUp, 7.0);
    assert!(plays(&out).is_empty(), "no time-up after the end");
    assert!(has(&out, &Command::HangUpCallee));
    assert_eq!(
        (h.end().reason, h.end().talk),
        ("caller-hangup", Duration::from_secs(5))
    );
    assert_eq!(h.call.deadline(), None);
}

#[test]
fn a_cap_shorter_than_the_warning_lead_skips_the_warning() {
    let mut h = capped(5);
    assert_eq!(h.call.deadline(), Some(h.at(5.0)), "time-up at 3 s of talk");
    let out = h.tick(5.0);
    assert_eq!(plays(&out).len(), 2);
    assert!(
        plays(&out)
            .iter()
            .all(|(_, name, _)| *name == PromptName::TimeUp)
    );
    h.tick(7.0);
    assert_eq!(h.end().talk, Duration::from_secs(5));
    // A cap shorter than the time-up prompt plays it from the answer.
    let h = capped(1);
    assert_eq!(h.call.deadline(), Some(h.at(2.0)));
}

#[test]
fn the_parties_are_bridged_only_once_the_hold_succeeds_and_its_cover_caps_the_call() {
    let mut h = Harness::new(CALLER_OFFER);
    h.feed(Input::Cap(Duration::from_secs(600)), 0.1);
    h.feed(Input::HoldPending, 0.1);
    h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.1);
    h.feed(Input::CalleePlaced(Ok("out-1".into())), 0.2);
    // The expert answers first: the caller keeps ringing, nobody talks.
    let out = h.feed(Input::CalleeAnswered(callee_answer("0 101")), 1.0);
    assert!(
        !out.iter()
            .any(|c| matches!(c, Command::AnswerCaller(_) | Command::ForwardUntil(_))),
        "{out:?}"
    );
    assert!(!h.statuses().contains(&"in-progress"));
    // The hold covers 300 s: bridged now, capped at 300 s from now.
    let out = h.feed(Input::HoldApproved(Duration::from_secs(300)), 2.5);
    assert!(out.iter().any(|c| matches!(c, Command::AnswerCaller(_))));
    assert!(has(&out, &Command::ForwardUntil(h.at(302.5))));
    h.feed(Input::CallerHungUp, 12.5);
    assert_eq!(
        h.end().talk,
        Duration::from_secs(10),
        "talk starts at the bridge"
    );
}

#[test]
fn a_hold_approved_while_ringing_changes_nothing_but_the_cap() {
    let mut h = Harness::new(CALLER_OFFER);
    h.feed(Input::Cap(Duration::from_secs(60)), 0.1);
    h.feed(Input::HoldPending, 0.1);
    h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.1);
    h.feed(Input::HoldApproved(Duration::from_secs(600)), 0.5);
    let out = h.feed(Input::CalleeAnswered(callee_answer("0 101")), 1.0);
    assert!(out.iter().any(|c| matches!(c, Command::AnswerCaller(_))));
    assert!(
        has(&out, &Command::ForwardUntil(h.at(61.0))),
        "the booking's cap is the smaller"
    );
}

#[test]
fn a_declined_hold_tells_the_caller_ends_the_expert_and_bridges_nobody() {
    let mut h = Harness::new(CALLER_OFFER);
    h.feed(Input::Cap(Duration::from_secs(600)), 0.1);
    h.feed(Input::HoldPending, 0.1);
    h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.1);
    h.feed(Input::CalleePlaced(Ok("out-1".into())), 0.2);
    h.feed(Input::CalleeRinging(None), 0.3);
    let out = h.feed(Input::HoldDeclined("card_declined".into()), 1.0);
    assert!(
        out.iter().any(|c| matches!(c, Command::AnswerCaller(_))),
        "answered to hear why"
    );
    assert!(has(
        &out,
        &Command::Play(
            Side::Caller,
            PromptName::PaymentDeclined,
            PromptMode::Replace
        )
    ));
    assert!(has(&out, &Command::HangUpCallee));
    assert!(!has(&out, &Command::HangUpCaller), "after the prompt");
    let end = h.end();
    assert_eq!(
        (end.status, end.reason, end.connected),
        (Status::Failed, "payment-declined", false)
    );
    assert!(!h.statuses().contains(&"in-progress"));
    let out = h.tick(4.0);
    assert_eq!(out, vec![Command::HangUpCaller, Command::Finish]);
}

#[test]
fn a_party_that_vanishes_is_billed_to_its_last_packet_not_the_timeout() {
    // Answered at 2 s; the caller's RTP stops at 14.5 s (no BYE); the
    // relay reports it 30 s later.
    let mut h = Harness::connected();
    let last = h.at(14.5);
    let out = h.feed(Input::MediaInactive(quiet(Side::Caller, Some(last))), 44.5);
    assert!(has(&out, &Command::HangUpCaller) && has(&out, &Command::HangUpCallee));
    let end = h.end();
    assert_eq!(
        (end.status, end.reason, end.talk),
        (
            Status::Completed,
            "media-timeout",
            Duration::from_millis(12_500)
        )
    );
    let detail = last_detail(&h);
    assert!(detail.contains("no RTP from the caller"), "{detail}");
    assert!(
        detail.contains("billed to its last packet, 12 s into the call"),
        "{detail}"
    );
    // A party never heard from at all: nothing billed, and the record
    // says its packets were dropped as foreign, not that none came.
    let mut h = Harness::connected();
    let foreign = Inactivity {
        side: Side::Callee,
        last_received: None,
        dropped_foreign: 1542,
    };
    h.feed(Input::MediaInactive(foreign), 32.0);
    assert_eq!(h.end().talk, Duration::ZERO);
    let detail = last_detail(&h);
    assert!(
        detail.contains("no RTP ever arrived from the callee"),
        "{detail}"
    );
    assert!(
        detail.contains("1542 packets from another source were dropped as foreign"),
        "{detail}"
    );
}

fn last_detail(h: &Harness) -> String {
    h.log
        .iter()
        .rev()
        .find_map(|c| match c {
            Command::Record(event) => event.detail.clone(),
            _ => None,
        })
        .unwrap_or_default()
}

#[test]
fn the_warning_ends_before_the_time_up_begins_whatever_the_lead() {
    // warning_before = 3 s with two 2 s prompts: the warning would start at
    // cap - 3 and the time-up at cap - 2. The warning moves to cap - 4.
    let short_lead = || {
        let mut s = settings();
        s.warning_before = Duration::from_secs(3);
        Harness {
            call: Call::new(s, CALLER_OFFER.as_bytes(), 42),
            start: Instant::now(),
            log: Vec::new(),
        }
    };
    let mut h = short_lead();
    h.feed(Input::Cap(Duration::from_secs(20)), 0.0);
    h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.1);
    h.feed(Input::CalleePlaced(Ok("out-1".into())), 0.2);
    h.feed(Input::CalleeAnswered(callee_answer("0 101")), 2.0);
    // Cap at 22 s: time-up 20–22 s, warning 18–20 s.
    assert_eq!(h.call.deadline(), Some(h.at(18.0)));
    let warning = plays(&h.tick(18.0));
    assert!(
        warning
            .iter()
            .all(|(_, name, _)| *name == PromptName::Warning)
    );
    assert_eq!(h.call.deadline(), Some(h.at(20.0)));
    let time_up = plays(&h.tick(20.0));
    assert!(
        time_up
            .iter()
            .all(|(_, name, _)| *name == PromptName::TimeUp)
    );
    // With no room for both (cap 3 s), the warning is left out.
    let mut h = short_lead();
    h.feed(Input::Cap(Duration::from_secs(3)), 0.0);
    h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.1);
    h.feed(Input::CalleeAnswered(callee_answer("0 101")), 2.0);
    h.tick(5.5);
    assert!(
        !plays(&h.log)
            .iter()
            .any(|(_, name, _)| *name == PromptName::Warning)
    );
}

#[test]
fn at_the_drain_deadline_a_talking_call_hears_time_up_and_ends_drained() {
    let mut h = capped(600);
    let out = h.feed(Input::Drain, 30.0);
    assert_eq!(
        plays(&out),
        [
            (Side::Caller, PromptName::TimeUp, PromptMode::Replace),
            (Side::Callee, PromptName::TimeUp, PromptMode::Replace)
        ]
    );
    assert!(has(&out, &Command::ForwardUntil(h.at(32.0))));
    let out = h.tick(32.0);
    assert!(has(&out, &Command::HangUpCaller) && has(&out, &Command::HangUpCallee));
    let end = h.end();
    assert_eq!(
        (end.status, end.reason, end.talk),
        (Status::Completed, "drained", Duration::from_secs(30))
    );
    // A call still ringing ends at once; the caller gets 503 so the trunk
    // can take it to another host.
    let mut h = Harness::new(CALLER_OFFER);
    h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.1);
    h.feed(Input::CalleePlaced(Ok("out-1".into())), 0.2);
    let out = h.feed(Input::Drain, 1.0);
    assert!(has(&out, &Command::RejectCaller { code: 503 }));
    assert!(has(&out, &Command::HangUpCallee));
    assert_eq!((h.end().reason, h.end().connected), ("drained", false));
}

#[test]
fn an_operator_hangs_up_a_talking_call_at_once_or_after_time_up() {
    // At once: BYE to both, billed to now.
    let mut h = capped(600);
    let out = h.feed(Input::HangUp { announce: false }, 12.5);
    assert!(has(&out, &Command::HangUpCaller) && has(&out, &Command::HangUpCallee));
    assert!(plays(&out).is_empty());
    let end = h.end();
    assert_eq!(
        (end.status, end.reason, end.talk, end.connected),
        (
            Status::Completed,
            "hung-up",
            Duration::from_millis(10_500),
            true
        )
    );
    // Announced: both hear time-up, the relay stops after it, then BYE.
    let mut h = capped(600);
    let out = h.feed(Input::HangUp { announce: true }, 12.0);
    assert_eq!(
        plays(&out),
        [
            (Side::Caller, PromptName::TimeUp, PromptMode::Replace),
            (Side::Callee, PromptName::TimeUp, PromptMode::Replace)
        ]
    );
    assert!(has(&out, &Command::ForwardUntil(h.at(14.0))));
    assert!(!has(&out, &Command::HangUpCaller));
    assert_eq!(h.call.progress(h.at(13.0)).phase, "ending");
    // A second announced request while the prompt plays changes nothing.
    assert!(h.feed(Input::HangUp { announce: true }, 13.0).is_empty());
    let out = h.tick(14.0);
    assert!(has(&out, &Command::HangUpCaller) && has(&out, &Command::HangUpCallee));
    let end = h.end();
    assert_eq!(
        (end.status, end.reason, end.talk),
        (Status::Completed, "hung-up", Duration::from_secs(12))
    );
    // Near the cap the cap wins, with its own reason.
    let mut h = capped(20);
    h.tick(20.5);
    assert!(
        plays(&h.feed(Input::HangUp { announce: true }, 21.0)).is_empty(),
        "the cap's own time-up is already playing"
    );
    h.tick(22.05);
    assert_eq!(h.end().reason, "cap-reached");
    // How late the meter was, for the cap precision metric.
    let lateness = h.end().cap_lateness.unwrap();
    assert!(
        (Duration::from_millis(49)..=Duration::from_millis(51)).contains(&lateness),
        "{lateness:?}"
    );
}

#[test]
fn an_operator_hangs_up_a_ringing_call_with_603() {
    let mut h = Harness::new(CALLER_OFFER);
    h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.1);
    h.feed(Input::CalleePlaced(Ok("out-1".into())), 0.2);
    assert_eq!(h.call.progress(h.at(0.5)).phase, "dialing");
    let out = h.feed(Input::HangUp { announce: true }, 1.0);
    assert!(has(&out, &Command::RejectCaller { code: 603 }));
    assert!(has(&out, &Command::HangUpCallee));
    let end = h.end();
    assert_eq!(
        (end.status, end.reason, end.connected),
        (Status::Canceled, "hung-up", false)
    );
    // After the end, a hang-up is nothing.
    assert!(h.feed(Input::HangUp { announce: false }, 2.0).is_empty());
}

#[test]
fn progress_shows_talk_and_the_time_left() {
    let mut h = capped(600);
    let progress = h.call.progress(h.at(62.0));
    assert_eq!(progress.phase, "talking");
    assert_eq!(progress.talk, Duration::from_secs(60));
    assert_eq!(progress.remaining, Some(Duration::from_secs(540)));
    assert_eq!(progress.codec, Some(tollbridge_media::sdp::Codec::Pcmu));
    h.feed(Input::CallerHungUp, 70.0);
    assert_eq!(h.call.progress(h.at(71.0)).phase, "ending");
    let ringing = Harness::new(CALLER_OFFER);
    let progress = ringing.call.progress(ringing.at(1.0));
    assert_eq!(
        (progress.phase, progress.talk, progress.remaining),
        ("routing", Duration::ZERO, None)
    );
}
