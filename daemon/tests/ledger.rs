//! The ledger's behaviour, the same on both backends: every test here runs
//! once on SQLite and once on PostgreSQL (`sqlite::...`, `postgres::...`).
//! What only one backend has (file pragmas, server sessions) is tested
//! beside that backend's code.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use support::Backend;
use tollbridge_daemon::args;
use tollbridge_daemon::calls::route::Route;
use tollbridge_daemon::ledger::{
    BookingState, BookingWrite, CallStatus, Ledger, LedgerError, SettlementState,
};
use tollbridge_media::bridge::Side;

use support::fixtures::*;

async fn the_schema_enforces_its_rules(backend: Backend) {
    let ledger = support::open(backend).await;
    let attempts: [&[&str]; 5] = [
        // An event for a call that does not exist: foreign key.
        &["INSERT INTO call_events VALUES ('call_x', 1, 0, 'queued', NULL, NULL, NULL)"],
        // A status outside Twilio's vocabulary.
        &["INSERT INTO calls (id, inbound_call_id, status, created_ms) VALUES ('c1', 'x', 'answered', 0)"],
        // A valid call and event.
        &[
            "INSERT INTO calls (id, inbound_call_id, created_ms) VALUES ('c2', 'x', 0)",
            "INSERT INTO call_events VALUES ('c2', 1, 0, 'queued', NULL, NULL, NULL)",
        ],
        // A negative amount.
        &["INSERT INTO settlements (id, operation, idempotency_key, amount, currency, created_ms, updated_ms)
           VALUES ('s1', 'capture', 'k1', -5, 'jpy', 0, 0)"],
        // A reused idempotency key.
        &[
            "INSERT INTO settlements (id, operation, idempotency_key, amount, currency, created_ms, updated_ms)
             VALUES ('s2', 'capture', 'k2', 5, 'jpy', 0, 0)",
            "INSERT INTO settlements (id, operation, idempotency_key, amount, currency, created_ms, updated_ms)
             VALUES ('s3', 'capture', 'k2', 5, 'jpy', 0, 0)",
        ],
    ];
    let mut results = Vec::new();
    for statements in attempts {
        let statements: Vec<String> = statements.iter().map(|s| (*s).to_owned()).collect();
        let ran = ledger
            .run(move |db| {
                for sql in &statements {
                    db.execute(sql, &[])?;
                }
                Ok(())
            })
            .await;
        results.push(ran.is_ok());
    }
    assert_eq!(results, [false, false, true, false, false]);
    // A failed transaction leaves nothing: not even the first insert of k2.
    assert_eq!(ledger.settlement_counts().await.unwrap(), []);
    let reused = ledger
        .run(|db| {
            let insert = "INSERT INTO settlements (id, operation, idempotency_key, amount, currency, created_ms, updated_ms)
                          VALUES (?1, 'capture', 'k3', 5, 'jpy', 0, 0)";
            db.execute(insert, args!["s4"])?;
            db.execute(insert, args!["s5"])
        })
        .await;
    assert!(
        matches!(reused, Err(LedgerError::UniqueViolation(_))),
        "{reused:?}"
    );
}

async fn values_of_every_kind_round_trip(backend: Backend) {
    let ledger = support::open(backend).await;
    let row = ledger
        .run(|db| {
            db.execute(
                "INSERT INTO calls (id, inbound_call_id, created_ms, caller_rtp_port, end_reason)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                args!["c1", "é 😀 'quoted'", i64::MAX, 65535u16, None::<String>],
            )?;
            db.execute(
                "INSERT INTO call_legs VALUES (?1, 'caller', 1, 2, 3, 4, 5, ?2, 0, 0, ?3, 0)",
                args!["c1", 1.25f64, 7i64],
            )?;
            db.query_one(
                "SELECT c.inbound_call_id, c.created_ms, c.caller_rtp_port, c.end_reason, l.jitter_ms,
                        c.end_reason IS NULL, COUNT(*)
                 FROM calls c JOIN call_legs l ON l.call_id = c.id WHERE c.id = ?1
                 GROUP BY c.inbound_call_id, c.created_ms, c.caller_rtp_port, c.end_reason, l.jitter_ms",
                args!["c1"],
            )
        })
        .await
        .unwrap();
    assert_eq!(row.text(0).unwrap(), "é 😀 'quoted'");
    assert_eq!(row.int(1).unwrap(), i64::MAX);
    assert_eq!(row.int(2).unwrap(), 65535);
    assert_eq!(row.opt_text(3).unwrap(), None);
    assert_eq!(row.real(4).unwrap(), 1.25);
    assert!(row.flag(5).unwrap());
    assert_eq!(row.int(6).unwrap(), 1);
}

async fn a_booking_is_created_read_listed_and_canceled(backend: Backend) {
    let ledger = support::open(backend).await;
    let created = ledger
        .create_booking(
            "bk_1".into(),
            booking("bk_1", "+81312345678", false, None),
            T0,
        )
        .await
        .unwrap();
    assert_eq!(created.state, BookingState::Active);
    assert!(created.callers.contains(&"+819012345678".to_owned()));
    let again = ledger
        .create_booking(
            "bk_1".into(),
            booking("bk_1", "+81312345678", false, None),
            T0,
        )
        .await;
    assert!(matches!(again, Err(BookingWrite::Exists)), "{again:?}");
    ledger
        .create_booking(
            "bk_2".into(),
            booking("bk_2", "+81399999999", false, None),
            T0 + 1,
        )
        .await
        .unwrap();

    let listed = ledger.bookings(None, None, None, 10).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, ["bk_2", "bk_1"], "newest first");
    let for_number = ledger
        .bookings(
            Some("+81312345678".into()),
            Some(BookingState::Active),
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(for_number.len(), 1);
    assert_eq!(ledger.booking("bk_1".into()).await.unwrap(), Some(created));
    assert_eq!(ledger.booking("bk_none".into()).await.unwrap(), None);

    let canceled = ledger
        .cancel_booking("bk_1".into(), T0, std::time::Duration::from_secs(0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(canceled.state, BookingState::Canceled);
    assert_eq!(
        ledger
            .bookings(None, Some(BookingState::Canceled), None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn a_call_is_routed_metered_closed_and_settled_in_step(backend: Backend) {
    let ledger = support::open(backend).await;
    let (cap, has_card) = routed_call(&ledger, "call_1", "bk_1", "+81312345678", true).await;
    assert_eq!((cap, has_card), (Some(1800), true));
    let booking_now = ledger.booking("bk_1".into()).await.unwrap().unwrap();
    assert_eq!(booking_now.state, BookingState::InCall);

    // The card hold is written and marked sent before it goes out.
    let (hold, terms) = ledger
        .begin_hold("call_1".into(), "bk_1".into(), T0 + 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hold.state, SettlementState::Sent);
    assert_eq!(terms.remaining_seconds, 1800);
    ledger
        .hold_succeeded(
            hold.facts.id.clone(),
            "pi_1".into(),
            Some(T0 + 7 * 24 * HOUR_MS),
            T0 + 20,
        )
        .await
        .unwrap();

    for (status, code, at) in [
        (CallStatus::Ringing, Some(180), T0 + 100),
        (CallStatus::InProgress, Some(200), T0 + 1_000),
    ] {
        ledger
            .record_event("call_1".into(), status, code, None, at)
            .await
            .unwrap();
    }
    ledger
        .record_callee_call_id("call_1".into(), "out@tollbridge".into())
        .await
        .unwrap();
    ledger
        .record_dialog("call_1".into(), Side::Caller, "{\"dialog\":1}".into())
        .await
        .unwrap();
    ledger
        .record_rtp_ports("call_1".into(), [20000, 20002])
        .await
        .unwrap();
    ledger
        .checkpoint(vec!["call_1".into()], T0 + 31_000)
        .await
        .unwrap();

    let priced = ledger
        .close_call("call_1".into(), talked(61_500), T0 + 62_500)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (priced.talk_seconds, priced.billed_seconds, priced.amount),
        (62, 66, 330),
        "62 s in 6 s increments at 300/min"
    );
    // Closing twice changes nothing.
    let twice = ledger
        .close_call("call_1".into(), talked(99_000), T0 + 99_000)
        .await
        .unwrap();
    assert_eq!(twice, None);

    let record = ledger.call("call_1".into()).await.unwrap().unwrap();
    assert_eq!(record.status, CallStatus::Completed);
    assert_eq!(record.booking.as_deref(), Some("bk_1"));
    assert_eq!(record.amount, Some(330));
    assert_eq!(record.answered_ms, Some(T0 + 1_000));
    assert_eq!(record.ringing_ms, Some(T0 + 100));
    assert_eq!(
        record.callee_leg.sip_call_id.as_deref(),
        Some("out@tollbridge")
    );
    assert_eq!(record.caller_leg.relay_port, Some(20000));
    assert_eq!(record.payment_intent.as_deref(), Some("pi_1"));
    let seqs: Vec<i64> = record.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    let operations: Vec<(&str, &str, i64)> = record
        .settlements
        .iter()
        .map(|s| (s.operation.as_str(), s.state.as_str(), s.amount))
        .collect();
    assert_eq!(
        operations,
        [
            ("authorize", "succeeded", 9000),
            ("capture", "pending", 330)
        ]
    );
    // 66 s of its 1,800 s are used: it takes a call back.
    let booking_after = ledger.booking("bk_1".into()).await.unwrap().unwrap();
    assert_eq!(
        (booking_after.state, booking_after.used_seconds),
        (BookingState::Active, 66)
    );
    let due = ledger
        .claim_due_settlements(T0 + 62_500, false)
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].facts.amount, 330);
}

async fn two_calls_for_one_booking_claim_it_once(backend: Backend) {
    let ledger = support::open(backend).await;
    let other_node = support::reopen(&ledger).await;
    ledger
        .create_booking(
            "bk_1".into(),
            booking("bk_1", "+81312345678", false, None),
            T0,
        )
        .await
        .unwrap();
    for id in ["call_a", "call_b"] {
        ledger
            .begin_call(new_call(id, "+81312345678"), T0)
            .await
            .unwrap();
    }
    let (a, b) = tokio::join!(
        ledger.route_and_claim("call_a".into(), Some("+81312345678".into()), T0, first),
        other_node.route_and_claim("call_b".into(), Some("+81312345678".into()), T0, first),
    );
    let routes = [a.unwrap().route, b.unwrap().route];
    let claimed = routes
        .iter()
        .filter(|r| matches!(r, Route::Booking(_)))
        .count();
    assert_eq!(claimed, 1, "{routes:?}");
    assert!(
        routes.iter().any(|r| matches!(
            r,
            Route::Refuse(tollbridge_sip::reject::RejectReason::BookingInCall)
        )),
        "{routes:?}"
    );
    other_node.close().await;
}

async fn a_crash_leaves_calls_closed_at_their_checkpoint(backend: Backend) {
    let ledger = support::open(backend).await;
    routed_call(&ledger, "call_1", "bk_1", "+81312345678", false).await;
    ledger
        .record_event(
            "call_1".into(),
            CallStatus::InProgress,
            Some(200),
            None,
            T0 + 1_000,
        )
        .await
        .unwrap();
    ledger
        .record_dialog("call_1".into(), Side::Callee, "{}".into())
        .await
        .unwrap();
    ledger
        .record_rtp_ports("call_1".into(), [20010, 20012])
        .await
        .unwrap();
    ledger
        .checkpoint(vec!["call_1".into()], T0 + 13_000)
        .await
        .unwrap();

    assert_eq!(ledger.recover_open_calls(T0 + 20_000).await.unwrap(), 1);
    assert_eq!(ledger.recover_open_calls(T0 + 20_000).await.unwrap(), 0);
    let record = ledger.call("call_1".into()).await.unwrap().unwrap();
    assert_eq!(record.end_reason.as_deref(), Some("recovered"));
    assert_eq!(record.talk_ms, Some(12_000), "to the last checkpoint");
    assert_eq!(record.amount, Some(60));

    let unfinished = ledger.unfinished_calls().await.unwrap();
    assert_eq!(unfinished.len(), 1);
    assert_eq!(unfinished[0].rtp_ports, [20010, 20012]);
    assert_eq!(unfinished[0].dialogs.len(), 1);
    ledger
        .record_hangup_outcome(
            "call_1".into(),
            unfinished[0].status,
            "BYE answered 200".into(),
            T0 + 21_000,
        )
        .await
        .unwrap();
    ledger.hangups_done("call_1".into()).await.unwrap();
    assert!(ledger.unfinished_calls().await.unwrap().is_empty());
    let released = ledger
        .recently_released_ports(T0, T0 + 30_000)
        .await
        .unwrap();
    assert_eq!(released.len(), 2, "{released:?}");
}

async fn a_stripe_event_applies_once_whichever_node_receives_it(backend: Backend) {
    let ledger = support::open(backend).await;
    let other_node = support::reopen(&ledger).await;
    let event = serde_json::json!({"object": "payment_intent", "id": "pi_x", "status": "canceled"});
    let (a, b) = tokio::join!(
        ledger.apply_stripe_event(
            "evt_1".into(),
            "payment_intent.canceled".into(),
            event.clone(),
            T0
        ),
        other_node.apply_stripe_event(
            "evt_1".into(),
            "payment_intent.canceled".into(),
            event.clone(),
            T0
        ),
    );
    let fresh = [a.unwrap(), b.unwrap()];
    assert_eq!(fresh.iter().filter(|f| **f).count(), 1, "{fresh:?}");
    assert!(
        !ledger
            .apply_stripe_event("evt_1".into(), "payment_intent.canceled".into(), event, T0)
            .await
            .unwrap()
    );
    other_node.close().await;
}

on_both_backends!(
    the_schema_enforces_its_rules,
    values_of_every_kind_round_trip,
    a_booking_is_created_read_listed_and_canceled,
    a_call_is_routed_metered_closed_and_settled_in_step,
    two_calls_for_one_booking_claim_it_once,
    a_crash_leaves_calls_closed_at_their_checkpoint,
    a_stripe_event_applies_once_whichever_node_receives_it,
);

/// The two schemas, table by table and column by column: same names,
/// same kinds (integer, text, fraction), same nullability.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_schemas_have_the_same_tables_and_columns() {
    let sqlite = support::open(Backend::Sqlite).await;
    let postgres = support::open(Backend::Postgres).await;
    let from_sqlite = sqlite
        .run(|db| {
            db.query(
                "SELECT m.name, p.name, upper(p.type), p.\"notnull\" OR p.pk > 0
                 FROM sqlite_master m JOIN pragma_table_info(m.name) p
                 WHERE m.type = 'table' ORDER BY m.name, p.name",
                &[],
            )
        })
        .await
        .unwrap();
    let from_postgres = postgres
        .run(|db| {
            db.query(
                "SELECT table_name::text, column_name::text, upper(data_type::text), is_nullable = 'NO'
                 FROM information_schema.columns
                 WHERE table_schema = 'public' AND table_name <> 'schema_version'
                 ORDER BY table_name, column_name",
                &[],
            )
        })
        .await
        .unwrap();
    let kind = |sql_type: &str| match sql_type {
        "INTEGER" | "BIGINT" => "integer",
        "TEXT" => "text",
        "REAL" | "DOUBLE PRECISION" => "fraction",
        other => panic!("a column of type {other}"),
    };
    let columns =
        |rows: &[tollbridge_daemon::ledger::db::Row]| -> Vec<(String, String, &'static str, bool)> {
            rows.iter()
                .map(|r| {
                    (
                        r.text(0).unwrap(),
                        r.text(1).unwrap(),
                        kind(&r.text(2).unwrap()),
                        r.flag(3).unwrap(),
                    )
                })
                .collect()
        };
    let (from_sqlite, from_postgres) = (columns(&from_sqlite), columns(&from_postgres));
    assert!(from_sqlite.len() > 60, "{from_sqlite:?}");
    assert_eq!(from_sqlite, from_postgres);
}

/// Several nodes starting at once on an empty database: one migrates,
/// the others wait for it and find the schema current.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_postgresql_once() {
    let url = tollbridge_e2e::postgres::PostgresServer::shared().create_database();
    let opening: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::task::spawn_blocking(move || Ledger::open_postgres(&url, None, 1))
        })
        .collect();
    for open in opening {
        let ledger = open.await.unwrap().unwrap();
        ledger.ping().await.unwrap();
        ledger.close().await;
    }
    let server = tollbridge_e2e::postgres::PostgresServer::shared();
    let database = url.split('/').nth(3).unwrap().split('?').next().unwrap();
    assert_eq!(
        server.psql(database, "SELECT version FROM schema_version"),
        "14"
    );
}

/// A PostgreSQL ledger written by a newer Tollbridge is refused, naming
/// both versions; a wrong URL or an unreachable server names the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_refuses_what_it_cannot_use() {
    let server = tollbridge_e2e::postgres::PostgresServer::shared();
    let url = server.create_database();
    let database = url
        .split('/')
        .nth(3)
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let opened = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || Ledger::open_postgres(&url, None, 1))
            .await
            .unwrap()
            .unwrap()
    };
    opened.close().await;
    server.psql(&database, "UPDATE schema_version SET version = 99");
    let attempts = [
        url.clone(),
        "postgres://nobody@127.0.0.1:1/none?connect_timeout=1".to_owned(),
        "postgres://x@host/db?sslmode=bogus".to_owned(),
    ];
    let mut errors = Vec::new();
    for url in attempts {
        let error = tokio::task::spawn_blocking(move || Ledger::open_postgres(&url, None, 1))
            .await
            .unwrap()
            .unwrap_err();
        errors.push(error);
    }
    assert!(
        matches!(
            errors[0],
            LedgerError::TooNew {
                found: 99,
                supported: 14,
                ..
            }
        ),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].to_string().contains("127.0.0.1:1"),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].to_string().contains("database.url"),
        "{}",
        errors[2]
    );
}

/// The way production servers are set up (docs/cluster.md): a role that
/// owns its database and logs in with a SCRAM password. The ledger
/// migrates and works as that role; a wrong password or none is refused
/// at open, naming the server and never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_as_an_owner_role_with_a_password() {
    let server = tollbridge_e2e::postgres::PostgresServer::shared();
    let url = server.create_role_and_database("tb_owner", "right-horse-battery");
    let open = |password: Option<&'static str>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || Ledger::open_postgres(&url, password, 1))
    };
    for password in [Some("wrong-horse-battery"), None] {
        let error = open(password).await.unwrap().unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, LedgerError::Open { .. }), "{text}");
        assert!(text.contains("tb_owner"), "{text}");
        assert!(!text.contains("horse-battery"), "{text}");
    }
    let ledger = open(Some("right-horse-battery")).await.unwrap().unwrap();
    ledger.ping().await.unwrap();
    ledger.heartbeat(T0, false).await.unwrap();
    assert_eq!(ledger.nodes().await.unwrap().len(), 1);
    ledger.close().await;
    assert_eq!(
        server.psql("tb_owner", "SELECT version FROM schema_version"),
        "14"
    );
    assert_eq!(
        server.psql(
            "tb_owner",
            "SELECT tableowner FROM pg_tables WHERE tablename = 'calls'"
        ),
        "tb_owner"
    );
}
