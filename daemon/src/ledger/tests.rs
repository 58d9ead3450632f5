#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn open(dir: &tempfile::TempDir) -> Ledger {
    Ledger::open_sqlite(&dir.path().join("t.db")).unwrap()
}

#[test]
fn migrations_are_valid() {
    sqlite_schema::MIGRATIONS.validate().unwrap();
}

#[tokio::test]
async fn an_empty_file_is_migrated_to_the_latest_schema() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir);
    let (version, tables, journal, synchronous, foreign_keys) = ledger
        .run(|db| {
            let tables: Vec<String> = db
                .query(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
                    &[],
                )?
                .iter()
                .map(|row| row.text(0))
                .collect::<Result<_, _>>()?;
            let pragma =
                |db: &mut dyn db::Db, name: &str| db.query_one(&format!("PRAGMA {name}"), &[]);
            Ok((
                pragma(db, "user_version")?.int(0)? as usize,
                tables,
                pragma(db, "journal_mode")?.text(0)?,
                pragma(db, "synchronous")?.int(0)?,
                pragma(db, "foreign_keys")?.int(0)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(version, sqlite_schema::LATEST_VERSION);
    assert_eq!(
        tables,
        [
            "bookings",
            "call_events",
            "call_legs",
            "calls",
            "event_deliveries",
            "events",
            "experts",
            "leases",
            "nodes",
            "recordings",
            "registrar_keys",
            "registrations",
            "settlements",
            "stripe_events",
            "webhook_endpoints",
        ]
    );
    assert_eq!(journal, "wal");
    assert_eq!(synchronous, 2, "synchronous=FULL");
    assert_eq!(foreign_keys, 1);
    ledger.close().await;

    // Opening again finds the schema current and changes nothing.
    let again = open(&dir);
    again.ping().await.unwrap();
}

#[tokio::test]
async fn a_database_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA user_version = {}",
        sqlite_schema::LATEST_VERSION + 1
    ))
    .unwrap();
    drop(conn);
    let error = Ledger::open_sqlite(&path).unwrap_err();
    assert!(matches!(error, LedgerError::TooNew { .. }), "{error}");
}

#[tokio::test]
async fn an_unopenable_path_names_the_file() {
    let error = Ledger::open_sqlite(Path::new("/nonexistent/dir/t.db")).unwrap_err();
    assert!(
        error.to_string().contains("/nonexistent/dir/t.db"),
        "{error}"
    );
}

#[tokio::test]
async fn a_closed_ledger_answers_closed() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir);
    let other = ledger.clone();
    ledger.close().await;
    assert!(matches!(other.ping().await, Err(LedgerError::Closed)));
}

/// Schema v7 rebuilds the bookings table that calls, settlements and
/// events refer to: a v6 file keeps every row and reference, its used
/// time is what its calls were billed, and foreign keys are enforced again
/// after.
#[tokio::test]
async fn a_version_6_file_keeps_its_bookings_and_references_through_v7() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA foreign_keys = ON;").unwrap();
    sqlite_schema::MIGRATIONS.to_version(&mut conn, 6).unwrap();
    conn.execute_batch(
        "INSERT INTO bookings (id, called, callers, callee, currency, price_per_minute, cap_seconds,
             window_start_ms, window_end_ms, state, created_ms, updated_ms)
         VALUES ('bk_1', '+81312345678', '[\"+819012345678\"]', '{\"uri\":\"sip:e@h\"}', 'jpy', 300,
                 1800, 1, 2, 'completed', 1, 1);
         INSERT INTO calls (id, booking_id, inbound_call_id, status, created_ms, ended_ms, billed_seconds)
         VALUES ('call_1', 'bk_1', 'a@b', 'completed', 1, 2, 66),
                ('call_2', 'bk_1', 'c@d', 'busy', 3, 4, 0);
         INSERT INTO settlements (id, booking_id, call_id, operation, idempotency_key, amount, currency,
             created_ms, updated_ms)
         VALUES ('st_1', 'bk_1', 'call_1', 'capture', 'k1', 330, 'jpy', 2, 2);
         INSERT INTO events (id, type, booking_id, booking_seq, call_id, created_ms, body)
         VALUES ('evt_1', 'call.ended', 'bk_1', 1, 'call_1', 2, '{}');",
    )
    .unwrap();
    drop(conn);

    let ledger = Ledger::open_sqlite(&path).unwrap();
    let booking = ledger.booking("bk_1".into()).await.unwrap().unwrap();
    assert_eq!(
        (booking.state, booking.used_seconds, booking.cap_seconds),
        (BookingState::Completed, 66, 1800)
    );
    let (version, dangling, refused, no_show) = ledger
        .run(|db| {
            let version = db.query_one("PRAGMA user_version", &[])?.int(0)?;
            let dangling = db.query("PRAGMA foreign_key_check", &[])?.len();
            let refused = db
                .execute(
                    "INSERT INTO calls (id, booking_id, inbound_call_id, status, created_ms)
                     VALUES ('call_x', 'bk_none', 'x@y', 'queued', 5)",
                    &[],
                )
                .is_err();
            let no_show = db.execute(
                "UPDATE bookings SET state = 'no-show' WHERE id = 'bk_1'",
                &[],
            )?;
            Ok((version, dangling, refused, no_show))
        })
        .await
        .unwrap();
    assert_eq!(
        (version, dangling, refused, no_show),
        (sqlite_schema::LATEST_VERSION as i64, 0, true, 1)
    );
}
