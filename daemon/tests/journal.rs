//! The journal of call writes across a ledger outage: a real PostgreSQL
//! server stopped under it and started again. Writes made while it is
//! away wait in order (one checkpoint per call), bounded; once it is back
//! they land once, the close with its settlement rows.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tollbridge_daemon::calls::journal::{CallWrite, Journal, Written};
use tollbridge_daemon::ledger::{CallEnd, CallStatus, Ledger, NewCall};
use tollbridge_daemon::shutdown::Background;
use tollbridge_e2e::postgres::PostgresServer;

const T0: i64 = 1_900_000_000_000;

async fn open(url: &str) -> Ledger {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || Ledger::open_postgres(&url, None, 2))
        .await
        .unwrap()
        .unwrap()
}

fn event(call_id: &str, status: CallStatus, at_ms: i64) -> CallWrite {
    CallWrite::Event {
        call_id: call_id.to_owned(),
        status,
        sip_code: None,
        detail: Some(format!("at {at_ms}")),
        warning: false,
        at_ms,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_wait_for_the_ledger_in_order_and_land_once() {
    let mut server = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap();
    let url = server.create_database();
    let ledger = open(&url).await;
    let journal = Arc::new(Journal::new(ledger.clone(), 100));
    for id in ["call_1", "call_2"] {
        ledger
            .begin_call(
                NewCall {
                    id: id.to_owned(),
                    sip_call_id: format!("{id}@test"),
                    twilio_call_sid: None,
                    caller: None,
                    called: None,
                },
                T0,
            )
            .await
            .unwrap();
    }
    assert_eq!(
        journal
            .write(event("call_1", CallStatus::InProgress, T0 + 1_000))
            .await,
        Written::Now(None)
    );

    let server = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .unwrap();
    let queued = [
        CallWrite::Checkpoint {
            call_ids: vec!["call_1".into(), "call_2".into()],
            at_ms: T0 + 2_000,
        },
        CallWrite::Checkpoint {
            call_ids: vec!["call_1".into()],
            at_ms: T0 + 3_000,
        },
        CallWrite::Close {
            call_id: "call_1".into(),
            end: CallEnd {
                status: CallStatus::Completed,
                reason: "caller-hangup".into(),
                talk_ms: 2_500,
                connected: true,
            },
            ended_ms: T0 + 3_500,
        },
        event("call_2", CallStatus::Ringing, T0 + 3_600),
    ];
    for write in queued {
        assert_eq!(journal.write(write).await, Written::Queued);
    }
    // call_1's first checkpoint was replaced by its second.
    assert_eq!(journal.waiting(), 4);
    assert_eq!(journal.dropped(), 0);

    let mut server = server;
    let _server = tokio::task::spawn_blocking(move || {
        server.start_again();
        server
    })
    .await
    .unwrap();
    let closed = Arc::new(Mutex::new(Vec::new()));
    let mut background = Background::default();
    {
        let (journal, closed) = (journal.clone(), closed.clone());
        let signal = background.signal();
        background.spawn("journal", async move {
            journal
                .flush(
                    move |call, priced| closed.lock().unwrap().push((call.to_owned(), priced)),
                    signal,
                )
                .await;
        });
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while journal.waiting() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "{journal:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    background.stop(Duration::from_secs(5)).await;
    assert_eq!(closed.lock().unwrap().len(), 1);

    let one = ledger.call("call_1".into()).await.unwrap().unwrap();
    assert_eq!(one.status, CallStatus::Completed);
    assert_eq!(one.talk_ms, Some(2_500));
    assert_eq!(one.ended_ms, Some(T0 + 3_500));
    let two = ledger.call("call_2".into()).await.unwrap().unwrap();
    assert_eq!(two.status, CallStatus::Ringing);
    assert_eq!(two.ended_ms, None);
    let checkpoints = ledger
        .run(|db| db.query("SELECT id, checkpoint_ms FROM calls ORDER BY id", &[]))
        .await
        .unwrap();
    let checkpoints: Vec<(String, Option<i64>)> = checkpoints
        .iter()
        .map(|r| (r.text(0).unwrap(), r.opt_int(1).unwrap()))
        .collect();
    assert_eq!(
        checkpoints,
        [
            ("call_1".to_owned(), Some(T0 + 3_000)),
            ("call_2".to_owned(), Some(T0 + 2_000))
        ]
    );
    // A close written twice (a write that timed out but landed) is once.
    let again = journal
        .write(CallWrite::Close {
            call_id: "call_1".into(),
            end: CallEnd {
                status: CallStatus::Completed,
                reason: "caller-hangup".into(),
                talk_ms: 9_000,
                connected: true,
            },
            ended_ms: T0 + 9_000,
        })
        .await;
    assert_eq!(again, Written::Now(None));
    assert_eq!(
        ledger.call("call_1".into()).await.unwrap().unwrap().talk_ms,
        Some(2_500)
    );
    ledger.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_checkpoints_first_and_counts() {
    let mut server = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap();
    let url = server.create_database();
    let ledger = open(&url).await;
    let journal = Journal::new(ledger.clone(), 3);
    let server = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .unwrap();
    let writes = [
        event("call_1", CallStatus::Ringing, T0),
        CallWrite::Checkpoint {
            call_ids: vec!["call_9".into()],
            at_ms: T0 + 1,
        },
        event("call_1", CallStatus::InProgress, T0 + 2),
        event("call_1", CallStatus::Completed, T0 + 3),
        event("call_1", CallStatus::Completed, T0 + 4),
    ];
    for write in writes {
        assert_eq!(journal.write(write).await, Written::Queued);
    }
    assert_eq!(journal.waiting(), 3);
    assert_eq!(
        journal.dropped(),
        2,
        "the checkpoint, then the oldest write"
    );
    drop(server);
    ledger.close().await;
}
