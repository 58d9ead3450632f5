//! Bookings and call records in the database, and their JSON views.
//! Synchronous: these run on the database owner thread via `Store::call`.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::{Value, json};

use super::model::{Callee, StripeCard, Tariff, ValidBooking, rfc3339};
use crate::store::StoreError;

/// A booking as stored.
#[derive(Debug, Clone)]
pub struct BookingRow {
    id: String,
    called: String,
    callers: Vec<String>,
    has_pin: bool,
    callee: Value,
    tariff: Tariff,
    cap_seconds: i64,
    window_start_ms: i64,
    window_end_ms: i64,
    stripe: Option<StripeCard>,
    cancellation_fee: Option<i64>,
    /// `active`, `in-call`, `completed` or `canceled`.
    pub state: String,
    created_ms: i64,
}

impl BookingRow {
    /// The API's view. The PIN itself is never returned.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "called": self.called,
            "callers": self.callers,
            "has_pin": self.has_pin,
            "callee": self.callee,
            "tariff": self.tariff,
            "cap_seconds": self.cap_seconds,
            "window": {"start": rfc3339(self.window_start_ms), "end": rfc3339(self.window_end_ms)},
            "stripe": self.stripe,
            "cancellation_fee": self.cancellation_fee,
            "state": self.state,
            "created_at": rfc3339(self.created_ms),
        })
    }
}

const BOOKING_COLUMNS: &str = "id, called, callers, pin IS NOT NULL, callee, currency, price_per_minute, \
     increment_seconds, minimum_seconds, cap_seconds, window_start_ms, window_end_ms, stripe_customer, \
     stripe_payment_method, cancellation_fee, state, created_ms, under_minimum";

fn booking_from_row(row: &Row) -> rusqlite::Result<BookingRow> {
    let callers: String = row.get(2)?;
    let callee: String = row.get(4)?;
    let customer: Option<String> = row.get(12)?;
    let payment_method: Option<String> = row.get(13)?;
    Ok(BookingRow {
        id: row.get(0)?,
        called: row.get(1)?,
        callers: serde_json::from_str(&callers).unwrap_or_default(),
        has_pin: row.get(3)?,
        callee: serde_json::from_str(&callee).unwrap_or(Value::Null),
        tariff: Tariff {
            currency: row.get(5)?,
            price_per_minute: row.get(6)?,
            increment_seconds: row.get(7)?,
            minimum_seconds: row.get(8)?,
            under_minimum: row.get(17)?,
        },
        cap_seconds: row.get(9)?,
        window_start_ms: row.get(10)?,
        window_end_ms: row.get(11)?,
        stripe: customer
            .zip(payment_method)
            .map(|(customer, payment_method)| StripeCard {
                customer,
                payment_method,
            }),
        cancellation_fee: row.get(14)?,
        state: row.get(15)?,
        created_ms: row.get(16)?,
    })
}

/// Why a booking could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The id is taken.
    #[error("a booking with this id exists")]
    Exists,
    /// The booking is in a call and cannot be canceled now.
    #[error("the booking is in a call")]
    InCall,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Inserts a validated booking under `id`.
pub fn insert(
    conn: &Connection,
    id: &str,
    valid: &ValidBooking,
    now_ms: i64,
) -> Result<BookingRow, WriteError> {
    let b = &valid.booking;
    let callee = match &b.callee {
        Callee::Uri { uri } => json!({"uri": uri}),
        Callee::Number { number, trunk } => json!({"number": number, "trunk": trunk}),
    };
    let inserted = conn.execute(
        "INSERT INTO bookings (id, called, callers, pin, callee, currency, price_per_minute, increment_seconds,
             minimum_seconds, cap_seconds, window_start_ms, window_end_ms, stripe_customer, stripe_payment_method,
             cancellation_fee, state, created_ms, updated_ms, under_minimum)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, 'active', ?16, ?16, ?17)",
        params![
            id,
            b.called,
            serde_json::to_string(&b.callers).unwrap_or_else(|_| "[]".to_owned()),
            b.pin,
            callee.to_string(),
            b.tariff.currency,
            b.tariff.price_per_minute,
            b.tariff.increment_seconds,
            b.tariff.minimum_seconds,
            b.cap_seconds,
            valid.window_start_ms,
            valid.window_end_ms,
            b.stripe.as_ref().map(|s| s.customer.clone()),
            b.stripe.as_ref().map(|s| s.payment_method.clone()),
            b.cancellation_fee,
            now_ms,
            b.tariff.under_minimum,
        ],
    );
    match inserted {
        Ok(_) => {}
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            return Err(WriteError::Exists);
        }
        Err(e) => return Err(WriteError::Store(e.into())),
    }
    get(conn, id)?.ok_or(WriteError::Store(StoreError::Sqlite(
        rusqlite::Error::QueryReturnedNoRows,
    )))
}

/// One booking by id.
pub fn get(conn: &Connection, id: &str) -> Result<Option<BookingRow>, StoreError> {
    let sql = format!("SELECT {BOOKING_COLUMNS} FROM bookings WHERE id = ?1");
    Ok(conn.query_row(&sql, [id], booking_from_row).optional()?)
}

/// Bookings, newest first, optionally for one dialled number and state.
pub fn list(
    conn: &Connection,
    called: Option<&str>,
    state: Option<&str>,
    limit: i64,
) -> Result<Vec<BookingRow>, StoreError> {
    let sql = format!(
        "SELECT {BOOKING_COLUMNS} FROM bookings
         WHERE (?1 IS NULL OR called = ?1) AND (?2 IS NULL OR state = ?2)
         ORDER BY created_ms DESC, id DESC LIMIT ?3"
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let rows = statement.query_map(params![called, state, limit], booking_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Cancels an active booking (idempotent for one already canceled).
pub fn cancel(conn: &Connection, id: &str, now_ms: i64) -> Result<Option<BookingRow>, WriteError> {
    let Some(booking) = get(conn, id)? else {
        return Ok(None);
    };
    match booking.state.as_str() {
        "in-call" => Err(WriteError::InCall),
        "active" => {
            conn.execute(
                "UPDATE bookings SET state = 'canceled', updated_ms = ?2 WHERE id = ?1 AND state = 'active'",
                params![id, now_ms],
            )
            .map_err(StoreError::from)?;
            Ok(get(conn, id)?)
        }
        _ => Ok(Some(booking)),
    }
}

/// Who answers a booking's calls.
pub fn callee_of(conn: &Connection, id: &str) -> Result<Option<Callee>, StoreError> {
    let callee: Option<String> = conn
        .query_row("SELECT callee FROM bookings WHERE id = ?1", [id], |row| {
            row.get(0)
        })
        .optional()?;
    Ok(callee.and_then(|text| serde_json::from_str(&text).ok()))
}

/// What rating and settlement read of a booking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    /// How talk time is priced.
    pub tariff: tollbridge_billing::rating::Tariff,
    /// The most talk time it buys.
    pub cap_seconds: u64,
    /// The Stripe customer and card, when it has them.
    pub card: Option<(String, String)>,
}

/// A booking's terms; `None` when there is no such booking (or its stored
/// tariff is one this build cannot rate).
pub fn terms(conn: &Connection, id: &str) -> Result<Option<Terms>, StoreError> {
    use tollbridge_billing::rating::{Currency, Tariff};
    /// Currency, price, increment, minimum, cap, customer, card.
    type Stored = (String, i64, i64, i64, i64, Option<String>, Option<String>);
    let row: Option<Stored> = conn
        .query_row(
            "SELECT currency, price_per_minute, increment_seconds, minimum_seconds, cap_seconds,
                    stripe_customer, stripe_payment_method FROM bookings WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            },
        )
        .optional()?;
    Ok(row.and_then(
        |(currency, price, increment, minimum, cap, customer, payment_method)| {
            Some(Terms {
                tariff: Tariff {
                    currency: Currency::from_code(&currency)?,
                    price_per_minute: u64::try_from(price).ok()?,
                    increment_seconds: u32::try_from(increment).ok()?,
                    minimum_seconds: u32::try_from(minimum).ok()?,
                },
                cap_seconds: u64::try_from(cap).ok()?,
                card: customer.zip(payment_method),
            })
        },
    ))
}
