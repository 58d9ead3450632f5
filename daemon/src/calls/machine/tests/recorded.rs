//! Recorded calls: the recording starts with the talk, the notice to both
//! parties in it, and stops at the talk's end as billed, before the end is
//! recorded (so the call is priced with what the recording came to).

use super::*;

/// A call with a 20 s cap whose booking records it: answered at 2 s.
fn recorded(announce: bool) -> (Harness, Vec<Command>) {
    let mut h = Harness::new(CALLER_OFFER);
    h.feed(Input::Cap(Duration::from_secs(20)), 0.1);
    h.feed(Input::Recording { announce }, 0.1);
    h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.1);
    h.feed(Input::CalleePlaced(Ok("out-1".into())), 0.2);
    let answered = h.feed(Input::CalleeAnswered(callee_answer("0 101")), 2.0);
    (h, answered)
}

#[test]
fn the_recording_starts_with_the_talk_and_both_hear_the_notice_in_it() {
    let (h, answered) = recorded(true);
    let start = answered
        .iter()
        .position(|c| matches!(c, Command::StartRecording(_)))
        .expect("the recording starts");
    assert!(has(&answered, &Command::StartRecording(h.at(2.0))));
    let notices: Vec<usize> = answered
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c, Command::Play(_, PromptName::RecordingNotice, _)))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(notices.len(), 2, "{answered:?}");
    assert!(notices.iter().all(|i| *i > start), "the notice is recorded");
    assert_eq!(
        plays_to(&answered),
        [
            (Side::Caller, PromptName::RecordingNotice),
            (Side::Callee, PromptName::RecordingNotice)
        ]
    );
}

#[test]
fn an_unannounced_recording_plays_nothing() {
    let (_, answered) = recorded(false);
    assert!(
        answered
            .iter()
            .any(|c| matches!(c, Command::StartRecording(_)))
    );
    assert!(plays_to(&answered).is_empty(), "{answered:?}");
}

#[test]
fn the_recording_stops_at_the_talk_end_before_the_end_is_recorded() {
    let (mut h, _) = recorded(true);
    let out = h.feed(Input::CallerHungUp, 9.5);
    let stop = out
        .iter()
        .position(|c| matches!(c, Command::StopRecording(_)))
        .expect("the recording stops");
    let end = out
        .iter()
        .position(|c| matches!(c, Command::RecordEnd(_)))
        .expect("the end is recorded");
    assert!(stop < end, "{out:?}");
    assert!(has(&out, &Command::StopRecording(h.at(9.5))));
    assert_eq!(h.end().talk, Duration::from_millis(7_500));
}

#[test]
fn at_the_cap_the_recording_ends_where_the_billed_talk_does() {
    let (mut h, _) = recorded(false);
    // The cap is at 22 s (answered at 2 s); the meter fires late, at 22.3 s.
    for at in [16.0, 20.0, 22.3] {
        h.tick(at);
    }
    assert_eq!(h.end().talk, Duration::from_secs(20));
    assert!(
        h.log.contains(&Command::StopRecording(h.at(22.0))),
        "{:?}",
        h.log
    );
}

#[test]
fn a_call_never_answered_records_nothing() {
    let mut h = Harness::new(CALLER_OFFER);
    h.feed(Input::Recording { announce: true }, 0.1);
    h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.1);
    h.feed(Input::CalleePlaced(Ok("out-1".into())), 0.2);
    h.feed(
        Input::CalleeRefused {
            code: 486,
            twilio_error: None,
        },
        3.0,
    );
    assert!(
        !h.log
            .iter()
            .any(|c| matches!(c, Command::StartRecording(_) | Command::StopRecording(_))),
        "{:?}",
        h.log
    );
}
