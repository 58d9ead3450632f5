//! Several nodes on one PostgreSQL ledger, as an operator runs them: a
//! booking made on one node is called through the other; a draining node
//! sends calls on with 503; a node killed with SIGKILL has its call hung
//! up and settled by the other, once; the ledger restarted mid-call loses
//! and doubles nothing. Real daemons, SIPp on both sides, the Stripe
//! fake, and a PostgreSQL server the tests start themselves (Unix socket
//! in a temporary directory). Everything on 127.0.0.1.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tollbridge_e2e::postgres::PostgresServer;
use tollbridge_e2e::stripe_fake::StripeFake;
use tollbridge_e2e::{SippRun, run_sipp};

/// `cluster.node_timeout` of the test nodes.
const NODE_TIMEOUT_S: u64 = 3;

/// A node named `name` on the ledger at `url`, with more config sections.
fn start_node(name: &str, url: &str, calls: &str, more: &str) -> Daemon {
    start_daemon_sections(
        calls,
        "30s",
        &format!(
            "[database]\nurl = \"{url}\"\n\n[node]\nname = \"{name}\"\n\n\
             [cluster]\nnode_timeout = \"{NODE_TIMEOUT_S}s\"\n\n\
             [billing]\ncheckpoint_interval = \"500ms\"\n\n{more}\n"
        ),
    )
}

fn stripe_section(fake: &StripeFake) -> String {
    format!(
        "[stripe]\nsecret_key = \"sk_test_fake\"\napi_base = \"{}\"\nrequest_timeout = \"2s\"\n",
        fake.url()
    )
}

/// A booking for `caller` (¥1,200 a minute) with a card to hold.
fn book_with_card(daemon: &Daemon, caller: &str, expert: &str) -> String {
    let mut booking = booking_json(&[caller.to_owned()], expert, 600);
    booking["tariff"]["price_per_minute"] = json!(1200);
    booking["stripe"] = json!({"customer": "cus_test", "payment_method": "pm_card_visa"});
    create_booking(daemon, &booking)
}

/// The one call of `booking`, once `done` says it is complete.
fn call_of(
    daemon: &Daemon,
    booking: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (_, body) = daemon.api("GET", &format!("/v1/calls?booking={booking}"), TOKEN, None);
        if let Some(call) = body["calls"].as_array().and_then(|c| c.first())
            && done(call)
        {
            return call.clone();
        }
        assert!(
            Instant::now() < deadline,
            "call of {booking} not there yet: {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether every settlement row of a call is finished.
fn settled(call: &Value) -> bool {
    !call["ended_at"].is_null()
        && call["settlements"].as_array().is_some_and(|rows| {
            !rows.is_empty()
                && rows
                    .iter()
                    .all(|row| matches!(row["state"].as_str(), Some("succeeded" | "failed")))
        })
}

/// Capture requests the fake received for `intent`.
fn captures_of(fake: &StripeFake, intent: &str) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with(&format!("/{intent}/capture")))
        .count()
}

fn sipp_to(daemon: &Daemon, scenario: &str) -> SippRun {
    run_sipp(
        scenario,
        daemon.sip_udp().unwrap(),
        "127.0.0.1",
        NUMBER,
        Duration::from_secs(10),
    )
}

#[test]
fn a_booking_made_on_one_node_is_called_through_the_other_and_a_draining_node_sends_calls_on() {
    let url = PostgresServer::shared().create_database();
    let a = start_node("tb-a", &url, "drain_timeout = \"60s\"", "");
    let b = start_node("tb-b", &url, "", "");

    // Booked through A, called through B: bridged, recorded once, by B.
    let expert1 = expert("expert_answers.xml", "9", &[]);
    let booking1 = book(&a, &["+819000011".to_owned()], None, &expert_uri(&expert1));
    let caller1 = caller(
        &b,
        "caller_hangs_up.xml",
        "+81900001",
        "9",
        "0 96",
        &["-d", "1000"],
    );
    assert_passed("caller through B", caller1);
    assert_passed("expert", expert1);
    let call = ended_call(&a, &booking1);
    assert_eq!(call["node"], "tb-b", "{call}");
    assert_eq!(call["status"], "completed", "{call}");
    assert_eq!(call["end_reason"], "caller-hangup", "{call}");
    let (_, nodes) = b.api("GET", "/v1/nodes", TOKEN, None);
    let names: Vec<&str> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == "up")
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(names, ["tb-a", "tb-b"], "{nodes}");

    // A carries a call while it drains: it stays up, refusing new calls.
    let expert2 = expert("expert_answers.xml", "9", &[]);
    book(&b, &["+819000021".to_owned()], None, &expert_uri(&expert2));
    let caller2 = caller(
        &a,
        "caller_hangs_up.xml",
        "+81900002",
        "9",
        "0 96",
        &["-d", "10000"],
    );
    caller2
        .wait_for(Duration::from_secs(10), |trace| {
            trace.contains("SIP/2.0 200 OK").then_some(())
        })
        .expect("the call through A connects");
    a.signal("TERM");
    assert!(a.wait_for_log("draining", Duration::from_secs(5)));

    let refused = sipp_to(&a, "invite_unavailable.xml");
    assert!(
        refused.passed(),
        "INVITE to the draining node:\n{}",
        refused.output
    );
    let probed = sipp_to(&a, "options_draining.xml");
    assert!(
        probed.passed(),
        "OPTIONS to the draining node:\n{}",
        probed.output
    );

    // The same call, sent to B as Twilio's next origination URI would.
    let expert3 = expert("expert_answers.xml", "9", &[]);
    let booking3 = book(&a, &["+819000031".to_owned()], None, &expert_uri(&expert3));
    let caller3 = caller(
        &b,
        "caller_hangs_up.xml",
        "+81900003",
        "9",
        "0 96",
        &["-d", "500"],
    );
    assert_passed("the refused call, through B", caller3);
    assert_passed("expert 3", expert3);
    assert_eq!(ended_call(&b, &booking3)["node"], "tb-b");

    assert_passed("the call A drained", caller2);
    assert_passed("expert 2", expert2);
    let mut a = a;
    assert!(
        a.wait_exit(Duration::from_secs(20))
            .is_some_and(|s| s.success()),
        "A exits once its call ended: {:?}",
        a.logs()
    );
}

#[test]
fn a_killed_nodes_call_is_hung_up_and_captured_once_by_the_other() {
    let url = PostgresServer::shared().create_database();
    let fake = StripeFake::start();
    let stripe = stripe_section(&fake);
    let a = start_node("tb-a", &url, "", &stripe);
    let b = start_node("tb-b", &url, "", &stripe);

    let expert = SippPeer::start(
        "expert_answers.xml",
        None,
        "expert",
        &[("rtp_port", "9".to_owned())],
        &[],
        Duration::from_secs(60),
    );
    let booking = book_with_card(&b, "+819000041", &expert_uri(&expert));
    let caller = SippPeer::start(
        "caller_waits_bye.xml",
        a.sip_udp(),
        NUMBER,
        &[
            ("caller_prefix", "+81900004".to_owned()),
            ("rtp_port", "9".to_owned()),
            ("formats", "0 96".to_owned()),
        ],
        &[],
        Duration::from_secs(60),
    );
    let talking = call_of(&a, &booking, Duration::from_secs(15), |call| {
        call["status"] == "in-progress" && !call["payment_intent"].is_null()
    });
    assert_eq!(talking["node"], "tb-a");
    // Over Stripe's ¥50 minimum charge: about 4 s at ¥1,200 a minute.
    std::thread::sleep(Duration::from_secs(4));

    a.signal("KILL");
    let killed = Instant::now();
    let got_bye = |peer: &SippPeer| {
        peer.wait_for(Duration::from_secs(20), |trace| {
            trace.contains("BYE sip:").then(Instant::now)
        })
    };
    let (caller_bye, expert_bye) = (got_bye(&caller), got_bye(&expert));
    let last_bye = caller_bye
        .zip(expert_bye)
        .map(|(c, e)| c.max(e))
        .unwrap_or_else(|| {
            panic!(
                "both parties get a BYE:\n{}\n{}",
                caller.messages(),
                expert.messages()
            )
        });
    let takeover = last_bye - killed;
    println!(
        "takeover: kill -9 to both BYEs in {} ms",
        takeover.as_millis()
    );
    assert!(
        takeover <= Duration::from_secs(NODE_TIMEOUT_S + 2),
        "took {takeover:?}; B's log:\n{}",
        b.logs().join("\n")
    );
    assert_passed("caller", caller);
    assert_passed("expert", expert);

    let call = call_of(&b, &booking, Duration::from_secs(30), settled);
    assert_eq!(call["end_reason"], "recovered", "{call}");
    assert_eq!(
        (&call["node"], &call["taken_over_by"]),
        (&json!("tb-a"), &json!("tb-b"))
    );
    let operations: Vec<(&str, &str)> = call["settlements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["operation"].as_str().unwrap(),
                r["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        operations,
        [("authorize", "succeeded"), ("capture", "succeeded")]
    );
    let intent = call["payment_intent"].as_str().unwrap().to_owned();
    assert_eq!(captures_of(&fake, &intent), 1);
    let amount = call["amount"].as_i64().unwrap();
    assert!(
        (60..=100).contains(&amount),
        "3 to 5 s at ¥1,200/min: {call}"
    );

    // A comes back late: it settles nothing again.
    let a_again = start_node("tb-a", &url, "", &stripe);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(captures_of(&fake, &intent), 1);
    let after = call_of(&a_again, &booking, Duration::from_secs(5), settled);
    assert_eq!(after["amount"], call["amount"]);
    assert_eq!(after["settlements"], call["settlements"]);
}

#[test]
fn postgresql_restarted_mid_call_loses_and_doubles_nothing() {
    let mut server = PostgresServer::start();
    let url = server.create_database();
    let fake = StripeFake::start();
    let a = start_node("tb-a", &url, "", &stripe_section(&fake));

    // The expert hangs up after 6 s of talk, while the ledger is down.
    let expert = SippPeer::start(
        "expert_hangs_up.xml",
        None,
        "expert",
        &[("rtp_port", "9".to_owned())],
        &["-d", "6000"],
        Duration::from_secs(60),
    );
    let booking = book_with_card(&a, "+819000051", &expert_uri(&expert));
    let caller = SippPeer::start(
        "caller_waits_bye.xml",
        a.sip_udp(),
        NUMBER,
        &[
            ("caller_prefix", "+81900005".to_owned()),
            ("rtp_port", "9".to_owned()),
            ("formats", "0 96".to_owned()),
        ],
        &[],
        Duration::from_secs(60),
    );
    call_of(&a, &booking, Duration::from_secs(15), |call| {
        call["status"] == "in-progress" && !call["payment_intent"].is_null()
    });

    server.stop();
    assert!(
        a.wait_for_log("ledger unreachable", Duration::from_secs(5)),
        "{:?}",
        a.logs()
    );
    let (status, body) = a.get("/readyz", None);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("ledger unreachable"), "{body}");
    let refused = sipp_to(&a, "invite_unavailable.xml");
    assert!(
        refused.passed(),
        "INVITE while the ledger is away:\n{}",
        refused.output
    );

    // The call goes on and ends while the ledger is away; its close waits.
    assert_passed("caller", caller);
    assert_passed("expert", expert);
    let (_, metrics) = a.get("/metrics", None);
    assert!(metrics.contains("tollbridge_ledger_up 0"), "{metrics}");
    let waiting: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tollbridge_ledger_writes_waiting "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap();
    assert!(waiting >= 1, "{metrics}");
    assert!(
        fake.requests()
            .iter()
            .all(|r| !r.path.ends_with("/capture")),
        "nothing is captured before its row is committed"
    );

    server.start_again();
    let call = call_of(&a, &booking, Duration::from_secs(30), settled);
    assert_eq!(call["status"], "completed", "{call}");
    assert_eq!(call["end_reason"], "callee-hangup", "{call}");
    let talk_ms = call["talk_ms"].as_i64().unwrap();
    assert!((5_500..8_000).contains(&talk_ms), "{call}");
    let intent = call["payment_intent"].as_str().unwrap().to_owned();
    assert_eq!(captures_of(&fake, &intent), 1);
    let calls = a
        .api("GET", &format!("/v1/calls?booking={booking}"), TOKEN, None)
        .1;
    assert_eq!(calls["calls"].as_array().unwrap().len(), 1, "{calls}");
    // Ready again by the next heartbeat (the writes above may have gone
    // through another pooled connection first).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = a.get("/readyz", None);
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still not ready: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, metrics) = a.get("/metrics", None);
    assert!(metrics.contains("tollbridge_ledger_up 1"), "{metrics}");
    assert!(
        metrics.contains("tollbridge_ledger_writes_waiting 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollbridge_ledger_writes_dropped_total 0"),
        "{metrics}"
    );
}
