//! What a ledger operation sees of the database, the same for SQLite and
//! PostgreSQL: statements with `?1`-numbered parameters, values of four
//! kinds, rows read by position. Every operation is a synchronous function
//! over a [`Db`] that runs inside one transaction on a database thread, so
//! each is written once for both backends; where their SQL differs, the
//! operation asks [`Db::dialect`].
//!
//! Written here rather than taken from a crate: what both drivers share is
//! small (bind, execute, read a row), and an ORM or `sqlx`'s `Any` driver
//! would bring its own async runtime model and a second SQLite library.

use super::LedgerError;

/// Which SQL the backend speaks, where it differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite 3.4x (one writer: row locks are moot).
    Sqlite,
    /// PostgreSQL 15 or newer (several nodes: `FOR UPDATE SKIP LOCKED`).
    Postgres,
}

impl Dialect {
    /// `GREATEST(a, b, ...)` in PostgreSQL, `MAX(a, b, ...)` in SQLite.
    pub fn greatest(self) -> &'static str {
        match self {
            Dialect::Sqlite => "MAX",
            Dialect::Postgres => "GREATEST",
        }
    }

    /// The ledger's clock in Unix ms, as an SQL expression. Heartbeats and
    /// leases are read and written on it, so the nodes' own clocks, which
    /// may drift apart, never decide whether a node is alive.
    pub fn now_ms(self) -> &'static str {
        match self {
            Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// Appended to a `SELECT` that locks its rows until the transaction
    /// ends, so concurrent writers of the same rows take turns (SQLite has
    /// one writer: nothing to add).
    pub fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// A statement that takes a lock on `?1` (any text) until the
    /// transaction ends, for a check-then-insert whose rows do not exist
    /// yet (nothing to lock with `FOR UPDATE`); `None` for SQLite, whose
    /// write transactions run one at a time (`BEGIN IMMEDIATE`).
    pub fn lock_name(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some(
                "SELECT 1 FROM (SELECT pg_advisory_xact_lock(hashtext(CAST(?1 AS TEXT)))) AS locked",
            ),
        }
    }

    /// Appended to a `SELECT` whose rows one node takes for itself:
    /// other nodes skip them instead of waiting.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }
}

/// A value bound to a statement or read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer (times in ms, money in minor units, counts, flags).
    Int(i64),
    /// A floating-point number (jitter only; never money).
    Real(f64),
    /// Text.
    Text(String),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<u16> for Value {
    fn from(v: u16) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Builds a statement's arguments: `args![id, now_ms, None::<i64>]`.
#[macro_export]
macro_rules! args {
    ($($value:expr),* $(,)?) => {
        &[$($crate::ledger::db::Value::from($value)),*][..]
    };
}

/// One row of a result, read by column position.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> Result<&Value, LedgerError> {
        self.0
            .get(i)
            .ok_or_else(|| LedgerError::Decode(format!("no column {i}")))
    }

    /// An integer column that is never NULL.
    pub fn int(&self, i: usize) -> Result<i64, LedgerError> {
        self.opt_int(i)?
            .ok_or_else(|| LedgerError::Decode(format!("column {i} is NULL")))
    }

    /// An integer column that may be NULL.
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, LedgerError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            other => Err(LedgerError::Decode(format!(
                "column {i} is {other:?}, not an integer"
            ))),
        }
    }

    /// A 0/1 integer (or boolean) column.
    pub fn flag(&self, i: usize) -> Result<bool, LedgerError> {
        Ok(self.int(i)? != 0)
    }

    /// A floating-point column (an integer reads as one too).
    pub fn real(&self, i: usize) -> Result<f64, LedgerError> {
        match self.at(i)? {
            Value::Real(v) => Ok(*v),
            Value::Int(v) => Ok(*v as f64),
            other => Err(LedgerError::Decode(format!(
                "column {i} is {other:?}, not a number"
            ))),
        }
    }

    /// A text column that is never NULL.
    pub fn text(&self, i: usize) -> Result<String, LedgerError> {
        self.opt_text(i)?
            .ok_or_else(|| LedgerError::Decode(format!("column {i} is NULL")))
    }

    /// A text column that may be NULL.
    pub fn opt_text(&self, i: usize) -> Result<Option<String>, LedgerError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Text(v) => Ok(Some(v.clone())),
            other => Err(LedgerError::Decode(format!(
                "column {i} is {other:?}, not text"
            ))),
        }
    }
}

/// A database inside one transaction. Statements use `?1`, `?2`, ...
/// placeholders; a statement that needs the rows it changed uses
/// `RETURNING`, which both backends have.
pub trait Db {
    /// Which SQL to write where the backends differ.
    fn dialect(&self) -> Dialect;

    /// Runs a statement; returns how many rows it changed.
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, LedgerError>;

    /// Runs a query; returns every row.
    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, LedgerError>;

    /// Runs a query; returns its first row, if any.
    fn query_opt(&mut self, sql: &str, args: &[Value]) -> Result<Option<Row>, LedgerError> {
        Ok(self.query(sql, args)?.into_iter().next())
    }

    /// Runs a query that must return a row.
    fn query_one(&mut self, sql: &str, args: &[Value]) -> Result<Row, LedgerError> {
        self.query_opt(sql, args)?
            .ok_or_else(|| LedgerError::Decode(format!("no row for: {}", first_line(sql))))
    }
}

/// The first line of a statement, for error messages.
fn first_line(sql: &str) -> &str {
    sql.trim().lines().next().unwrap_or_default()
}

/// `?N` placeholders rewritten as PostgreSQL's `$N`. Our statements hold
/// no `?` inside string literals, so a plain scan is enough.
pub fn numbered_for_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(
            numbered_for_postgres(
                "SELECT a FROM t WHERE b = ?1 AND (?2 IS NULL OR c = ?2) LIMIT ?10"
            ),
            "SELECT a FROM t WHERE b = $1 AND ($2 IS NULL OR c = $2) LIMIT $10"
        );
        assert_eq!(numbered_for_postgres("SELECT 1"), "SELECT 1");
    }

    #[test]
    fn rows_are_read_by_kind_and_say_what_is_wrong() {
        let row = Row(vec![
            Value::Int(7),
            Value::Null,
            Value::Text("x".into()),
            Value::Real(0.5),
        ]);
        assert_eq!(row.int(0).unwrap(), 7);
        assert_eq!(row.opt_int(1).unwrap(), None);
        assert_eq!(row.text(2).unwrap(), "x");
        assert_eq!(row.real(3).unwrap(), 0.5);
        assert_eq!(row.real(0).unwrap(), 7.0);
        assert!(row.flag(0).unwrap());
        assert!(row.int(1).unwrap_err().to_string().contains("NULL"));
        assert!(
            row.int(2)
                .unwrap_err()
                .to_string()
                .contains("not an integer")
        );
        assert!(row.text(9).unwrap_err().to_string().contains("no column 9"));
    }

    #[test]
    fn arguments_convert_from_rust_values() {
        let some: Option<&str> = Some("a");
        let none: Option<i64> = None;
        assert_eq!(
            args![1i64, "t", some, none, true, 5u16],
            &[
                Value::Int(1),
                Value::Text("t".into()),
                Value::Text("a".into()),
                Value::Null,
                Value::Int(1),
                Value::Int(5)
            ][..]
        );
    }
}
