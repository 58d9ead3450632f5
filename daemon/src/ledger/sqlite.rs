//! The embedded backend: one SQLite file written by one owner thread.
//!
//! SQLite calls block, so no tokio task touches the connection: every
//! operation is a job sent to the owner thread, run in one transaction
//! (`BEGIN IMMEDIATE` ... `COMMIT`), and the caller awaits its answer. One
//! writer also means no `SQLITE_BUSY` between our own writers. The file
//! runs in WAL mode with `synchronous=FULL`, so a committed row survives
//! power loss, and foreign keys are enforced.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags};

use super::db::{Db, Dialect, Row, Value};
use super::sqlite_schema::{LATEST_VERSION, MIGRATIONS};
use super::{Job, LedgerError};

/// What the owner thread is asked to do.
enum Message {
    Run(Job),
    Stop(std::sync::mpsc::Sender<()>),
}

/// A handle to the owner thread.
pub(super) struct SqliteBackend {
    jobs: mpsc::Sender<Message>,
    path: PathBuf,
}

/// How a transaction begins: a writer takes the write lock at once (no
/// `SQLITE_BUSY` halfway through); a reader beside a running daemon
/// cannot take it at all.
fn begin_statement(read_only: bool) -> &'static str {
    if read_only {
        "BEGIN"
    } else {
        "BEGIN IMMEDIATE"
    }
}

impl SqliteBackend {
    /// Opens (creating if needed) and migrates the file, then starts the
    /// owner thread. Blocking.
    pub(super) fn open(path: &Path, read_only: bool) -> Result<SqliteBackend, LedgerError> {
        let mut conn = open_connection(path, read_only)?;
        if read_only {
            check_current(&conn, path)?;
        } else {
            migrate(&mut conn, path)?;
        }
        let begin = begin_statement(read_only);
        let (jobs, queue) = mpsc::channel::<Message>();
        thread::Builder::new()
            .name("tollbridge-db".to_owned())
            .spawn(move || {
                for message in queue {
                    match message {
                        Message::Run(job) => run_job(&conn, begin, job),
                        Message::Stop(done) => {
                            // Closing the connection checkpoints the WAL.
                            drop(conn);
                            let _ = done.send(());
                            return;
                        }
                    }
                }
            })
            .map_err(|e| LedgerError::Open {
                what: path.display().to_string(),
                reason: format!("cannot start the database thread: {e}"),
            })?;
        Ok(SqliteBackend {
            jobs,
            path: path.to_owned(),
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn submit(&self, job: Job) -> Result<(), LedgerError> {
        self.jobs
            .send(Message::Run(job))
            .map_err(|_| LedgerError::Closed)
    }

    /// Finishes the queued jobs and closes the file (blocking).
    pub(super) fn close(&self) {
        let (done, finished) = mpsc::channel();
        if self.jobs.send(Message::Stop(done)).is_ok() {
            let _ = finished.recv();
        }
    }
}

/// Runs one job in its own transaction.
fn run_job(conn: &Connection, begin: &str, job: Job) {
    if let Err(e) = conn.execute_batch(begin) {
        let finish = job(&mut Unavailable(e.to_string()));
        (finish.deliver)(Err(LedgerError::Query(e.to_string())));
        return;
    }
    let finish = job(&mut SqliteDb { conn });
    let outcome = if finish.commit {
        conn.execute_batch("COMMIT").map_err(map_error)
    } else {
        Ok(())
    };
    if !finish.commit || outcome.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    (finish.deliver)(outcome);
}

/// A database that refuses every statement (its transaction could not
/// begin): the job still runs so its caller hears why.
struct Unavailable(String);

impl Db for Unavailable {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }
    fn execute(&mut self, _: &str, _: &[Value]) -> Result<u64, LedgerError> {
        Err(LedgerError::Query(self.0.clone()))
    }
    fn query(&mut self, _: &str, _: &[Value]) -> Result<Vec<Row>, LedgerError> {
        Err(LedgerError::Query(self.0.clone()))
    }
}

struct SqliteDb<'a> {
    conn: &'a Connection,
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Real(v) => ToSqlOutput::Borrowed(ValueRef::Real(*v)),
            Value::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
        })
    }
}

fn map_error(error: rusqlite::Error) -> LedgerError {
    match &error {
        rusqlite::Error::SqliteFailure(e, _)
            if e.code == rusqlite::ErrorCode::ConstraintViolation
                && matches!(
                    e.extended_code,
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                        | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                ) =>
        {
            LedgerError::UniqueViolation(error.to_string())
        }
        _ => LedgerError::Query(error.to_string()),
    }
}

impl Db for SqliteDb<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, LedgerError> {
        let mut statement = self.conn.prepare_cached(sql).map_err(map_error)?;
        let changed = statement
            .execute(rusqlite::params_from_iter(args))
            .map_err(map_error)?;
        Ok(u64::try_from(changed).unwrap_or(u64::MAX))
    }

    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, LedgerError> {
        let mut statement = self.conn.prepare_cached(sql).map_err(map_error)?;
        let columns = statement.column_count();
        let mut rows = statement
            .query(rusqlite::params_from_iter(args))
            .map_err(map_error)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(map_error)? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                values.push(match row.get_ref(i).map_err(map_error)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Real(v) => Value::Real(v),
                    ValueRef::Text(v) => Value::Text(String::from_utf8_lossy(v).into_owned()),
                    ValueRef::Blob(_) => {
                        return Err(LedgerError::Decode(format!("column {i} is a blob")));
                    }
                });
            }
            out.push(Row(values));
        }
        Ok(out)
    }
}

fn open_connection(path: &Path, read_only: bool) -> Result<Connection, LedgerError> {
    let open_error = |reason: String| LedgerError::Open {
        what: path.display().to_string(),
        reason,
    };
    if read_only {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        return Connection::open_with_flags(path, flags).map_err(|e| open_error(e.to_string()));
    }
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

/// A reader's check: the file's schema is the one this build reads.
fn check_current(conn: &Connection, path: &Path) -> Result<(), LedgerError> {
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| LedgerError::Open {
            what: path.display().to_string(),
            reason: e.to_string(),
        })?;
    let found = usize::try_from(found).unwrap_or(usize::MAX);
    if found == LATEST_VERSION {
        return Ok(());
    }
    Err(LedgerError::Open {
        what: path.display().to_string(),
        reason: format!(
            "schema version {found}, this build reads {LATEST_VERSION}; run the daemon once to migrate it"
        ),
    })
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), LedgerError> {
    let what = path.display().to_string();
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| LedgerError::Migrate {
            what: what.clone(),
            reason: e.to_string(),
        })?;
    let found = usize::try_from(found).unwrap_or(usize::MAX);
    if found > LATEST_VERSION {
        return Err(LedgerError::TooNew {
            what,
            found,
            supported: LATEST_VERSION,
        });
    }
    // A migration that rebuilds a table others refer to (v7) must drop
    // it: foreign keys are off while migrations run (a no-op inside a
    // transaction, hence here) and each migration checks them after.
    let switch_keys = |conn: &Connection, on: bool| {
        conn.execute_batch(if on {
            "PRAGMA foreign_keys = ON;"
        } else {
            "PRAGMA foreign_keys = OFF;"
        })
        .map_err(|e| LedgerError::Migrate {
            what: what.clone(),
            reason: e.to_string(),
        })
    };
    switch_keys(conn, false)?;
    let migrated = MIGRATIONS
        .to_latest(conn)
        .map_err(|e| LedgerError::Migrate {
            what: what.clone(),
            reason: e.to_string(),
        });
    switch_keys(conn, true)?;
    migrated
}
