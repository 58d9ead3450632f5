//! The ledger among several nodes, the same on both backends:
//! heartbeats, takeover of a silent node's calls, settlement rows and
//! leases claimed by one node, and the webhook outbox (events numbered in
//! turn, delivered once each).

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use support::Backend;
use support::fixtures::*;
use tollbridge_daemon::ledger::{CallStatus, SettlementState};

async fn nodes_heartbeat_and_are_listed_with_their_calls(backend: Backend) {
    let ledger = support::open(backend).await;
    let a = ledger.for_node("tb-a");
    let b = support::reopen(&ledger).await.for_node("tb-b");
    a.heartbeat(T0, false).await.unwrap();
    b.heartbeat(T0 + 5, true).await.unwrap();
    talking_call(&a, "call_1", "bk_1", "+81312345678").await;
    let nodes = a.nodes().await.unwrap();
    let summary: Vec<(&str, bool, i64)> = nodes
        .iter()
        .map(|n| (n.name.as_str(), n.draining, n.open_calls))
        .collect();
    assert_eq!(summary, [("tb-a", false, 1), ("tb-b", true, 0)]);
    assert!(
        nodes.iter().all(|n| (0..5_000).contains(&n.silent_ms)),
        "{nodes:?}"
    );
    assert_eq!(nodes[1].started_ms, T0 + 5);
    b.close().await;
}

async fn a_silent_nodes_calls_are_taken_over_once(backend: Backend) {
    let ledger = support::open(backend).await;
    let silent = ledger.for_node("tb-a");
    let b = support::reopen(&ledger).await.for_node("tb-b");
    let c = support::reopen(&ledger).await.for_node("tb-c");
    silent.heartbeat(T0, false).await.unwrap();
    talking_call(&silent, "call_1", "bk_1", "+81312345678").await;
    talking_call(&silent, "call_2", "bk_2", "+81399999999").await;
    let timeout = std::time::Duration::from_millis(400);

    // Not silent yet: nothing happens.
    b.heartbeat(T0, false).await.unwrap();
    assert!(
        b.take_over_silent_nodes(timeout, T0 + 40_000)
            .await
            .unwrap()
            .is_empty()
    );

    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let (by_b, by_c) = tokio::join!(
        b.take_over_silent_nodes(timeout, T0 + 40_000),
        c.take_over_silent_nodes(timeout, T0 + 40_000),
    );
    let (by_b, by_c) = (by_b.unwrap(), by_c.unwrap());
    let closed: usize = by_b.iter().chain(&by_c).map(|t| t.closed).sum();
    assert_eq!(closed, 2, "b: {by_b:?}\nc: {by_c:?}");
    let taken = by_b.iter().chain(&by_c).next().unwrap();
    assert_eq!(taken.node, "tb-a");
    assert!(taken.silent_ms >= 400, "{taken:?}");
    // The taker owes both parties a BYE from the stored dialogs; the
    // relay ports were the silent node's.
    let calls: Vec<_> = by_b
        .iter()
        .chain(&by_c)
        .flat_map(|t| t.calls.iter())
        .collect();
    assert_eq!(calls.len(), 2);
    assert!(
        calls
            .iter()
            .all(|c| c.dialogs.len() == 2 && c.rtp_ports.is_empty())
    );

    for id in ["call_1", "call_2"] {
        let record = b.call(id.into()).await.unwrap().unwrap();
        assert_eq!(record.end_reason.as_deref(), Some("recovered"));
        assert_eq!(record.talk_ms, Some(30_000), "to the last checkpoint");
        assert_eq!(record.amount, Some(150));
        let capture_rows = record
            .settlements
            .iter()
            .filter(|s| s.operation == "capture")
            .count();
        assert_eq!(capture_rows, 0, "no card, nothing to capture");
        assert!(
            record.events.iter().any(|e| e
                .detail
                .as_deref()
                .is_some_and(|d| d.contains("fell silent"))),
            "{:?}",
            record.events
        );
    }
    // Taken once: nobody takes them again, and the silent node, back
    // late, neither closes nor rates them again, nor re-opens their status.
    assert!(
        b.take_over_silent_nodes(timeout, T0 + 50_000)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        c.take_over_silent_nodes(timeout, T0 + 50_000)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        silent
            .close_call("call_1".into(), talked(90_000), T0 + 91_000)
            .await
            .unwrap(),
        None
    );
    silent
        .record_event(
            "call_1".into(),
            CallStatus::InProgress,
            None,
            None,
            T0 + 92_000,
        )
        .await
        .unwrap();
    let record = b.call("call_1".into()).await.unwrap().unwrap();
    assert_eq!(
        (record.amount, record.status),
        (Some(150), CallStatus::Completed)
    );
    // Its own restart finds nothing of its own to recover or hang up,
    // but keeps the ports the taker is still hanging up out of use.
    assert_eq!(silent.recover_open_calls(T0 + 93_000).await.unwrap(), 0);
    assert!(silent.unfinished_calls().await.unwrap().is_empty());
    let held = silent
        .recently_released_ports(T0 + 93_000, T0 + 93_000)
        .await
        .unwrap();
    assert_eq!(held.len(), 4, "{held:?}");
    // The taker's own restart would find the hang-ups still owed.
    let taker = if by_b.is_empty() { &c } else { &b };
    assert_eq!(taker.unfinished_calls().await.unwrap().len(), 2);
    b.close().await;
    c.close().await;
}

async fn a_settlement_row_is_claimed_by_one_node(backend: Backend) {
    let ledger = support::open(backend).await;
    let a = ledger.for_node("tb-a");
    let b = support::reopen(&ledger).await.for_node("tb-b");
    // Fee holds due: one row per booking with a fee and a card.
    for n in 0..6 {
        let id = format!("bk_{n}");
        a.create_booking(
            id.clone(),
            booking(&id, "+81312345678", true, Some(500)),
            T0,
        )
        .await
        .unwrap();
    }
    let (claimed_a, claimed_b) = tokio::join!(
        a.claim_due_settlements(T0, true),
        b.claim_due_settlements(T0, true),
    );
    let (claimed_a, claimed_b) = (claimed_a.unwrap(), claimed_b.unwrap());
    let mut ids: Vec<&str> = claimed_a
        .iter()
        .chain(&claimed_b)
        .map(|s| s.facts.id.as_str())
        .collect();
    assert_eq!(ids.len(), 6, "a: {claimed_a:?}\nb: {claimed_b:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "a row was claimed twice");
    // Claimed rows are not due for the other node, and only the claimant
    // may mark one sent.
    assert!(
        b.claim_due_settlements(T0, true)
            .await
            .unwrap()
            .iter()
            .all(|s| claimed_b.iter().any(|c| c.facts.id == s.facts.id))
    );
    if let Some(row) = claimed_a.first() {
        assert!(!b.mark_sent(row.facts.id.clone(), T0).await.unwrap());
        assert!(a.mark_sent(row.facts.id.clone(), T0).await.unwrap());
        a.conclude_settlement(
            row.facts.id.clone(),
            SettlementState::Failed,
            None,
            Some("declined".into()),
            None,
            T0,
        )
        .await
        .unwrap();
    }
    b.close().await;
}

async fn a_lease_is_held_by_one_node_until_it_lapses(backend: Backend) {
    let ledger = support::open(backend).await;
    let a = ledger.for_node("tb-a");
    let b = support::reopen(&ledger).await.for_node("tb-b");
    let ttl = std::time::Duration::from_millis(400);
    let (got_a, got_b) = tokio::join!(
        a.hold_lease("reconciler", ttl),
        b.hold_lease("reconciler", ttl)
    );
    let (got_a, got_b) = (got_a.unwrap(), got_b.unwrap());
    assert!(got_a ^ got_b, "exactly one holds it: a {got_a}, b {got_b}");
    let (holder, other) = if got_a { (&a, &b) } else { (&b, &a) };
    assert!(
        holder.hold_lease("reconciler", ttl).await.unwrap(),
        "renewed"
    );
    assert!(!other.hold_lease("reconciler", ttl).await.unwrap());
    assert!(
        other.hold_lease("another", ttl).await.unwrap(),
        "leases are by name"
    );
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert!(other.hold_lease("reconciler", ttl).await.unwrap(), "lapsed");
    assert!(!holder.hold_lease("reconciler", ttl).await.unwrap());
    b.close().await;
}

/// Two nodes (each with a pool of threads) adding events to one call at
/// the same instant, as the call's node and a Stripe webhook received on
/// another node do: every event lands, numbered 1, 2, 3, ... with no
/// number taken twice.
async fn events_added_at_once_by_two_nodes_are_numbered_in_turn(backend: Backend) {
    let ledger = support::open(backend).await;
    let other = support::reopen(&ledger).await;
    talking_call(&ledger, "call_ev", "bk_ev", "+815000000077").await;
    let before = ledger
        .call("call_ev".into())
        .await
        .unwrap()
        .unwrap()
        .events
        .len();
    let writes: Vec<_> = (0..40)
        .map(|n| {
            let node = if n % 2 == 0 {
                ledger.clone()
            } else {
                other.clone()
            };
            tokio::spawn(async move {
                node.record_event(
                    "call_ev".into(),
                    CallStatus::InProgress,
                    None,
                    Some(format!("event {n}")),
                    T0 + 2_000 + n,
                )
                .await
            })
        })
        .collect();
    for write in writes {
        write.await.unwrap().unwrap();
    }
    let record = ledger.call("call_ev".into()).await.unwrap().unwrap();
    let seqs: Vec<i64> = record.events.iter().map(|e| e.seq).collect();
    let expected: Vec<i64> = (1..=i64::try_from(before + 40).unwrap()).collect();
    assert_eq!(seqs, expected);
    other.close().await;
}

/// The outbox: events written with the changes they report, numbered
/// per booking, one delivery per subscribed endpoint, claimed by one node
/// at a time, retried when due, redelivered by hand.
async fn events_are_written_with_their_change_and_delivered_once_each(backend: Backend) {
    use tollbridge_daemon::ledger::{DeliveryOutcome, WebhookEndpoint};
    let ledger = support::open(backend).await;
    let other = support::reopen(&ledger).await.for_node("tb-b");
    let ledger_a = ledger.for_node("tb-a");
    ledger
        .set_webhook_endpoints(
            vec![
                WebhookEndpoint {
                    name: "all".into(),
                    url: "https://a.example/h".into(),
                    types: vec![],
                },
                WebhookEndpoint {
                    name: "ends".into(),
                    url: "https://b.example/h".into(),
                    types: vec!["call.ended".into()],
                },
            ],
            T0,
        )
        .await
        .unwrap();
    talking_call(&ledger, "call_o", "bk_o", "+815000000088").await;
    ledger
        .close_call("call_o".into(), talked(30_000), T0 + 31_000)
        .await
        .unwrap();
    // 30 s of its 1,800 s budget used: the window's end completes it.
    assert_eq!(ledger.end_windows(T0 + HOUR_MS).await.unwrap(), 1);
    let events = ledger
        .events(Some("bk_o".into()), None, None, 100)
        .await
        .unwrap();
    let kinds: Vec<(&str, i64)> = events
        .iter()
        .map(|e| (e.kind.as_str(), e.sequence))
        .collect();
    assert_eq!(
        kinds,
        [
            ("call.answered", 1),
            ("call.ended", 2),
            ("booking.completed", 3)
        ]
    );
    let ended = &events[1];
    assert_eq!(ended.body["data"]["billed_seconds"], 30, "{}", ended.body);
    assert_eq!(
        ended.body["data"]["reason"], "caller-hangup",
        "{}",
        ended.body
    );
    assert_eq!(ended.body["booking"], "bk_o");
    assert_eq!(ended.body["sequence"], 2);
    let endpoints: Vec<&str> = ended
        .deliveries
        .iter()
        .map(|d| d.endpoint.as_str())
        .collect();
    assert_eq!(endpoints, ["all", "ends"]);
    assert_eq!(
        events[0].deliveries.len(),
        1,
        "only 'all' takes call.answered"
    );

    // Four deliveries, claimed once: the other node finds none.
    let now = T0 + HOUR_MS + 1_000;
    let due = ledger_a.claim_due_deliveries(now, 100).await.unwrap();
    assert_eq!(due.len(), 4);
    assert!(
        other
            .claim_due_deliveries(now, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let first = due[0].clone();
    assert!(first.body.contains(&first.event_id));
    ledger_a
        .delivery_attempted(
            first.id.clone(),
            DeliveryOutcome::Retry {
                status: Some(500),
                error: "the receiver answered 500".into(),
                next_attempt_ms: now + 10_000,
            },
            now,
        )
        .await
        .unwrap();
    for delivery in &due[1..] {
        ledger_a
            .delivery_attempted(
                delivery.id.clone(),
                DeliveryOutcome::Delivered { status: 204 },
                now,
            )
            .await
            .unwrap();
    }
    assert_eq!(ledger.pending_deliveries().await.unwrap(), 1);
    assert!(
        other
            .claim_due_deliveries(now + 5_000, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let again = other.claim_due_deliveries(now + 10_000, 100).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].id.as_str(), again[0].attempts),
        (first.id.as_str(), 1)
    );
    other
        .delivery_attempted(
            again[0].id.clone(),
            DeliveryOutcome::Delivered { status: 200 },
            now + 10_000,
        )
        .await
        .unwrap();
    assert_eq!(ledger.pending_deliveries().await.unwrap(), 0);
    let shown = ledger.event(first.event_id.clone()).await.unwrap().unwrap();
    let delivery = shown
        .deliveries
        .iter()
        .find(|d| d.endpoint == first.endpoint)
        .unwrap();
    assert_eq!(
        (
            delivery.state.as_str(),
            delivery.attempts,
            delivery.last_status
        ),
        ("delivered", 2, Some(200))
    );

    // Redelivered by hand: due again at once, to each endpoint.
    assert_eq!(
        ledger
            .redeliver(ended.id.clone(), now + 20_000)
            .await
            .unwrap(),
        Some(2)
    );
    assert_eq!(
        ledger_a
            .claim_due_deliveries(now + 20_000, 100)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        ledger.redeliver("evt_none".into(), now).await.unwrap(),
        None
    );
    // An endpoint dropped from the config: its pending deliveries fail.
    ledger.set_webhook_endpoints(vec![], now).await.unwrap();
    assert!(
        ledger_a
            .claim_due_deliveries(now + 200_000, 100)
            .await
            .unwrap()
            .is_empty()
    );
    other.close().await;
}

on_both_backends!(
    events_are_written_with_their_change_and_delivered_once_each,
    events_added_at_once_by_two_nodes_are_numbered_in_turn,
    nodes_heartbeat_and_are_listed_with_their_calls,
    a_silent_nodes_calls_are_taken_over_once,
    a_settlement_row_is_claimed_by_one_node,
    a_lease_is_held_by_one_node_until_it_lapses,
);
