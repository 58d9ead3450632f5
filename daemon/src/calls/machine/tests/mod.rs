#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use tollbridge_media::prompt::PromptName;
use tollbridge_media::sdp::Direction;
use tollbridge_media::stream::PromptMode;

mod extended;
mod metered;
mod recorded;
mod secured;

const CALLER_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0 8 96\r\na=rtpmap:96 telephone-event/8000\r\na=ptime:20\r\n";

fn callee_answer(pts: &str) -> Vec<u8> {
    format!(
        "v=0\r\no=- 2 2 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
m=audio 30000 RTP/AVP {pts}\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
    .into_bytes()
}

fn settings() -> Settings {
    Settings {
        ring_timeout: Duration::from_secs(30),
        media_timeout: Duration::from_secs(30),
        pin_first_digit: Duration::from_secs(10),
        pin_inter_digit: Duration::from_secs(5),
        pin_tries: 3,
        relay: [
            "203.0.113.1:20000".parse().unwrap(),
            "203.0.113.1:20002".parse().unwrap(),
        ],
        warning_before: Duration::from_secs(6),
        prompt_lengths: vec![
            (PromptName::Warning, Duration::from_secs(2)),
            (PromptName::TimeUp, Duration::from_secs(2)),
            (PromptName::Pin, Duration::from_secs(3)),
            (PromptName::WrongPin, Duration::from_secs(3)),
            (PromptName::NoBooking, Duration::from_secs(3)),
            (PromptName::CalleeUnavailable, Duration::from_secs(3)),
        ],
        caller_srtp: SrtpPolicy::Optional,
        srtp_keys: [
            MasterKey::from_inline(OUR_CALLER_KEY).unwrap(),
            MasterKey::from_inline(OUR_CALLEE_KEY).unwrap(),
        ],
    }
}

/// Our SRTP keys in the tests' calls.
const OUR_CALLER_KEY: &str = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk";
const OUR_CALLEE_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZmdoaWprbG1ub3BxcnN0";

struct Harness {
    call: Call,
    start: Instant,
    log: Vec<Command>,
}

impl Harness {
    fn new(offer: &str) -> Harness {
        Harness::with(settings(), offer)
    }

    fn with(settings: Settings, offer: &str) -> Harness {
        let mut harness = Harness {
            call: Call::new(settings, offer.as_bytes(), 42),
            start: Instant::now(),
            log: Vec::new(),
        };
        harness.drain();
        harness
    }

    fn at(&self, seconds: f64) -> Instant {
        self.start + Duration::from_secs_f64(seconds)
    }

    fn drain(&mut self) -> Vec<Command> {
        let mut out = Vec::new();
        while let Some(command) = self.call.poll() {
            out.push(command);
        }
        self.log.extend(out.iter().cloned());
        out
    }

    fn feed(&mut self, input: Input, seconds: f64) -> Vec<Command> {
        let now = self.at(seconds);
        self.call.handle(input, now);
        self.drain()
    }

    fn tick(&mut self, seconds: f64) -> Vec<Command> {
        let now = self.at(seconds);
        self.call.handle_timeout(now);
        self.drain()
    }

    fn end(&self) -> End {
        self.log
            .iter()
            .find_map(|c| match c {
                Command::RecordEnd(end) => Some(end.clone()),
                _ => None,
            })
            .expect("the call ended")
    }

    fn statuses(&self) -> Vec<&'static str> {
        self.log
            .iter()
            .filter_map(|c| match c {
                Command::Record(event) => Some(event.status.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Routed, placed, ringing with early media, answered at 2 s.
    fn connected() -> Harness {
        let mut harness = Harness::new(CALLER_OFFER);
        harness.feed(Input::Routed(Route::Booking("bk_1".into())), 0.1);
        harness.feed(Input::CalleePlaced(Ok("out-1".into())), 0.2);
        harness.feed(Input::CalleeRinging(Some(callee_answer("0 101"))), 0.5);
        harness.feed(Input::CalleeAnswered(callee_answer("0 101")), 2.0);
        harness
    }
}

/// A party gone quiet, its last RTP at `last` seconds (none if `None`).
fn quiet(side: Side, last: Option<Instant>) -> Inactivity {
    Inactivity {
        side,
        last_received: last,
        dropped_foreign: 0,
    }
}

/// The prompts played, to whom, in order.
fn plays_to(commands: &[Command]) -> Vec<(Side, PromptName)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Play(side, name, _) => Some((*side, *name)),
            _ => None,
        })
        .collect()
}

fn has(commands: &[Command], wanted: &Command) -> bool {
    commands.contains(wanted)
}

fn sdp_of(commands: &[Command], pick: fn(&Command) -> Option<&Vec<u8>>) -> String {
    String::from_utf8(
        commands
            .iter()
            .find_map(pick)
            .cloned()
            .expect("an SDP body"),
    )
    .unwrap()
}

#[test]
fn a_call_is_dialled_rung_answered_and_ended_by_the_caller() {
    let mut h = Harness::new(CALLER_OFFER);
    let out = h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.1);
    assert!(has(&out, &Command::RecordBooking("bk_1".into())));
    let offer = sdp_of(&out, |c| match c {
        Command::DialCallee(body) => Some(body),
        _ => None,
    });
    assert!(offer.contains("c=IN IP4 203.0.113.1"), "{offer}");
    assert!(offer.contains("m=audio 20002 RTP/AVP 0 8 96"), "{offer}");
    assert_eq!(h.call.deadline(), Some(h.at(30.1)));
    h.feed(Input::CalleePlaced(Ok("out-1".into())), 0.2);
    let ringing = h.feed(Input::CalleeRinging(Some(callee_answer("0 101"))), 0.5);
    let early = sdp_of(&ringing, |c| match c {
        Command::RingCaller(Some(body)) => Some(body),
        _ => None,
    });
    assert!(early.contains("m=audio 20000 RTP/AVP 0 96"), "{early}");
    assert!(ringing.iter().any(
        |c| matches!(c, Command::SetPeer(Side::Callee, peer) if peer.telephone_event == Some(101))
    ));
    let answered = h.feed(Input::CalleeAnswered(callee_answer("0 101")), 2.0);
    let final_answer = sdp_of(&answered, |c| match c {
        Command::AnswerCaller(body) => Some(body),
        _ => None,
    });
    assert_eq!(final_answer, early, "one answer for 183 and 200");
    assert!(has(
        &answered,
        &Command::WatchMedia(Duration::from_secs(30))
    ));
    assert_eq!(h.call.deadline(), None, "ring timer off");
    h.feed(Input::CallerConfirmed, 2.1);
    let out = h.feed(Input::CallerHungUp, 3602.0);
    assert!(has(&out, &Command::HangUpCallee));
    assert!(
        !has(&out, &Command::HangUpCaller),
        "the caller is gone already"
    );
    assert_eq!(out.last(), Some(&Command::Finish));
    let end = h.end();
    assert_eq!(
        (end.status, end.reason, end.talk, end.connected),
        (
            Status::Completed,
            "caller-hangup",
            Duration::from_secs(3600),
            true
        )
    );
    assert_eq!(
        h.statuses(),
        ["queued", "initiated", "ringing", "in-progress", "completed"]
    );
    assert!(h.call.is_over());
}

#[test]
fn a_talking_call_holds_no_command_queue_between_bursts() {
    let mut h = Harness::connected();
    assert!(h.log.len() > 4, "the answer was a burst of commands");
    assert_eq!(h.call.commands.capacity(), 0);
    // The next burst is queued and delivered in order as before.
    let out = h.feed(Input::CalleeHungUp, 12.5);
    assert!(has(&out, &Command::HangUpCaller));
    assert_eq!(h.call.commands.capacity(), 0);
}

#[test]
fn the_callee_hanging_up_ends_the_caller() {
    let mut h = Harness::connected();
    let out = h.feed(Input::CalleeHungUp, 12.5);
    assert!(has(&out, &Command::HangUpCaller));
    assert!(!has(&out, &Command::HangUpCallee));
    assert_eq!(h.end().talk, Duration::from_millis(10_500));
    assert_eq!(h.end().reason, "callee-hangup");
}

#[test]
fn a_leg_that_dies_still_ends_the_other() {
    for (input, hang_up, reason) in [
        (
            Input::CallerFailed("Timeout".into()),
            Command::HangUpCallee,
            "caller-leg-failed",
        ),
        (
            Input::CalleeFailed("Timeout".into()),
            Command::HangUpCaller,
            "callee-leg-failed",
        ),
        (
            Input::MediaInactive(quiet(Side::Callee, None)),
            Command::HangUpCaller,
            "media-timeout",
        ),
    ] {
        let mut h = Harness::connected();
        let out = h.feed(input, 40.0);
        assert!(has(&out, &hang_up), "{reason}: {out:?}");
        assert_eq!(h.end().reason, reason);
        assert_eq!(h.end().status, Status::Completed);
    }
    // Media inactivity hangs up both.
    let mut h = Harness::connected();
    let out = h.feed(Input::MediaInactive(quiet(Side::Caller, None)), 40.0);
    assert!(has(&out, &Command::HangUpCaller) && has(&out, &Command::HangUpCallee));
}

#[test]
fn cancel_while_ringing_cancels_the_callee() {
    let mut h = Harness::new(CALLER_OFFER);
    h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.1);
    h.feed(Input::CalleeRinging(None), 0.5);
    let out = h.feed(Input::CallerCancelled, 3.0);
    assert!(has(&out, &Command::HangUpCallee));
    assert!(
        !out.iter()
            .any(|c| matches!(c, Command::RejectCaller { .. } | Command::HangUpCaller))
    );
    assert_eq!(
        (h.end().status, h.end().reason, h.end().connected),
        (Status::Canceled, "caller-cancel", false)
    );
    // A late answer from the callee changes nothing in the machine.
    assert!(
        h.feed(Input::CalleeAnswered(callee_answer("0")), 3.1)
            .is_empty()
    );
}

#[test]
fn callee_refusals_reach_the_caller_as_486_or_603_never_a_failover_code() {
    for code in (300..700u16).filter(|c| *c != 488 && *c != 606) {
        let mut h = Harness::new(CALLER_OFFER);
        h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.1);
        h.feed(Input::CalleePlaced(Ok("out-1".into())), 0.2);
        let out = h.feed(
            Input::CalleeRefused {
                code,
                twilio_error: None,
            },
            1.0,
        );
        let to_caller = out.iter().find_map(|c| match c {
            Command::RejectCaller { code } => Some(*code),
            _ => None,
        });
        let expected = if matches!(code, 486 | 600) { 486 } else { 603 };
        assert_eq!(to_caller, Some(expected), "callee {code}");
        assert!(!tollbridge_sip::reject::twilio_fails_over(expected));
        assert!(
            !has(&out, &Command::HangUpCallee),
            "a refused leg needs no CANCEL"
        );
    }
    let mut h = Harness::new(CALLER_OFFER);
    h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.1);
    h.feed(
        Input::CalleeRefused {
            code: 486,
            twilio_error: None,
        },
        1.0,
    );
    assert_eq!(
        (h.end().status, h.end().reason, h.end().sip_code),
        (Status::Busy, "callee-busy", Some(486))
    );
    let mut h = Harness::new(CALLER_OFFER);
    h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.1);
    h.feed(
        Input::CalleeRefused {
            code: 480,
            twilio_error: None,
        },
        1.0,
    );
    assert_eq!(h.end().status, Status::NoAnswer);
    // The trunk's own reason goes to the record.
    let mut h = Harness::new(CALLER_OFFER);
    h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.1);
    let out = h.feed(
        Input::CalleeRefused {
            code: 603,
            twilio_error: Some("10001".into()),
        },
        1.0,
    );
    assert!(has(&out, &Command::RejectCaller { code: 603 }));
    assert!(
        out.iter().any(|c| matches!(c, Command::Record(event)
            if event.detail.as_deref() == Some("the callee answered 603 (Twilio error 10001)"))),
        "{out:?}"
    );
}

#[test]
fn no_answer_within_the_ring_timeout_is_603_and_cancels_the_callee() {
    let mut h = Harness::new(CALLER_OFFER);
    h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.0);
    h.feed(Input::CalleePlaced(Ok("out-1".into())), 0.2);
    assert!(h.tick(29.9).is_empty(), "not yet");
    let out = h.tick(30.0);
    assert!(has(&out, &Command::RejectCaller { code: 603 }));
    assert!(has(&out, &Command::HangUpCallee));
    assert_eq!(
        (h.end().status, h.end().reason),
        (Status::NoAnswer, "no-answer")
    );
}

#[test]
fn an_unreachable_callee_is_603() {
    let mut h = Harness::new(CALLER_OFFER);
    h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.0);
    let out = h.feed(
        Input::CalleePlaced(Err("no response within 4 s".into())),
        4.0,
    );
    assert!(has(&out, &Command::RejectCaller { code: 603 }));
    assert!(!has(&out, &Command::HangUpCallee));
    assert_eq!(h.end().reason, "callee-unreachable");
}

#[test]
fn codec_mismatches_are_488() {
    // The caller offers only G.729: refused before anything is dialled.
    let g729 = CALLER_OFFER.replace("RTP/AVP 0 8 96", "RTP/AVP 18 96");
    let h = Harness::new(&g729);
    assert!(h.log.contains(&Command::RejectCaller { code: 488 }));
    assert!(!h.log.iter().any(|c| matches!(c, Command::DialCallee(_))));
    assert_eq!(h.end().reason, "no-common-codec");
    // No SDP at all (a delayed offer) is refused the same way.
    let h = Harness::new("");
    assert!(h.log.contains(&Command::RejectCaller { code: 488 }));
    // The callee answers with a codec we never offered: BYE it, 488 the caller.
    let pcmu_only = CALLER_OFFER.replace("RTP/AVP 0 8 96", "RTP/AVP 0 96");
    let mut h = Harness::new(&pcmu_only);
    h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.0);
    h.feed(Input::CalleePlaced(Ok("out-1".into())), 0.1);
    let out = h.feed(Input::CalleeAnswered(callee_answer("8")), 1.0);
    assert!(has(&out, &Command::RejectCaller { code: 488 }));
    assert!(has(&out, &Command::HangUpCallee));
}

#[test]
fn routing_refusals_use_the_edge_codes() {
    for (reason, code, status) in [
        (RejectReason::UnknownNumber, 404, Status::Failed),
        (RejectReason::NoBooking, 603, Status::Failed),
        (RejectReason::OutsideWindow, 603, Status::Failed),
        (RejectReason::BookingInCall, 486, Status::Busy),
    ] {
        let mut h = Harness::new(CALLER_OFFER);
        let out = h.feed(Input::Routed(Route::Refuse(reason)), 0.1);
        assert!(has(&out, &Command::RejectCaller { code }), "{reason:?}");
        assert_eq!(h.end().status, status);
        assert_eq!(out.last(), Some(&Command::Finish));
    }
}

#[test]
fn a_pin_is_collected_checked_and_retried_three_times() {
    let mut h = Harness::new(CALLER_OFFER);
    let out = h.feed(Input::Routed(Route::AskPin), 0.1);
    let answer = sdp_of(&out, |c| match c {
        Command::AnswerCaller(body) => Some(body),
        _ => None,
    });
    assert!(answer.contains("RTP/AVP 0 96"), "{answer}");
    for key in ['1', '2', '3'] {
        h.feed(Input::CallerKey(key), 1.0);
    }
    let out = h.feed(Input::CallerKey('#'), 1.5);
    assert!(has(&out, &Command::CheckPin("123".into())));
    // Wrong: the caller is told so, in a prompt of its own, and tries
    // again; the inter-digit timeout submits what was typed.
    let out = h.feed(Input::Routed(Route::AskPin), 1.6);
    assert!(
        has(
            &out,
            &Command::Play(Side::Caller, PromptName::WrongPin, PromptMode::Replace)
        ),
        "{out:?}"
    );
    h.feed(Input::CallerKey('9'), 2.0);
    assert_eq!(h.call.deadline(), Some(h.at(7.0)));
    let out = h.tick(7.0);
    assert!(has(&out, &Command::CheckPin("9".into())));
    h.feed(Input::Routed(Route::AskPin), 7.1);
    // Third try: silence until the first-digit timeout counts as a failure;
    // the caller hears why, then is hung up.
    let out = h.tick(17.1);
    assert!(
        has(
            &out,
            &Command::Play(Side::Caller, PromptName::NoBooking, PromptMode::Replace)
        ),
        "{out:?}"
    );
    assert!(!has(&out, &Command::HangUpCaller));
    assert_eq!(h.call.deadline(), Some(h.at(20.1)), "after the 3 s prompt");
    let out = h.tick(20.1);
    assert_eq!(out, vec![Command::HangUpCaller, Command::Finish]);
    assert_eq!(
        (h.end().status, h.end().reason),
        (Status::Failed, "pin-failed")
    );
}

#[test]
fn a_right_pin_dials_the_callee_with_the_codec_already_in_use() {
    let mut h = Harness::new(CALLER_OFFER);
    h.feed(Input::Routed(Route::AskPin), 0.1);
    for key in "4321#".chars() {
        h.feed(Input::CallerKey(key), 1.0);
    }
    let out = h.feed(Input::Routed(Route::Booking("bk_2".into())), 1.1);
    let offer = sdp_of(&out, |c| match c {
        Command::DialCallee(body) => Some(body),
        _ => None,
    });
    assert!(
        offer.contains("RTP/AVP 0 96"),
        "only PCMU, as with the caller: {offer}"
    );
    // Ringing is not relayed to a caller we already answered.
    assert!(
        !h.feed(Input::CalleeRinging(None), 1.5)
            .iter()
            .any(|c| matches!(c, Command::RingCaller(_)))
    );
    let out = h.feed(Input::CalleeAnswered(callee_answer("0 101")), 3.0);
    assert!(!out.iter().any(|c| matches!(c, Command::AnswerCaller(_))));
    assert!(h.statuses().contains(&"in-progress"));
    // The callee not answering hangs up the caller we answered.
    let mut h = Harness::new(CALLER_OFFER);
    h.feed(Input::Routed(Route::AskPin), 0.1);
    h.feed(Input::CallerKey('#'), 1.0);
    h.feed(Input::Routed(Route::Booking("bk_2".into())), 1.1);
    let out = h.tick(31.1);
    assert!(has(&out, &Command::HangUpCallee));
    assert!(has(
        &out,
        &Command::Play(
            Side::Caller,
            PromptName::CalleeUnavailable,
            PromptMode::Replace
        )
    ));
    // A caller who hangs up during the farewell ends it at once.
    let out = h.feed(Input::CallerHungUp, 32.0);
    assert_eq!(out, vec![Command::Finish]);
}

#[test]
fn a_caller_without_dtmf_cannot_be_asked_for_a_pin() {
    let no_dtmf = CALLER_OFFER.replace("RTP/AVP 0 8 96", "RTP/AVP 0 8");
    let mut h = Harness::new(&no_dtmf);
    let out = h.feed(Input::Routed(Route::AskPin), 0.1);
    assert!(has(&out, &Command::RejectCaller { code: 603 }));
}

#[test]
fn hold_reinvites_are_answered_and_reflected_to_the_relay() {
    let mut h = Harness::connected();
    let hold = CALLER_OFFER.replace("a=ptime:20", "a=ptime:20\r\na=sendonly");
    let out = h.feed(Input::CallerReoffer(hold.into_bytes()), 10.0);
    assert!(out.iter().any(|c| matches!(c, Command::SetPeer(Side::Caller, peer) if peer.direction == Direction::SendOnly)));
    let answer = sdp_of(&out, |c| match c {
        Command::AnswerReoffer(Side::Caller, Ok(body)) => Some(body),
        _ => None,
    });
    assert!(answer.contains("a=recvonly"), "{answer}");
    assert!(
        answer.contains("o=tollbridge 42 2 "),
        "version up: {answer}"
    );
    // A re-offer without the codec in use is refused, the call goes on.
    let pcma = CALLER_OFFER.replace("RTP/AVP 0 8 96", "RTP/AVP 8");
    let out = h.feed(Input::CallerReoffer(pcma.into_bytes()), 11.0);
    assert_eq!(out, vec![Command::AnswerReoffer(Side::Caller, Err(488))]);
    let out = h.feed(Input::CalleeReoffer(b"garbage".to_vec()), 12.0);
    assert_eq!(out, vec![Command::AnswerReoffer(Side::Callee, Err(488))]);
    assert!(!h.call.is_over());
}

#[test]
fn a_callee_placed_after_the_caller_left_is_hung_up() {
    let mut h = Harness::new(CALLER_OFFER);
    h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.0);
    let out = h.feed(Input::CallerCancelled, 1.0);
    // Still placing: the hang-up is asked for now; the task carries it out
    // once the INVITE exists.
    assert!(has(&out, &Command::HangUpCallee));
    assert!(
        h.feed(Input::CalleePlaced(Ok("out".into())), 2.0)
            .contains(&Command::RecordCalleeCallId("out".into()))
    );
}

#[test]
fn offers_we_cannot_honour_get_488() {
    for offer in [
        CALLER_OFFER.replace("RTP/AVP", "RTP/SAVP"),
        CALLER_OFFER.replace("RTP/AVP", "UDP/TLS/RTP/SAVPF"),
        CALLER_OFFER.replace("c=IN IP4 192.0.2.10", "c=IN IP4 224.0.0.1"),
        CALLER_OFFER.replace("c=IN IP4 192.0.2.10", "c=IN IP6 192.0.2.10"),
        // An IPv6 party while the relay has only IPv4.
        CALLER_OFFER.replace("c=IN IP4 192.0.2.10", "c=IN IP6 2001:db8::10"),
    ] {
        let h = Harness::new(&offer);
        assert!(
            h.log.contains(&Command::RejectCaller { code: 488 }),
            "{offer}: {:?}",
            h.log
        );
        assert!(
            !h.log.iter().any(|c| matches!(c, Command::SetPeer(..))),
            "nothing sent to such a party: {offer}"
        );
    }
}

#[test]
fn a_second_m_line_is_refused_with_port_zero_in_the_answer() {
    let offer = CALLER_OFFER.replace("m=audio 40000", "m=video 40010 RTP/AVP 96\r\nm=audio 40000");
    let mut h = Harness::new(&offer);
    h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.1);
    h.feed(Input::CalleePlaced(Ok("out-1".into())), 0.2);
    let out = h.feed(Input::CalleeAnswered(callee_answer("0 101")), 2.0);
    let answer = sdp_of(&out, |c| match c {
        Command::AnswerCaller(body) => Some(body),
        _ => None,
    });
    let m_lines: Vec<&str> = answer.lines().filter(|l| l.starts_with("m=")).collect();
    assert_eq!(m_lines.len(), 2, "{answer}");
    assert!(m_lines[0].starts_with("m=video 0 RTP/AVP"), "{answer}");
    assert!(
        m_lines[1].starts_with("m=audio 20000 RTP/AVP 0"),
        "{answer}"
    );
}
