//! The ledger's write cost, SQLite against PostgreSQL on the same machine
//! in one run: the checkpoint of 1,000 talking calls (one transaction,
//! written every `billing.checkpoint_interval`), and the writes one call
//! makes from its INVITE to its close, at 1 and 16 calls at a time.
//!
//! `cargo bench -p tollbridge --bench ledger -- [CALLS] [ROUNDS]`
//! (defaults: 1,000 calls, 40 checkpoint rounds). PostgreSQL is a
//! throwaway server started here (Unix socket, default durability:
//! `fsync` and `synchronous_commit` on); SQLite is a file in a temporary
//! directory (WAL, `synchronous=FULL`), as the daemon runs them. The two
//! backends take turns round by round so machine noise hits both alike.
//! Prints Markdown tables.

// A benchmark tool: a failed setup step aborts it with a message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use tollbridge_daemon::bookings::model::{Callee, NewBooking, Tariff, ValidBooking, Window};
use tollbridge_daemon::calls::route::{Candidate, Route};
use tollbridge_daemon::ledger::{CallEnd, CallStatus, Ledger, NewCall};
use tollbridge_e2e::postgres::PostgresServer;
use tollbridge_media::bridge::Side;

const T0: i64 = 1_900_000_000_000;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(mut samples: Vec<f64>) -> (f64, f64, f64) {
    samples.sort_by(|a, b| a.total_cmp(b));
    (
        percentile(&samples, 0.5),
        percentile(&samples, 0.9),
        percentile(&samples, 0.99),
    )
}

fn booking(id: &str, called: &str, caller: &str) -> ValidBooking {
    ValidBooking {
        booking: NewBooking {
            id: Some(id.to_owned()),
            called: called.to_owned(),
            callers: vec![caller.to_owned()],
            pin: None,
            callee: Callee::Uri {
                uri: "sip:expert@127.0.0.1:5099".to_owned(),
            },
            tariff: Tariff {
                currency: "jpy".to_owned(),
                price_per_minute: 300,
                increment_seconds: 1,
                minimum_seconds: 0,
                under_minimum: "cancel".to_owned(),
                recording_price_per_minute: 0,
            },
            cap_seconds: 3600,
            window: Window {
                start: String::new(),
                end: String::new(),
            },
            stripe: None,
            cancellation_fee: None,
            language: None,
            extension: None,
            recording: None,
        },
        window_start_ms: T0 - 3_600_000,
        window_end_ms: T0 + 3_600_000,
        minimum_charge: 50,
    }
}

fn new_call(id: &str, called: &str, caller: &str) -> NewCall {
    NewCall {
        id: id.to_owned(),
        sip_call_id: format!("{id}@bench"),
        twilio_call_sid: None,
        caller: Some(caller.to_owned()),
        called: Some(called.to_owned()),
    }
}

fn first(candidates: &[Candidate]) -> Route {
    candidates.first().map_or(
        Route::Refuse(tollbridge_sip::reject::RejectReason::UnknownNumber),
        |c| Route::Booking(c.id.clone()),
    )
}

/// Every ledger write of one call from INVITE to close, as the daemon
/// makes them (one transaction each).
async fn one_call(ledger: &Ledger, n: usize) {
    let id = format!("call_{n}");
    let called = format!("+8150{n:08}");
    let caller = format!("+8190{n:08}");
    ledger
        .create_booking(
            format!("bk_{n}"),
            booking(&format!("bk_{n}"), &called, &caller),
            T0,
        )
        .await
        .unwrap();
    ledger
        .begin_call(new_call(&id, &called, &caller), T0)
        .await
        .unwrap();
    let tollbridge_daemon::ledger::Routed { route, .. } = ledger
        .route_and_claim(id.clone(), Some(called), T0, first)
        .await
        .unwrap();
    assert!(matches!(route, Route::Booking(_)));
    ledger
        .record_rtp_ports(id.clone(), [20000, 20002])
        .await
        .unwrap();
    ledger
        .record_event(id.clone(), CallStatus::Ringing, Some(180), None, T0 + 100)
        .await
        .unwrap();
    ledger
        .record_callee_call_id(id.clone(), format!("{id}@callee"))
        .await
        .unwrap();
    ledger
        .record_event(
            id.clone(),
            CallStatus::InProgress,
            Some(200),
            None,
            T0 + 1_000,
        )
        .await
        .unwrap();
    for side in [Side::Caller, Side::Callee] {
        ledger
            .record_dialog(id.clone(), side, "{\"route\":[]}".to_owned())
            .await
            .unwrap();
    }
    ledger
        .close_call(
            id,
            CallEnd {
                status: CallStatus::Completed,
                reason: "caller-hangup".to_owned(),
                talk_ms: 60_000,
                connected: true,
            },
            T0 + 61_000,
        )
        .await
        .unwrap();
}

/// Calls through the ledger per second, `parallel` at a time.
async fn setups_per_second(ledger: &Ledger, calls: usize, parallel: usize, offset: usize) -> f64 {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..parallel {
        let ledger = ledger.clone();
        tasks.spawn(async move {
            let mut n = worker;
            while n < calls {
                one_call(&ledger, offset + n).await;
                n += parallel;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    calls as f64 / started.elapsed().as_secs_f64()
}

/// `calls` calls talking: begun, routed, answered, never closed.
async fn talking_calls(ledger: &Ledger, calls: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(calls);
    for n in 0..calls {
        let id = format!("talk_{n}");
        let called = format!("+8160{n:08}");
        let caller = format!("+8170{n:08}");
        ledger
            .create_booking(
                format!("bt_{n}"),
                booking(&format!("bt_{n}"), &called, &caller),
                T0,
            )
            .await
            .unwrap();
        ledger
            .begin_call(new_call(&id, &called, &caller), T0)
            .await
            .unwrap();
        ledger
            .route_and_claim(id.clone(), Some(called), T0, first)
            .await
            .unwrap();
        ledger
            .record_event(
                id.clone(),
                CallStatus::InProgress,
                Some(200),
                None,
                T0 + 1_000,
            )
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

struct Backend {
    name: &'static str,
    ledger: Ledger,
    checkpoints_ms: Vec<f64>,
    setups: Vec<(usize, f64)>,
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let calls: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(40);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = PostgresServer::start();
    let url = server.create_database();
    let sqlite = Ledger::open_sqlite(&dir.path().join("bench.db")).unwrap();
    let postgres = Ledger::open_postgres(&url, None, 4).unwrap();
    runtime.block_on(async {
        let mut backends = [
            Backend {
                name: "SQLite",
                ledger: sqlite,
                checkpoints_ms: Vec::new(),
                setups: Vec::new(),
            },
            Backend {
                name: "PostgreSQL",
                ledger: postgres,
                checkpoints_ms: Vec::new(),
                setups: Vec::new(),
            },
        ];
        let mut talking = Vec::new();
        for backend in &backends {
            talking.push(talking_calls(&backend.ledger, calls).await);
        }
        for round in 0..rounds {
            for (backend, ids) in backends.iter_mut().zip(&talking) {
                let started = Instant::now();
                backend
                    .ledger
                    .checkpoint(ids.clone(), T0 + 2_000 + round as i64)
                    .await
                    .unwrap();
                backend
                    .checkpoints_ms
                    .push(started.elapsed().as_secs_f64() * 1000.0);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut offset = 0;
        for parallel in [1usize, 16] {
            let per_round = if parallel == 1 { 200 } else { 800 };
            for backend in backends.iter_mut() {
                let rate = setups_per_second(&backend.ledger, per_round, parallel, offset).await;
                backend.setups.push((parallel, rate));
            }
            offset += per_round;
        }

        println!(
            "### Checkpoint of {calls} talking calls ({rounds} rounds, one transaction each)\n"
        );
        println!("| backend | p50 ms | p90 ms | p99 ms | per call µs (p50) |");
        println!("|---|---|---|---|---|");
        for backend in &backends {
            let (p50, p90, p99) = summary(backend.checkpoints_ms.clone());
            println!(
                "| {} | {p50:.1} | {p90:.1} | {p99:.1} | {:.1} |",
                backend.name,
                p50 * 1000.0 / calls as f64
            );
        }
        println!("\n### Call setups through the ledger (every write of a call, INVITE to close)\n");
        println!("| backend | calls at a time | calls/s |");
        println!("|---|---|---|");
        for backend in &backends {
            for (parallel, rate) in &backend.setups {
                println!("| {} | {parallel} | {rate:.0} |", backend.name);
            }
        }
        for backend in &backends {
            backend.ledger.close().await;
        }
    });
    drop(server);
}
