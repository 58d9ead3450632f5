//! The ledger: bookings, call records (with what a restart or another node
//! needs to finish them), settlement rows, Stripe events. This module owns
//! every SQL statement the daemon runs; the rest of the daemon asks it for
//! operations in its own words ([`Ledger::create_booking`],
//! [`Ledger::route_and_claim`], [`Ledger::close_call`], ...) and gets typed
//! values back (states are enums, [`states`]).
//!
//! Two backends sit behind it: SQLite (embedded, the default: one file,
//! one owner thread, WAL) and PostgreSQL (shared by several nodes). Every
//! operation is a synchronous function over [`db::Db`] run as one
//! transaction on a database thread, so each is written once for both
//! (model: mini-redis's `db.rs` under its `cmd/`).

pub mod backup;
pub mod db;
pub mod states;

mod booking_changes;
mod bookings;
mod call_records;
mod calls;
mod events;
mod experts;
mod export;
mod fees;
mod holds;
mod nodes;
mod postgres;
mod postgres_schema;
mod recordings;
mod recovery;
mod refunds;
mod routing;
mod settlements;
mod sqlite;
mod sqlite_schema;
mod webhooks;

use std::path::Path;
use std::sync::Arc;

use tokio::sync::oneshot;

pub use booking_changes::ChangeRefused;
pub use bookings::{BookingRecord, BookingWrite, Terms};
pub use call_records::{CallEvent, CallFilter, CallLeg, CallRecord, Dispute, LegMedia, Rating};
pub use calls::{CallEnd, NewCall, Priced};
pub use events::{DeliveryOutcome, DeliveryView, DueDelivery, EventView, WebhookEndpoint};
pub use experts::{Device, ExpertRow, ExpertWrite, RegisterRefused, Registering};
pub use export::{ExportCursor, ExportRow};
pub use holds::HoldTerms;
pub use nodes::{NodeView, TakenOver};
pub use recordings::{RecordingDone, RecordingRow, RecordingState};
pub use recovery::Unfinished;
pub use refunds::{NewRefund, RefundRefused};
pub use routing::{ExtensionTerms, RecordingTerms, Routed};
pub use settlements::{NewSettlement, Settlement, SettlementView};
pub use states::{BookingState, CallStatus, SettlementState};

use db::Db;

/// Why a ledger operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    /// The database could not be opened or reached at start.
    #[error("cannot open database {what}: {reason}")]
    Open {
        /// The file or server.
        what: String,
        /// What went wrong.
        reason: String,
    },
    /// The schema could not be brought up to date.
    #[error("cannot migrate database {what}: {reason}")]
    Migrate {
        /// The file or server.
        what: String,
        /// What went wrong.
        reason: String,
    },
    /// The database was written by a newer Tollbridge.
    #[error(
        "database {what} has schema version {found}, newer than this build's {supported}; upgrade Tollbridge"
    )]
    TooNew {
        /// The file or server.
        what: String,
        /// Version found.
        found: usize,
        /// Newest version this build knows.
        supported: usize,
    },
    /// A statement failed.
    #[error("database error: {0}")]
    Query(String),
    /// A unique key (an id, an idempotency key) is taken.
    #[error("database conflict: {0}")]
    UniqueViolation(String),
    /// A row did not hold what the operation expected.
    #[error("unexpected database content: {0}")]
    Decode(String),
    /// The database cannot be reached now (a server restarting, the
    /// network); the operation may succeed when it is back.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The ledger was closed.
    #[error("the database has been closed")]
    Closed,
}

/// What a job hands back to its database thread: whether to commit, and
/// how to deliver the result once the commit's outcome is known.
pub(crate) struct Finish {
    commit: bool,
    deliver: Box<dyn FnOnce(Result<(), LedgerError>) + Send>,
}

/// One operation for a database thread: it runs inside a transaction.
pub(crate) type Job = Box<dyn FnOnce(&mut dyn Db) -> Finish + Send>;

enum Backend {
    Sqlite(sqlite::SqliteBackend),
    Postgres(postgres::PostgresBackend),
}

/// A handle to the ledger, acting for one node; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    backend: Arc<Backend>,
    /// The node this handle writes as (`node.name`): its calls, its
    /// claims, its heartbeat.
    node: Arc<str>,
}

/// The node name of a ledger opened without one (tests, the CLI).
const UNNAMED_NODE: &str = "local";

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("database", &self.describe())
            .field("node", &self.node)
            .finish()
    }
}

impl Ledger {
    fn over(backend: Backend) -> Ledger {
        Ledger {
            backend: Arc::new(backend),
            node: Arc::from(UNNAMED_NODE),
        }
    }

    /// The same database, written as node `name` (`node.name`).
    pub fn for_node(&self, name: &str) -> Ledger {
        Ledger {
            backend: self.backend.clone(),
            node: Arc::from(name),
        }
    }

    /// The node this handle writes as.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Opens (creating and migrating) the SQLite file at `path`. Blocking:
    /// call it before serving, or from `spawn_blocking`.
    pub fn open_sqlite(path: &Path) -> Result<Ledger, LedgerError> {
        Ok(Ledger::over(Backend::Sqlite(sqlite::SqliteBackend::open(
            path, false,
        )?)))
    }

    /// Opens the SQLite file at `path` to read only, beside a running
    /// daemon (the CLI): never created, never migrated. Blocking.
    pub fn open_sqlite_read_only(path: &Path) -> Result<Ledger, LedgerError> {
        Ok(Ledger::over(Backend::Sqlite(sqlite::SqliteBackend::open(
            path, true,
        )?)))
    }

    /// Opens (creating and migrating) the ledger `config` names: the
    /// PostgreSQL server of `database.url`, else the SQLite file of
    /// `database.path`. Blocking.
    pub fn open(config: &tollbridge_config::DatabaseConfig) -> Result<Ledger, LedgerError> {
        match &config.url {
            Some(url) => Ledger::open_postgres(
                url,
                config.password.as_ref().map(|p| p.expose()),
                config.pool_size as usize,
            ),
            None => Ledger::open_sqlite(&config.path),
        }
    }

    /// Opens the ledger `config` names to read only, beside running
    /// daemons (the CLI): never created, never migrated. Blocking.
    pub fn open_read_only(
        config: &tollbridge_config::DatabaseConfig,
    ) -> Result<Ledger, LedgerError> {
        match &config.url {
            Some(url) => {
                let target =
                    postgres::Target::new(url, config.password.as_ref().map(|p| p.expose()))?;
                Ok(Ledger::over(Backend::Postgres(
                    postgres::PostgresBackend::open(target, 1, true)?,
                )))
            }
            None => Ledger::open_sqlite_read_only(&config.path),
        }
    }

    /// Connects to the PostgreSQL server at `url` (a `postgres://` URL or
    /// libpq key=value string without its password), migrates its schema,
    /// and opens `pool_size` connections. Blocking.
    pub fn open_postgres(
        url: &str,
        password: Option<&str>,
        pool_size: usize,
    ) -> Result<Ledger, LedgerError> {
        let target = postgres::Target::new(url, password)?;
        Ok(Ledger::over(Backend::Postgres(
            postgres::PostgresBackend::open(target, pool_size, false)?,
        )))
    }

    /// The database, for logs: the file, or the server's URL.
    pub fn describe(&self) -> String {
        match self.backend.as_ref() {
            Backend::Sqlite(sqlite) => sqlite.path().display().to_string(),
            Backend::Postgres(postgres) => postgres.url().to_owned(),
        }
    }

    /// Which SQL the ledger's backend speaks.
    pub fn dialect(&self) -> db::Dialect {
        match self.backend.as_ref() {
            Backend::Sqlite(_) => db::Dialect::Sqlite,
            Backend::Postgres(_) => db::Dialect::Postgres,
        }
    }

    /// Runs `f` as one transaction on a database thread: committed when it
    /// returns `Ok`, rolled back otherwise. For the ledger's operations and
    /// for tests; the rest of the daemon calls the named operations.
    pub async fn run<T, F>(&self, f: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Db) -> Result<T, LedgerError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |db| {
            let result = f(db);
            Finish {
                commit: result.is_ok(),
                deliver: Box::new(move |committed| {
                    // The caller may have given up waiting; nothing to do then.
                    let _ = reply.send(committed.and(result));
                }),
            }
        });
        match self.backend.as_ref() {
            Backend::Sqlite(sqlite) => sqlite.submit(job)?,
            Backend::Postgres(postgres) => postgres.submit(job)?,
        }
        answer.await.map_err(|_| LedgerError::Closed)?
    }

    /// Proves a database thread is alive and the database answers.
    pub async fn ping(&self) -> Result<(), LedgerError> {
        self.run(|db| db.query_one("SELECT 1", &[]).map(|_| ()))
            .await
    }

    /// Finishes the queued operations and closes the database; every handle
    /// answers [`LedgerError::Closed`] afterwards.
    pub async fn close(&self) {
        let backend = self.backend.clone();
        let _ = tokio::task::spawn_blocking(move || match backend.as_ref() {
            Backend::Sqlite(sqlite) => sqlite.close(),
            Backend::Postgres(postgres) => postgres.close(),
        })
        .await;
    }
}

#[cfg(test)]
mod tests;
