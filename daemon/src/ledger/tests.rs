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
            "leases",
            "nodes",
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
