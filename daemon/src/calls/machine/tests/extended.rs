//! Extension blocks: the next card hold placed before anyone is warned,
//! the cap moved when it succeeds, the warning and time-up as before when
//! it fails, and a hold that comes back too late moving nothing; in ask
//! mode, the block offered to the caller with the warning and taken with
//! `1`.

use super::*;

/// A connected call with a 20 s cap that extends in 20 s blocks up to
/// 60 s: answered at 2 s. The test settings warn 6 s before the cap and
/// the time-up prompt lasts 2 s.
fn extending() -> Harness {
    let mut h = Harness::new(CALLER_OFFER);
    h.feed(Input::Cap(Duration::from_secs(20)), 0.1);
    h.feed(
        Input::Extension {
            block: Duration::from_secs(20),
            most: Duration::from_secs(60),
            ask: false,
        },
        0.1,
    );
    h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.1);
    h.feed(Input::CalleePlaced(Ok("out-1".into())), 0.2);
    h.feed(Input::CalleeAnswered(callee_answer("0 101")), 2.0);
    h
}

fn extend_commands(commands: &[Command]) -> Vec<(u32, u64, u64)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Extend {
                block,
                adds,
                covered,
            } => Some((*block, adds.as_secs(), covered.as_secs())),
            _ => None,
        })
        .collect()
}

fn prompts_played(commands: &[Command]) -> Vec<PromptName> {
    plays_to(commands)
        .into_iter()
        .map(|(_, name)| name)
        .collect()
}

#[test]
fn three_blocks_that_all_succeed_warn_nobody_before_the_last() {
    let mut h = extending();
    // The warning would be at 16 s: the next block is held 10 s before.
    assert_eq!(h.call.deadline(), Some(h.at(6.0)));
    let out = h.tick(6.0);
    assert_eq!(extend_commands(&out), [(2, 20, 40)]);
    assert!(prompts_played(&out).is_empty());
    let out = h.feed(Input::Extended(Ok(Duration::from_secs(20))), 6.5);
    assert!(has(
        &out,
        &Command::RecordExtension {
            block: 2,
            cap: Ok(Duration::from_secs(40)),
        }
    ));
    assert!(has(&out, &Command::ForwardUntil(h.at(42.0))), "{out:?}");
    // Past the first block's end, nothing played; the third block at 26 s.
    assert_eq!(h.call.deadline(), Some(h.at(26.0)));
    let out = h.tick(26.0);
    assert_eq!(extend_commands(&out), [(3, 20, 60)]);
    let out = h.feed(Input::Extended(Ok(Duration::from_secs(20))), 26.2);
    assert!(has(&out, &Command::ForwardUntil(h.at(62.0))));
    // At the most: no block asked again; the warning 6 s before 62 s.
    assert_eq!(h.call.deadline(), Some(h.at(56.0)));
    let heard: Vec<PromptName> = prompts_played(&h.log);
    assert!(
        heard.is_empty(),
        "nobody warned before the last block: {heard:?}"
    );
    let out = h.tick(56.0);
    assert_eq!(
        prompts_played(&out),
        [PromptName::Warning, PromptName::Warning]
    );
    h.tick(60.0);
    h.tick(62.0);
    assert_eq!(h.end().reason, "cap-reached");
    assert_eq!(h.end().talk, Duration::from_secs(60));
    assert_eq!(
        extend_commands(&h.log).len(),
        2,
        "two blocks after the first"
    );
}

#[test]
fn a_declined_block_leaves_the_warning_and_time_up_at_the_end_of_the_last_one_held() {
    let mut h = extending();
    h.tick(6.0);
    h.feed(Input::Extended(Ok(Duration::from_secs(20))), 6.5);
    h.tick(26.0);
    let out = h.feed(Input::Extended(Err("card_declined".into())), 26.3);
    assert!(has(
        &out,
        &Command::RecordExtension {
            block: 3,
            cap: Err("card_declined".into()),
        }
    ));
    assert_eq!(h.call.deadline(), Some(h.at(36.0)), "the warning");
    let out = h.tick(36.0);
    assert_eq!(
        prompts_played(&out),
        [PromptName::Warning, PromptName::Warning]
    );
    let out = h.tick(40.0);
    assert_eq!(
        prompts_played(&out),
        [PromptName::TimeUp, PromptName::TimeUp]
    );
    h.tick(42.0);
    assert_eq!(h.end().reason, "cap-reached");
    assert_eq!(h.end().talk, Duration::from_secs(40));
    assert_eq!(
        extend_commands(&h.log).len(),
        2,
        "blocks 2 and 3, none asked after the decline"
    );
}

#[test]
fn a_block_held_after_the_time_up_began_moves_nothing() {
    let mut h = extending();
    h.tick(6.0);
    // Stripe is slow: the warning and the time-up come first.
    h.tick(16.0);
    h.tick(20.0);
    let out = h.feed(Input::Extended(Ok(Duration::from_secs(20))), 21.0);
    assert!(
        out.iter().any(|c| matches!(
            c,
            Command::RecordExtension {
                block: 2,
                cap: Err(_)
            }
        )),
        "{out:?}"
    );
    assert!(!out.iter().any(|c| matches!(c, Command::ForwardUntil(_))));
    h.tick(22.0);
    assert_eq!(h.end().talk, Duration::from_secs(20));
}

#[test]
fn a_short_last_block_buys_only_what_is_left_to_the_most() {
    let mut h = Harness::new(CALLER_OFFER);
    h.feed(Input::Cap(Duration::from_secs(30)), 0.1);
    h.feed(
        Input::Extension {
            block: Duration::from_secs(20),
            most: Duration::from_secs(45),
            ask: false,
        },
        0.1,
    );
    h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.1);
    h.feed(Input::CalleePlaced(Ok("out-1".into())), 0.2);
    h.feed(Input::CalleeAnswered(callee_answer("0 101")), 1.0);
    // Cap at 31 s, warning at 25 s, the block 10 s before.
    assert!(h.tick(14.9).is_empty());
    let out = h.tick(15.0);
    assert_eq!(extend_commands(&out), [(2, 15, 45)]);
}

#[test]
fn a_call_that_ends_while_a_block_is_on_its_way_is_not_extended() {
    let mut h = extending();
    h.tick(6.0);
    h.feed(Input::CallerHungUp, 7.0);
    assert_eq!(h.end().reason, "caller-hangup");
    let out = h.feed(Input::Extended(Ok(Duration::from_secs(20))), 8.0);
    assert!(!out.iter().any(|c| matches!(c, Command::ForwardUntil(_))));
    assert_eq!(h.end().talk, Duration::from_secs(5));
}

/// [`extending`] in ask mode, up to 40 s: the warning offers the caller
/// the next block at 13 s, leaving the 2 s warning slot and 5 s to answer
/// before the time-up at 20 s.
fn asking() -> Harness {
    let mut h = Harness::new(CALLER_OFFER);
    h.feed(Input::Cap(Duration::from_secs(20)), 0.1);
    h.feed(
        Input::Extension {
            block: Duration::from_secs(20),
            most: Duration::from_secs(40),
            ask: true,
        },
        0.1,
    );
    h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.1);
    h.feed(Input::CalleePlaced(Ok("out-1".into())), 0.2);
    h.feed(Input::CalleeAnswered(callee_answer("0 101")), 2.0);
    h
}

#[test]
fn in_ask_mode_the_caller_is_offered_the_block_and_takes_it_with_1() {
    let mut h = asking();
    assert_eq!(h.call.deadline(), Some(h.at(13.0)), "no block held unasked");
    let out = h.tick(13.0);
    assert_eq!(
        plays_to(&out),
        [
            (Side::Caller, PromptName::ExtendOffer),
            (Side::Callee, PromptName::Warning)
        ],
        "the expert hears the usual warning"
    );
    assert!(extend_commands(&out).is_empty());
    let out = h.feed(Input::CallerKey('1'), 14.0);
    assert_eq!(extend_commands(&out), [(2, 20, 40)]);
    // A second press while the hold is on its way asks nothing more.
    assert!(extend_commands(&h.feed(Input::CallerKey('1'), 14.2)).is_empty());
    let out = h.feed(Input::Extended(Ok(Duration::from_secs(20))), 14.5);
    assert_eq!(
        plays_to(&out),
        [(Side::Caller, PromptName::Extended)],
        "the outcome is the caller's alone"
    );
    assert!(has(&out, &Command::ForwardUntil(h.at(42.0))));
    // At the most: the next warning offers nothing.
    assert_eq!(h.call.deadline(), Some(h.at(36.0)));
    let out = h.tick(36.0);
    assert_eq!(
        plays_to(&out),
        [
            (Side::Caller, PromptName::Warning),
            (Side::Callee, PromptName::Warning)
        ]
    );
    assert!(extend_commands(&h.feed(Input::CallerKey('1'), 37.0)).is_empty());
    h.tick(40.0);
    h.tick(42.0);
    assert_eq!(h.end().talk, Duration::from_secs(40));
}

#[test]
fn in_ask_mode_no_key_is_cut_at_the_cap_and_a_late_key_buys_nothing() {
    let mut h = asking();
    h.tick(13.0);
    // Other keys are the expert's business, not an extension.
    for key in ['2', '#', '*'] {
        assert!(extend_commands(&h.feed(Input::CallerKey(key), 14.0)).is_empty());
    }
    let out = h.tick(20.0);
    assert_eq!(plays_to(&out).len(), 2, "time-up to both");
    // The offer closed when the time-up began.
    assert!(extend_commands(&h.feed(Input::CallerKey('1'), 20.5)).is_empty());
    h.tick(22.0);
    assert_eq!(h.end().reason, "cap-reached");
    assert_eq!(h.end().talk, Duration::from_secs(20));
    assert!(extend_commands(&h.log).is_empty());
}

#[test]
fn in_ask_mode_a_declined_block_is_told_to_the_caller_and_the_cap_stays() {
    let mut h = asking();
    h.tick(13.0);
    h.feed(Input::CallerKey('1'), 14.0);
    let out = h.feed(Input::Extended(Err("card_declined".into())), 14.4);
    assert_eq!(plays_to(&out), [(Side::Caller, PromptName::NotExtended)]);
    assert!(!out.iter().any(|c| matches!(c, Command::ForwardUntil(_))));
    h.tick(20.0);
    h.tick(22.0);
    assert_eq!(h.end().talk, Duration::from_secs(20));
}
