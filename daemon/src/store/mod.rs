//! The ledger database: one SQLite file written by one owner thread.
//!
//! SQLite calls block, so no tokio task touches the connection: every
//! operation is a closure sent to the owner thread, and the caller awaits
//! its answer. One writer also means no `SQLITE_BUSY` between our own
//! writers and a single place to batch (meter checkpoints for all calls in
//! one transaction). The file runs in WAL mode with `synchronous=FULL`, so a
//! committed row survives power loss, and foreign keys are enforced.

mod schema;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

pub(crate) use schema::LATEST_VERSION;

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened or prepared.
    #[error("cannot open database {path}: {reason}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The schema could not be brought up to date.
    #[error("cannot migrate database {path}: {reason}")]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The file was written by a newer Tollbridge.
    #[error(
        "database {path} has schema version {found}, newer than this build's {supported}; upgrade Tollbridge"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Version found in the file.
        found: usize,
        /// Newest version this build knows.
        supported: usize,
    },
    /// A query failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The owner thread is gone (the store was closed or crashed).
    #[error("the database thread has stopped")]
    Closed,
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// What the owner thread is asked to do.
enum Message {
    /// Run a job on the connection.
    Run(Job),
    /// Close the connection, then say so.
    Stop(oneshot::Sender<()>),
}

/// A handle to the database owner thread. Cheap to clone; the thread ends
/// when [`Store::close`] is called or the last handle is dropped.
#[derive(Clone)]
pub struct Store {
    jobs: mpsc::Sender<Message>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Settlement rows counted by state, for `/metrics`.
pub type SettlementCounts = Vec<(String, u64)>;

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`, then
    /// starts its owner thread. Blocking: call it before serving, or from
    /// `spawn_blocking`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut conn = open_connection(path)?;
        migrate(&mut conn, path)?;
        let (jobs, queue) = mpsc::channel::<Message>();
        thread::Builder::new()
            .name("tollbridge-db".to_owned())
            .spawn(move || {
                for message in queue {
                    match message {
                        Message::Run(job) => job(&mut conn),
                        Message::Stop(done) => {
                            // Closing the connection checkpoints the WAL.
                            drop(conn);
                            let _ = done.send(());
                            return;
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Open {
                path: path.to_owned(),
                reason: format!("cannot start the database thread: {e}"),
            })?;
        Ok(Store {
            jobs,
            path: path.to_owned(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the owner thread and returns its result.
    pub async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            // The caller may have given up waiting; nothing to do then.
            let _ = reply.send(f(conn));
        });
        self.jobs
            .send(Message::Run(job))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Proves the owner thread is alive and the file answers a query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    /// How many settlement rows are in each state.
    pub async fn settlement_counts(&self) -> Result<SettlementCounts, StoreError> {
        self.call(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT state, COUNT(*) FROM settlements GROUP BY state ORDER BY state",
            )?;
            let rows = statement.query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })?;
            let counts = rows.collect::<Result<Vec<_>, _>>()?;
            Ok(counts
                .into_iter()
                .map(|(state, n)| (state, u64::try_from(n).unwrap_or(0)))
                .collect())
        })
        .await
    }

    /// Finishes the jobs already queued, closes the file and stops the owner
    /// thread; every handle answers [`StoreError::Closed`] afterwards.
    pub async fn close(self) {
        let (done, finished) = oneshot::channel::<()>();
        if self.jobs.send(Message::Stop(done)).is_ok() {
            let _ = finished.await;
        }
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let open_error = |reason: String| StoreError::Open {
        path: path.to_owned(),
        reason,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(e.to_string()))?;
    let journal_mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|e| open_error(e.to_string()))?;
    if !journal_mode.eq_ignore_ascii_case("wal") {
        return Err(open_error(format!(
            "cannot switch to WAL mode (journal_mode is {journal_mode})"
        )));
    }
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
    )
    .map_err(|e| open_error(e.to_string()))?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| StoreError::Migrate {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    let found = usize::try_from(found).unwrap_or(usize::MAX);
    if found > LATEST_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found,
            supported: LATEST_VERSION,
        });
    }
    schema::MIGRATIONS
        .to_latest(conn)
        .map_err(|e| StoreError::Migrate {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pragma<T: rusqlite::types::FromSql>(conn: &Connection, name: &str) -> T {
        conn.query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn migrations_are_valid() {
        schema::MIGRATIONS.validate().unwrap();
    }

    #[tokio::test]
    async fn an_empty_file_is_migrated_to_the_latest_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = Store::open(&path).unwrap();
        let (version, tables, journal, synchronous, foreign_keys) = store
            .call(|conn| {
                let mut statement = conn
                    .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?;
                let tables: Vec<String> = statement
                    .query_map([], |row| row.get(0))?
                    .collect::<Result<_, _>>()?;
                Ok((
                    pragma::<i64>(conn, "user_version") as usize,
                    tables,
                    pragma::<String>(conn, "journal_mode"),
                    pragma::<i64>(conn, "synchronous"),
                    pragma::<i64>(conn, "foreign_keys"),
                ))
            })
            .await
            .unwrap();
        assert_eq!(version, LATEST_VERSION);
        assert_eq!(
            tables,
            [
                "bookings",
                "call_events",
                "call_legs",
                "calls",
                "settlements",
                "stripe_events"
            ]
        );
        assert_eq!(journal, "wal");
        assert_eq!(synchronous, 2, "synchronous=FULL");
        assert_eq!(foreign_keys, 1);
        store.close().await;

        // Opening again finds the schema current and changes nothing.
        let again = Store::open(&path).unwrap();
        again.ping().await.unwrap();
    }

    #[tokio::test]
    async fn the_schema_enforces_its_rules() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let results = store
            .call(|conn| {
                let run = |sql: &str| conn.execute_batch(sql).is_ok();
                Ok([
                    // An event for a call that does not exist: foreign key.
                    run("INSERT INTO call_events VALUES ('call_x', 1, 0, 'queued', NULL, NULL, NULL)"),
                    // A status outside Twilio's vocabulary.
                    run("INSERT INTO calls (id, inbound_call_id, status, created_ms) VALUES ('c1', 'x', 'answered', 0)"),
                    // A valid call and event.
                    run("INSERT INTO calls (id, inbound_call_id, created_ms) VALUES ('c2', 'x', 0);
                         INSERT INTO call_events VALUES ('c2', 1, 0, 'queued', NULL, NULL, NULL)"),
                    // A negative amount.
                    run("INSERT INTO settlements (id, operation, idempotency_key, amount, currency, created_ms, updated_ms)
                         VALUES ('s1', 'capture', 'k1', -5, 'jpy', 0, 0)"),
                    // A reused idempotency key.
                    run("INSERT INTO settlements (id, operation, idempotency_key, amount, currency, created_ms, updated_ms)
                         VALUES ('s2', 'capture', 'k2', 5, 'jpy', 0, 0);
                         INSERT INTO settlements (id, operation, idempotency_key, amount, currency, created_ms, updated_ms)
                         VALUES ('s3', 'capture', 'k2', 5, 'jpy', 0, 0)"),
                ])
            })
            .await
            .unwrap();
        assert_eq!(results, [false, false, true, false, false]);
        let counts = store.settlement_counts().await.unwrap();
        assert_eq!(
            counts,
            [("pending".to_owned(), 1)],
            "the first insert of k2 stays"
        );
    }

    #[tokio::test]
    async fn a_database_from_a_newer_build_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&format!("PRAGMA user_version = {}", LATEST_VERSION + 1))
            .unwrap();
        drop(conn);
        let error = Store::open(&path).unwrap_err();
        assert!(matches!(error, StoreError::TooNew { .. }), "{error}");
    }

    #[tokio::test]
    async fn an_unopenable_path_names_the_file() {
        let error = Store::open(Path::new("/nonexistent/dir/t.db")).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/dir/t.db"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_closed_store_answers_closed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let other = store.clone();
        store.close().await;
        assert!(matches!(other.ping().await, Err(StoreError::Closed)));
    }
}
