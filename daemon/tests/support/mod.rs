//! What the daemon's integration tests share: a ledger on either backend,
//! and a macro that runs a test on both.

#![allow(dead_code)]

pub mod api;
pub mod fixtures;
pub mod http;

use tollbridge_daemon::ledger::Ledger;
use tollbridge_e2e::postgres::PostgresServer;

/// Which database a test's ledger lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the test process's PostgreSQL server.
    Postgres,
}

/// A ledger and what keeps its database alive.
pub struct TestLedger {
    pub ledger: Ledger,
    /// Another handle on the same database, as a second node opens it.
    pub reopen: std::sync::Arc<dyn Fn() -> Ledger + Send + Sync>,
    _dir: Option<tempfile::TempDir>,
}

impl std::ops::Deref for TestLedger {
    type Target = Ledger;
    fn deref(&self) -> &Ledger {
        &self.ledger
    }
}

/// Opens a new, empty, migrated ledger on `backend`.
pub async fn open(backend: Backend) -> TestLedger {
    tokio::task::spawn_blocking(move || open_blocking(backend))
        .await
        .unwrap()
}

/// Another handle on `ledger`'s database, as a second node opens it.
pub async fn reopen(ledger: &TestLedger) -> Ledger {
    let reopen = ledger.reopen.clone();
    tokio::task::spawn_blocking(move || reopen()).await.unwrap()
}

fn open_blocking(backend: Backend) -> TestLedger {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.db");
            let ledger = Ledger::open_sqlite(&path).unwrap();
            TestLedger {
                ledger,
                reopen: std::sync::Arc::new(move || Ledger::open_sqlite(&path).unwrap()),
                _dir: Some(dir),
            }
        }
        Backend::Postgres => {
            let url = PostgresServer::shared().create_database();
            let ledger = Ledger::open_postgres(&url, None, 4).unwrap();
            TestLedger {
                ledger,
                reopen: std::sync::Arc::new(move || Ledger::open_postgres(&url, None, 4).unwrap()),
                _dir: None,
            }
        }
    }
}

/// Turns `async fn name(backend: Backend)` tests into one test per
/// backend: `sqlite::name` and `postgres::name`.
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::support::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::support::Backend::Postgres).await;
                }
            )*
        }
    };
}
