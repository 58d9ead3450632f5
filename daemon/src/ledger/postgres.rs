//! The shared backend: a PostgreSQL server several nodes write to.
//!
//! A pool of `database.pool_size` database threads takes jobs from one
//! queue; each thread keeps one connection (the `postgres` crate, the
//! blocking face of `tokio-postgres`, so an operation is the same
//! synchronous function over [`Db`] as on SQLite) and its prepared
//! statements. Every job runs in one `READ COMMITTED` transaction; what
//! must be done by exactly one node is decided by row locks (`UPDATE ...
//! WHERE` on the row's state, `FOR UPDATE SKIP LOCKED`) in the operations.
//!
//! A connection that breaks (the server restarts, the network goes) is
//! dropped and made again for a later job; meanwhile jobs fail at once
//! with [`LedgerError::Unavailable`], which the daemon answers by refusing
//! new calls and keeping call writes in memory until the ledger is back.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres::error::SqlState;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, NoTls, Statement};

use super::db::{Db, Dialect, Row, Value, numbered_for_postgres};
use super::postgres_schema::{LATEST_VERSION, MIGRATIONS};
use super::{Job, LedgerError};

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// After a failed connection attempt, jobs fail at once for this long
/// instead of each waiting out its own attempt.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// A server that stops answering mid-statement (a cable pulled) is given
/// up after this long, so a database thread is never stuck for minutes.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serialises schema migrations between nodes starting together
/// (`pg_advisory_xact_lock` key: "tollbridge" in ASCII).
const MIGRATION_LOCK: i64 = 0x746f_6c6c_6272_6964;

/// Where to connect, and how, for every thread of the pool.
#[derive(Clone)]
pub(super) struct Target {
    config: postgres::Config,
    /// The URL as configured (it holds no password), for logs.
    url: String,
}

impl Target {
    /// Reads `url` (a `postgres://` URL without a password) and adds the
    /// password and our connection settings.
    pub(super) fn new(url: &str, password: Option<&str>) -> Result<Target, LedgerError> {
        let mut config: postgres::Config = url.parse().map_err(|e| LedgerError::Open {
            what: url.to_owned(),
            reason: format!("database.url: {e}"),
        })?;
        if let Some(password) = password {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config
            .application_name("tollbridge")
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .tcp_user_timeout(TCP_USER_TIMEOUT);
        Ok(Target {
            config,
            url: url.to_owned(),
        })
    }

    fn connect(&self) -> Result<Client, LedgerError> {
        self.config
            .connect(NoTls)
            .map_err(|e| LedgerError::Unavailable(describe_error(&e)))
    }
}

enum Message {
    Run(Job),
    Stop,
}

/// A handle to the pool's threads.
pub(super) struct PostgresBackend {
    jobs: mpsc::Sender<Message>,
    threads: Mutex<Vec<thread::JoinHandle<()>>>,
    url: String,
}

impl PostgresBackend {
    /// Connects, migrates (or, `read_only`, checks) the schema, and starts
    /// `pool_size` database threads. Blocking.
    pub(super) fn open(
        target: Target,
        pool_size: usize,
        read_only: bool,
    ) -> Result<PostgresBackend, LedgerError> {
        let open_error = |e: LedgerError| LedgerError::Open {
            what: target.url.clone(),
            reason: e.to_string(),
        };
        let mut client = target.connect().map_err(open_error)?;
        if read_only {
            check_current(&mut client, &target.url)?;
        } else {
            migrate(&mut client, &target.url)?;
        }
        let (jobs, queue) = mpsc::channel::<Message>();
        let queue = Arc::new(Mutex::new(queue));
        let mut threads = Vec::new();
        let mut first = Some(client);
        for n in 0..pool_size.max(1) {
            let mut worker = Worker {
                target: target.clone(),
                client: first.take(),
                statements: HashMap::new(),
                last_failure: None,
                read_only,
            };
            let queue = queue.clone();
            let thread = thread::Builder::new()
                .name(format!("tollbridge-db-{n}"))
                .spawn(move || worker.serve(&queue))
                .map_err(|e| LedgerError::Open {
                    what: target.url.clone(),
                    reason: format!("cannot start a database thread: {e}"),
                })?;
            threads.push(thread);
        }
        Ok(PostgresBackend {
            jobs,
            threads: Mutex::new(threads),
            url: target.url,
        })
    }

    pub(super) fn url(&self) -> &str {
        &self.url
    }

    pub(super) fn submit(&self, job: Job) -> Result<(), LedgerError> {
        self.jobs
            .send(Message::Run(job))
            .map_err(|_| LedgerError::Closed)
    }

    /// Finishes the queued jobs, then closes every connection (blocking).
    pub(super) fn close(&self) {
        let threads = match self.threads.lock() {
            Ok(mut threads) => std::mem::take(&mut *threads),
            Err(_) => return,
        };
        for _ in &threads {
            let _ = self.jobs.send(Message::Stop);
        }
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// One database thread: its connection and what was prepared on it.
struct Worker {
    target: Target,
    client: Option<Client>,
    statements: HashMap<String, Statement>,
    last_failure: Option<(Instant, LedgerError)>,
    read_only: bool,
}

impl Worker {
    fn serve(&mut self, queue: &Mutex<mpsc::Receiver<Message>>) {
        loop {
            let message = match queue.lock() {
                Ok(queue) => queue.recv(),
                Err(_) => return,
            };
            match message {
                Ok(Message::Run(job)) => self.run(job),
                Ok(Message::Stop) | Err(_) => return,
            }
        }
    }

    /// Makes sure the thread has a connection, making it again if it broke.
    fn connect(&mut self) -> Result<(), LedgerError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.forget_connection();
        }
        if self.client.is_none() {
            if let Some((at, error)) = &self.last_failure
                && at.elapsed() < RECONNECT_PAUSE
            {
                return Err(error.clone());
            }
            match self.target.connect() {
                Ok(client) => {
                    self.last_failure = None;
                    self.client = Some(client);
                }
                Err(e) => {
                    self.last_failure = Some((Instant::now(), e.clone()));
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn forget_connection(&mut self) {
        self.client = None;
        self.statements.clear();
    }

    fn run(&mut self, job: Job) {
        let (finish, broken, outcome) = match self.run_in_transaction(job) {
            Ok(ran) => ran,
            Err((job, e)) => {
                if matches!(e, LedgerError::Unavailable(_)) {
                    self.forget_connection();
                }
                let finish = job(&mut Refusing(e.clone()));
                (finish.deliver)(Err(e));
                return;
            }
        };
        if broken || matches!(outcome, Err(LedgerError::Unavailable(_))) {
            self.forget_connection();
        }
        let outcome = match (finish.commit, broken) {
            (true, true) => Err(LedgerError::Unavailable(
                "the connection broke during the transaction".to_owned(),
            )),
            _ => outcome,
        };
        (finish.deliver)(outcome);
    }
}

impl Worker {
    /// Runs `job` in a transaction and commits it if it asks to; hands the
    /// job back if no transaction could begin.
    #[allow(clippy::type_complexity)]
    fn run_in_transaction(
        &mut self,
        job: Job,
    ) -> Result<(super::Finish, bool, Result<(), LedgerError>), (Job, LedgerError)> {
        if let Err(e) = self.connect() {
            return Err((job, e));
        }
        let Worker {
            client, statements, ..
        } = self;
        let Some(client) = client.as_mut() else {
            return Err((job, LedgerError::Closed));
        };
        let mut transaction = match client.build_transaction().read_only(self.read_only).start() {
            Ok(transaction) => transaction,
            Err(e) => return Err((job, map_error(&e))),
        };
        let mut db = PostgresDb {
            transaction: &mut transaction,
            statements,
            broken: false,
        };
        let finish = job(&mut db);
        let broken = db.broken;
        let outcome = if finish.commit && !broken {
            transaction.commit().map_err(|e| map_error(&e))
        } else {
            // Dropping the transaction rolls it back.
            drop(transaction);
            Ok(())
        };
        Ok((finish, broken, outcome))
    }
}

/// A database that refuses every statement (no connection, or its
/// transaction could not begin): the job still runs so its caller hears why.
struct Refusing(LedgerError);

impl Db for Refusing {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }
    fn execute(&mut self, _: &str, _: &[Value]) -> Result<u64, LedgerError> {
        Err(self.0.clone())
    }
    fn query(&mut self, _: &str, _: &[Value]) -> Result<Vec<Row>, LedgerError> {
        Err(self.0.clone())
    }
}

struct PostgresDb<'a, 'c> {
    transaction: &'a mut postgres::Transaction<'c>,
    statements: &'a mut HashMap<String, Statement>,
    /// A statement failed because the connection did.
    broken: bool,
}

impl PostgresDb<'_, '_> {
    fn prepared(&mut self, sql: &str) -> Result<Statement, LedgerError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self
            .transaction
            .prepare(&numbered_for_postgres(sql))
            .map_err(|e| self.failed(&e))?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    fn failed(&mut self, error: &postgres::Error) -> LedgerError {
        let mapped = map_error(error);
        if matches!(mapped, LedgerError::Unavailable(_)) {
            self.broken = true;
        }
        mapped
    }
}

impl Db for PostgresDb<'_, '_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, LedgerError> {
        let statement = self.prepared(sql)?;
        let params: Vec<Param<'_>> = args.iter().map(Param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        self.transaction
            .execute(&statement, &refs)
            .map_err(|e| self.failed(&e))
    }

    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, LedgerError> {
        let statement = self.prepared(sql)?;
        let params: Vec<Param<'_>> = args.iter().map(Param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let rows = self
            .transaction
            .query(&statement, &refs)
            .map_err(|e| self.failed(&e))?;
        rows.iter().map(row_from).collect()
    }
}

/// A value sent as the type PostgreSQL inferred for its parameter.
#[derive(Debug)]
struct Param<'a>(&'a Value);

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                Type::FLOAT8 => (*v as f64).to_sql(ty, out),
                _ => Err(format!("an integer cannot be sent as {ty}").into()),
            },
            Value::Real(v) => match *ty {
                Type::FLOAT8 => v.to_sql(ty, out),
                Type::FLOAT4 => (*v as f32).to_sql(ty, out),
                _ => Err(format!("a fraction cannot be sent as {ty}").into()),
            },
            Value::Text(v) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    v.as_str().to_sql(ty, out)
                }
                _ => Err(format!("text cannot be sent as {ty}").into()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A result row as [`Value`]s, by column type.
fn row_from(row: &postgres::Row) -> Result<Row, LedgerError> {
    let decode = |i: usize, e: postgres::Error| LedgerError::Decode(format!("column {i}: {e}"));
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let value = match *column.type_() {
            Type::INT8 => row.try_get::<_, Option<i64>>(i).map(|v| v.map(Value::Int)),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)
                .map(|v| v.map(|v| Value::Int(i64::from(v)))),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)
                .map(|v| v.map(|v| Value::Int(i64::from(v)))),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)
                .map(|v| v.map(|v| Value::Int(i64::from(v)))),
            Type::FLOAT8 => row.try_get::<_, Option<f64>>(i).map(|v| v.map(Value::Real)),
            Type::FLOAT4 => row
                .try_get::<_, Option<f32>>(i)
                .map(|v| v.map(|v| Value::Real(f64::from(v)))),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => row
                .try_get::<_, Option<String>>(i)
                .map(|v| v.map(Value::Text)),
            ref other => {
                return Err(LedgerError::Decode(format!(
                    "column {i} ({}) is of type {other}, which the ledger does not read",
                    column.name()
                )));
            }
        }
        .map_err(|e| decode(i, e))?;
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

/// The error's message with its cause (the driver's own `Display` hides
/// the server's message behind "db error").
fn describe_error(error: &postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{}: {}", db.code().code(), db.message());
    }
    match error.source() {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

/// Our error for a driver error: a taken key, a server out of reach, or
/// a statement that failed.
fn map_error(error: &postgres::Error) -> LedgerError {
    let message = describe_error(error);
    match error.code() {
        Some(code) if *code == SqlState::UNIQUE_VIOLATION => LedgerError::UniqueViolation(message),
        Some(code) if is_unavailable(code) => LedgerError::Unavailable(message),
        Some(_) => LedgerError::Query(message),
        None if error.is_closed()
            || error
                .source()
                .is_some_and(|cause| cause.is::<std::io::Error>()) =>
        {
            LedgerError::Unavailable(message)
        }
        None => LedgerError::Query(message),
    }
}

/// Server states that pass: shutting down, starting, connection trouble.
fn is_unavailable(code: &SqlState) -> bool {
    code.code().starts_with("08")
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION
}

/// The schema version recorded in the database (0: none yet).
fn schema_version(client: &mut impl postgres::GenericClient) -> Result<usize, postgres::Error> {
    let exists = client
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])?
        .try_get::<_, bool>(0)?;
    if !exists {
        return Ok(0);
    }
    let version = client
        .query_opt("SELECT version FROM schema_version", &[])?
        .map(|row| row.try_get::<_, i64>(0))
        .transpose()?
        .unwrap_or(0);
    Ok(usize::try_from(version).unwrap_or(usize::MAX))
}

/// Brings the schema up to date in one transaction, under a lock that
/// makes nodes starting together take turns.
fn migrate(client: &mut Client, url: &str) -> Result<(), LedgerError> {
    let failed = |e: postgres::Error| LedgerError::Migrate {
        what: url.to_owned(),
        reason: describe_error(&e),
    };
    let mut transaction = client.transaction().map_err(failed)?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(failed)?;
    let found = schema_version(&mut transaction).map_err(failed)?;
    if found > LATEST_VERSION {
        return Err(LedgerError::TooNew {
            what: url.to_owned(),
            found,
            supported: LATEST_VERSION,
        });
    }
    if found == LATEST_VERSION {
        return Ok(());
    }
    if found == 0 {
        transaction
            .batch_execute("CREATE TABLE schema_version (version BIGINT NOT NULL)")
            .map_err(failed)?;
    }
    let first = MIGRATIONS.first().map_or(0, |(version, _)| *version);
    if found != 0 && found + 1 < first {
        return Err(LedgerError::Migrate {
            what: url.to_owned(),
            reason: format!("schema version {found} is older than any this build migrates"),
        });
    }
    for (version, statements) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        transaction.batch_execute(statements).map_err(failed)?;
        let version = i64::try_from(*version).unwrap_or(i64::MAX);
        transaction
            .execute("DELETE FROM schema_version", &[])
            .map_err(failed)?;
        transaction
            .execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[&version],
            )
            .map_err(failed)?;
    }
    transaction.commit().map_err(failed)
}

/// A reader's check: the schema is the one this build reads.
fn check_current(client: &mut Client, url: &str) -> Result<(), LedgerError> {
    let found = schema_version(client).map_err(|e| LedgerError::Open {
        what: url.to_owned(),
        reason: describe_error(&e),
    })?;
    if found == LATEST_VERSION {
        return Ok(());
    }
    Err(LedgerError::Open {
        what: url.to_owned(),
        reason: format!(
            "schema version {found}, this build reads {LATEST_VERSION}; run the daemon once to migrate it"
        ),
    })
}
