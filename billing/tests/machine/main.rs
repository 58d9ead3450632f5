//! The settlement machine on virtual time against a fake Stripe, in the
//! manner of quinn-proto's test `Pair`: a [`World`] holds the ledger's
//! rows, a Stripe that keeps its PaymentIntents, Refunds and idempotency
//! keys (and can lose answers, be down, or forget its keys), and a clock
//! that only moves when the test says. The driver loop is the daemon's
//! in miniature: pick up what is due, carry out the machine's commands,
//! feed back the answers. Crashes drop the machine at any command; the
//! rows keep what was committed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tollbridge_billing::settlement::Operation;
use tollbridge_billing::settlement::machine::{
    Answer, Command, Event, Facts, Movement, Outcome, REFUND_METADATA, Request, SettlementState,
};

mod stripe;
mod world;

use stripe::{Fault, Stripe};
use world::{Stop, World};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

fn facts(operation: Operation, amount: i64, payment_intent: Option<&str>) -> Facts {
    Facts {
        id: "st_1".into(),
        operation,
        key: format!("tb:call:ca_1:{}:v1", operation.as_str()),
        amount,
        currency: "jpy".into(),
        payment_intent: payment_intent.map(str::to_owned),
        customer: Some("cus_1".into()),
        payment_method: Some("pm_card".into()),
        call_id: Some("ca_1".into()),
        booking_id: Some("bk_1".into()),
        reason: None,
    }
}

fn capture_world(held: i64, capture: i64) -> World {
    let (stripe, intent) = Stripe::with_hold(held);
    World::new(
        stripe,
        facts(Operation::Capture, capture, Some(&intent)),
        SettlementState::Pending,
    )
}

fn refund_world(captured: i64, refund: i64) -> World {
    let (mut stripe, intent) = Stripe::with_hold(captured);
    if let Some(held) = stripe.intents.get_mut(&intent) {
        held.status = "succeeded".into();
        held.amount_received = captured;
    }
    let mut facts = facts(Operation::Refund, refund, Some(&intent));
    facts.id = "rf_1".into();
    facts.key = "tb:refund:rf_1".into();
    World::new(stripe, facts, SettlementState::Pending)
}

fn sends(commands: &[Command]) -> Vec<&Request> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::Send(request) => Some(request),
            _ => None,
        })
        .collect()
}

#[test]
fn a_pending_capture_is_claimed_sent_and_recorded() {
    let mut world = capture_world(3_000, 1_200);
    let (stop, commands) = world.pick_up(None);
    assert_eq!(stop, Stop::Quiet);
    assert_eq!(commands.len(), 3, "{commands:?}");
    assert_eq!(commands[0], Command::Claim);
    assert!(matches!(
        &commands[1],
        Command::Send(Request::Capture { amount: 1_200, key, .. }) if key == "tb:call:ca_1:capture:v1"
    ));
    assert_eq!(world.row.state, SettlementState::Succeeded);
    assert_eq!(world.stripe.moved, [("capture", "pi_1".into(), 1_200)]);
    assert_eq!(world.row.next_at, None);
}

#[test]
fn a_capture_whose_answer_is_lost_is_read_back_not_sent_twice() {
    let mut world = capture_world(3_000, 1_200);
    world.stripe.faults = [Fault::LoseAnswer].into();
    let (_, commands) = world.pick_up(None);
    let sent = sends(&commands);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(matches!(sent[1], Request::Retrieve { .. }));
    assert_eq!(world.row.state, SettlementState::Succeeded);
    assert_eq!(world.stripe.captures(), 1);
}

#[test]
fn stripe_down_looks_again_after_5_minutes_an_hour_then_daily() {
    let mut world = capture_world(3_000, 1_200);
    // Each pick-up: the capture and its read-back are lost; from the
    // second on, the read-back before sending is lost too.
    world.stripe.faults = [Fault::Down; 2 + 3 + 3].into();
    let waits = world.settle(4);
    assert_eq!(world.row.state, SettlementState::Succeeded);
    assert_eq!(world.stripe.captures(), 1);
    assert_eq!(waits, [5 * MINUTE, HOUR, DAY]);
    assert_eq!(world.row.tries, 4);
}

#[test]
fn a_capture_that_did_not_take_effect_is_sent_again_with_the_same_key() {
    let mut world = capture_world(3_000, 1_200);
    world.stripe.faults = [Fault::Down, Fault::Down].into();
    world.pick_up(None);
    assert_eq!(world.row.state, SettlementState::Unknown);
    world.advance_to_timer();
    let (_, commands) = world.pick_up(None);
    let sent = sends(&commands);
    assert!(matches!(sent[0], Request::Retrieve { .. }), "{sent:?}");
    assert!(matches!(sent[1], Request::Capture { .. }), "{sent:?}");
    let keys: Vec<&str> = world
        .stripe
        .received
        .iter()
        .filter_map(|r| match r {
            Request::Capture { key, .. } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(keys, ["tb:call:ca_1:capture:v1"; 2]);
    assert_eq!(world.stripe.captures(), 1);
    assert_eq!(world.row.state, SettlementState::Succeeded);
}

/// Every crash point of a capture, with every fault on its first request:
/// after restarts it is captured exactly once, for the right amount.
#[test]
fn a_capture_is_taken_exactly_once_after_any_crash() {
    for fault in [Fault::None, Fault::LoseAnswer, Fault::Down] {
        for crash_before in 0..4 {
            let mut world = capture_world(3_000, 1_200);
            world.stripe.faults = [fault].into();
            world.pick_up(Some(crash_before));
            // Restarted: every open row is picked up, whatever its timer.
            world.settle(5);
            assert_eq!(
                world.row.state,
                SettlementState::Succeeded,
                "{fault:?} crash before command {crash_before}: {:?}",
                world.row
            );
            assert_eq!(
                world.stripe.moved,
                [("capture", "pi_1".into(), 1_200)],
                "{fault:?} crash before command {crash_before}"
            );
        }
    }
}

#[test]
fn a_capture_read_back_for_another_amount_fails_for_a_look() {
    let mut world = capture_world(3_000, 1_200);
    if let Some(intent) = world.stripe.intents.get_mut("pi_1") {
        intent.status = "succeeded".into();
        intent.amount_received = 900;
    }
    world.row.state = SettlementState::Sent;
    let (_, commands) = world.pick_up(None);
    assert!(!commands.contains(&Command::Claim), "{commands:?}");
    assert!(matches!(
        &world.row.outcome,
        Some(Outcome::Failed { error, .. }) if error == "captured 900, expected 1200"
    ));
}

#[test]
fn releasing_an_expired_hold_is_done_and_capturing_it_fails() {
    for (operation, expected) in [
        (Operation::Cancel, SettlementState::Succeeded),
        (Operation::Capture, SettlementState::Failed),
    ] {
        let (mut stripe, intent) = Stripe::with_hold(3_000);
        if let Some(held) = stripe.intents.get_mut(&intent) {
            held.status = "canceled".into();
        }
        let mut world = World::new(
            stripe,
            facts(operation, 3_000, Some(&intent)),
            SettlementState::Unknown,
        );
        world.pick_up(None);
        assert_eq!(world.row.state, expected, "{operation:?}");
        assert!(world.stripe.moved.is_empty());
    }
}

#[test]
fn a_row_without_what_it_needs_fails_without_a_request() {
    let mut no_intent = facts(Operation::Capture, 100, None);
    let mut no_card = facts(Operation::CancellationFee, 100, None);
    no_card.payment_method = None;
    let mut bad_currency = facts(Operation::CancellationFee, 100, None);
    bad_currency.currency = "xxx".into();
    let refund_without_intent = facts(Operation::Refund, 100, None);
    let mut hold_without_call = facts(Operation::Authorize, 100, None);
    hold_without_call.call_id = None;
    for (facts, why) in [
        (no_intent.clone(), "no PaymentIntent to act on"),
        (no_card, "no card or booking"),
        (bad_currency, "unknown currency xxx"),
        (refund_without_intent, "no PaymentIntent to refund"),
        (hold_without_call, "no customer or call to look up"),
    ] {
        let mut world = World::new(Stripe::default(), facts, SettlementState::Pending);
        let (_, commands) = world.pick_up(None);
        assert_eq!(commands.len(), 1, "{why}: {commands:?}");
        assert!(
            matches!(&world.row.outcome, Some(Outcome::Failed { error, .. }) if error == why),
            "{why}: {:?}",
            world.row.outcome
        );
    }
    no_intent.operation = Operation::Cancel;
    let mut world = World::new(Stripe::default(), no_intent, SettlementState::Sent);
    world.pick_up(None);
    assert_eq!(world.row.state, SettlementState::Failed);
    assert!(world.stripe.received.is_empty());
}

#[test]
fn a_row_claimed_by_another_node_is_left_alone() {
    let mut world = capture_world(3_000, 1_200);
    world.claimed_elsewhere = true;
    let (_, commands) = world.pick_up(None);
    assert_eq!(commands, [Command::Claim]);
    assert_eq!(world.row.state, SettlementState::Pending);
    assert!(world.row.outcome.is_none());
    assert!(world.stripe.received.is_empty());
}

#[test]
fn a_refund_whose_answer_was_lost_is_found_not_made_twice() {
    let mut world = refund_world(3_000, 1_000);
    world.stripe.faults = [Fault::LoseAnswer].into();
    let (_, commands) = world.pick_up(None);
    let sent = sends(&commands);
    assert!(
        matches!(sent[1], Request::FindRefund { key, value, .. } if key == REFUND_METADATA && value == "rf_1")
    );
    assert!(matches!(
        &world.row.outcome,
        Some(Outcome::Succeeded { stripe_refund: Some(re), .. }) if re == "re_2"
    ));
    assert_eq!(world.stripe.refunded(), 1_000);
}

/// A refund sent, then a crash; by the restart Stripe has forgotten the
/// key (24 hours): a resend would refund twice, so the row finds its
/// Refund instead.
#[test]
fn a_refund_is_made_once_after_a_crash_and_a_forgotten_key() {
    for crash_before in 0..4 {
        let mut world = refund_world(3_000, 1_000);
        world.pick_up(Some(crash_before));
        world.stripe.forget_keys();
        world.now += 2 * DAY;
        world.settle(3);
        assert_eq!(
            world.row.state,
            SettlementState::Succeeded,
            "{crash_before}"
        );
        assert_eq!(
            world.stripe.refunded(),
            1_000,
            "crash before {crash_before}"
        );
    }
}

#[test]
fn a_refund_stripe_refuses_fails_with_its_reason() {
    let mut world = refund_world(3_000, 3_500);
    world.pick_up(None);
    assert!(matches!(
        &world.row.outcome,
        Some(Outcome::Failed { error, stripe_refund: None, .. }) if error.contains("more than was captured")
    ));
    assert_eq!(world.stripe.refunded(), 0);
}

fn hold_world(payment_method: &str) -> World {
    let mut facts = facts(Operation::Authorize, 3_000, None);
    facts.payment_method = Some(payment_method.into());
    // A call's hold is written `sent` and sent at once.
    World::new(Stripe::default(), facts, SettlementState::Sent)
}

/// The call's hold, as `place_hold` drives it: claimed with its row.
fn place_hold(world: &mut World) -> Vec<Command> {
    let mut movement = Movement::new(world.row.facts.clone(), world.row.state, 0);
    movement.handle(Event::Claimed, world.now);
    world.drive(movement, None).1
}

#[test]
fn a_call_hold_is_placed_with_metadata_to_find_it_by() {
    let mut world = hold_world("pm_card");
    let commands = place_hold(&mut world);
    let Command::Send(Request::Hold(hold)) = &commands[0] else {
        panic!("{commands:?}");
    };
    assert_eq!(hold.idempotency_key, "tb:call:ca_1:authorize:v1");
    assert!(hold.metadata.contains(&("call".into(), "ca_1".into())));
    assert!(matches!(
        &world.row.outcome,
        Some(Outcome::Held { payment_intent, capture_before: Some(_), .. }) if payment_intent == "pi_1"
    ));
}

#[test]
fn a_declined_hold_fails_with_the_decline_code() {
    let mut world = hold_world("pm_declined");
    place_hold(&mut world);
    assert!(matches!(
        &world.row.outcome,
        Some(Outcome::Failed { decline_code: Some(code), .. }) if code == "card_declined"
    ));
}

#[test]
fn a_hold_whose_answer_was_lost_is_found_by_its_call() {
    let mut world = hold_world("pm_card");
    world.stripe.faults = [Fault::LoseAnswer].into();
    place_hold(&mut world);
    assert_eq!(world.row.state, SettlementState::Unknown);
    assert_eq!(world.advance_to_timer(), Some(5 * MINUTE));
    let (_, commands) = world.pick_up(None);
    assert!(
        matches!(sends(&commands)[..], [Request::Find { key, value, .. }] if key == "call" && value == "ca_1")
    );
    assert!(matches!(&world.row.outcome, Some(Outcome::Held { .. })));
    assert_eq!(world.stripe.moved.len(), 1, "one hold, never a second");
}

#[test]
fn an_extension_blocks_hold_whose_answer_was_lost_is_found_by_its_own_key() {
    // The call's first hold is in Stripe with the same `call` metadata:
    // the block must not take it for its own.
    let mut first = std::collections::HashMap::new();
    first.insert("call".to_owned(), "ca_1".to_owned());
    let mut stripe = Stripe::default();
    stripe.create_intent("cus_1", 3_000, first);
    let mut facts = facts(Operation::Authorize, 1_500, None);
    facts.key = "tb:call:ca_1:authorize-2:v1".into();
    let mut world = World::new(stripe, facts, SettlementState::Sent);
    world.stripe.faults = [Fault::LoseAnswer].into();
    let commands = place_hold(&mut world);
    let Command::Send(Request::Hold(hold)) = &commands[0] else {
        panic!("{commands:?}");
    };
    assert!(
        hold.metadata
            .contains(&("hold".into(), "tb:call:ca_1:authorize-2:v1".into()))
    );
    world.advance_to_timer();
    let (_, commands) = world.pick_up(None);
    assert!(
        matches!(sends(&commands)[..], [Request::Find { key, value, .. }] if key == "hold" && value == "tb:call:ca_1:authorize-2:v1"),
        "{commands:?}"
    );
    assert!(matches!(
        &world.row.outcome,
        Some(Outcome::Held { payment_intent, .. }) if payment_intent == "pi_2"
    ));
    assert_eq!(
        world.stripe.moved.len(),
        1,
        "one block hold, never a second"
    );
}

/// A raisable hold of ¥3,000 (`pi_1`) and the increment row taking it
/// to ¥4,500 in all.
fn increment_world() -> World {
    let (mut stripe, intent) = Stripe::with_hold(3_000);
    if let Some(hold) = stripe.intents.get_mut(&intent) {
        hold.incremental_authorization = true;
    }
    let mut facts = facts(Operation::Increment, 4_500, Some(&intent));
    facts.key = "tb:call:ca_1:increment-2:v1".into();
    World::new(stripe, facts, SettlementState::Sent)
}

#[test]
fn an_increment_raises_the_hold_to_its_new_total() {
    let mut world = increment_world();
    let commands = place_hold(&mut world);
    assert!(
        matches!(&sends(&commands)[..], [Request::Increment { payment_intent, amount: 4_500, key }]
            if payment_intent == "pi_1" && key == "tb:call:ca_1:increment-2:v1"),
        "{commands:?}"
    );
    assert!(
        matches!(&world.row.outcome, Some(Outcome::Held { payment_intent, .. }) if payment_intent == "pi_1")
    );
    assert_eq!(world.stripe.intents["pi_1"].amount_capturable, 4_500);
}

#[test]
fn an_increment_whose_answer_was_lost_is_read_back_not_raised_twice() {
    let mut world = increment_world();
    world.stripe.faults = [Fault::LoseAnswer].into();
    let commands = place_hold(&mut world);
    // Read back at once, as a capture is: raised, so done.
    assert!(
        matches!(
            sends(&commands)[..],
            [Request::Increment { .. }, Request::Retrieve { .. }]
        ),
        "{commands:?}"
    );
    assert!(matches!(&world.row.outcome, Some(Outcome::Held { .. })));
    assert_eq!(
        world.stripe.moved,
        [("increment", "pi_1".to_owned(), 1_500)]
    );
}

#[test]
fn an_increment_that_never_arrived_is_sent_again_with_its_key() {
    let mut world = increment_world();
    world.stripe.faults = [Fault::Down].into();
    place_hold(&mut world);
    world.advance_to_timer();
    let (_, commands) = world.pick_up(None);
    // Read back at ¥3,000: sent again, same key and total.
    let sent = sends(&commands);
    assert!(matches!(sent[0], Request::Retrieve { .. }), "{commands:?}");
    assert!(
        matches!(sent[1], Request::Increment { amount: 4_500, key, .. } if key == "tb:call:ca_1:increment-2:v1"),
        "{commands:?}"
    );
    assert_eq!(world.stripe.intents["pi_1"].amount_capturable, 4_500);
    assert_eq!(world.stripe.moved.len(), 1);
}

#[test]
fn a_hold_that_never_reached_stripe_fails_when_looked_for() {
    let mut world = hold_world("pm_card");
    world.stripe.faults = [Fault::Down].into();
    place_hold(&mut world);
    world.advance_to_timer();
    world.pick_up(None);
    assert!(matches!(
        &world.row.outcome,
        Some(Outcome::Failed { error, .. }) if error == "no PaymentIntent was created"
    ));
    assert!(world.stripe.moved.is_empty());
}

#[test]
fn a_fee_hold_is_placed_once_whatever_the_crash() {
    for fault in [Fault::None, Fault::LoseAnswer, Fault::Down] {
        for crash_before in 0..3 {
            let mut facts = facts(Operation::CancellationFee, 500, None);
            facts.key = "tb:booking:bk_1:fee-hold:v1".into();
            let mut world = World::new(Stripe::default(), facts, SettlementState::Pending);
            world.stripe.faults = [fault].into();
            world.pick_up(Some(crash_before));
            world.settle(4);
            assert!(
                matches!(&world.row.outcome, Some(Outcome::Held { .. })),
                "{fault:?} crash before {crash_before}: {:?}",
                world.row
            );
            let holds = world.stripe.moved.iter().filter(|m| m.0 == "hold").count();
            assert_eq!(holds, 1, "{fault:?} crash before {crash_before}");
        }
    }
}

#[test]
fn webhooks_conclude_what_they_prove_and_nothing_else() {
    let cases = [
        (
            Operation::Capture,
            "payment_intent.succeeded",
            Some(1_200),
            Some(SettlementState::Succeeded),
        ),
        (
            Operation::Capture,
            "payment_intent.succeeded",
            Some(900),
            None,
        ),
        (
            Operation::Capture,
            "payment_intent.canceled",
            None,
            Some(SettlementState::Failed),
        ),
        (
            Operation::Cancel,
            "payment_intent.canceled",
            None,
            Some(SettlementState::Succeeded),
        ),
        (
            Operation::Cancel,
            "payment_intent.succeeded",
            Some(1_200),
            None,
        ),
        (
            Operation::Authorize,
            "payment_intent.amount_capturable_updated",
            None,
            Some(SettlementState::Succeeded),
        ),
        (
            Operation::Authorize,
            "payment_intent.payment_failed",
            None,
            Some(SettlementState::Failed),
        ),
        (
            Operation::Refund,
            "payment_intent.succeeded",
            Some(1_200),
            None,
        ),
        (Operation::Capture, "charge.refunded", None, None),
    ];
    for (operation, kind, amount_received, expected) in cases {
        let mut movement = Movement::new(
            facts(operation, 1_200, Some("pi_1")),
            SettlementState::Sent,
            1,
        );
        movement.handle(
            Event::Webhook {
                kind: kind.into(),
                amount_received,
            },
            0,
        );
        let recorded = movement.poll();
        assert_eq!(
            recorded.as_ref().map(|c| match c {
                Command::Record(outcome) => outcome.state(),
                other => panic!("{other:?}"),
            }),
            expected,
            "{operation:?} {kind} {amount_received:?}"
        );
        assert_eq!(movement.poll(), None);
    }
    // A row already concluded hears nothing.
    let mut done = Movement::new(
        facts(Operation::Capture, 1_200, Some("pi_1")),
        SettlementState::Failed,
        1,
    );
    done.handle(
        Event::Webhook {
            kind: "payment_intent.succeeded".into(),
            amount_received: Some(1_200),
        },
        0,
    );
    assert_eq!(done.poll(), None);
    assert_eq!(done.state(), SettlementState::Failed);
}

#[test]
fn answers_to_nothing_asked_are_ignored() {
    let mut movement = Movement::new(
        facts(Operation::Capture, 1_200, Some("pi_1")),
        SettlementState::Pending,
        0,
    );
    movement.handle(Event::Answered(Answer::FoundRefund(Ok(None))), 0);
    assert_eq!(movement.poll(), None);
    movement.handle(Event::Due, 0);
    assert_eq!(movement.poll(), Some(Command::Claim));
    // Still waiting for the claim: a stray answer changes nothing.
    movement.handle(Event::Answered(Answer::Found(Ok(None))), 0);
    assert_eq!(movement.poll(), None);
    assert_eq!(movement.state(), SettlementState::Pending);
    movement.handle(Event::Claimed, 0);
    assert!(matches!(
        movement.poll(),
        Some(Command::Send(Request::Capture { .. }))
    ));
}
