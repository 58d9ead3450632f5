//! Settlement rows: one per money movement, written (and committed)
//! before anything is sent, with the idempotency key and parameters that
//! never change. Synchronous: these run on the database owner thread.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};
use tollbridge_billing::rating::Currency;
use tollbridge_billing::settlement::{self, AfterCall, Operation, UnderMinimum};

use crate::bookings::model::rfc3339;
use crate::store::StoreError;

/// A settlement row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// `st_...`
    pub id: String,
    /// The call it settles.
    pub call_id: Option<String>,
    /// The booking.
    pub booking_id: Option<String>,
    /// `authorize`, `capture` or `cancel`.
    pub operation: String,
    /// The idempotency key.
    pub key: String,
    /// Minor units.
    pub amount: i64,
    /// Lower-case ISO code.
    pub currency: String,
    /// `pending`, `sent`, `succeeded`, `failed`, `unknown`.
    pub state: String,
    /// The PaymentIntent acted on (or created).
    pub payment_intent: Option<String>,
    /// The Stripe customer.
    pub customer: Option<String>,
    /// The card.
    pub payment_method: Option<String>,
    /// Times sent.
    pub tries: i64,
    /// When the hold this row places or acts on must be acted on at the
    /// latest (see [`settlement::act_by`]), once known.
    pub act_by_ms: Option<i64>,
}

const COLUMNS: &str = "id, call_id, booking_id, operation, idempotency_key, amount, currency, state, \
                       payment_intent, customer, payment_method, tries, act_by_ms";

fn row_from(row: &rusqlite::Row) -> rusqlite::Result<Row> {
    Ok(Row {
        id: row.get(0)?,
        call_id: row.get(1)?,
        booking_id: row.get(2)?,
        operation: row.get(3)?,
        key: row.get(4)?,
        amount: row.get(5)?,
        currency: row.get(6)?,
        state: row.get(7)?,
        payment_intent: row.get(8)?,
        customer: row.get(9)?,
        payment_method: row.get(10)?,
        tries: row.get(11)?,
        act_by_ms: row.get(12)?,
    })
}

/// What a new row holds.
#[derive(Debug, Clone)]
pub struct NewRow<'a> {
    /// The call.
    pub call_id: &'a str,
    /// The booking.
    pub booking_id: Option<&'a str>,
    /// What it does.
    pub operation: Operation,
    /// Minor units.
    pub amount: i64,
    /// Currency code.
    pub currency: &'a str,
    /// The PaymentIntent it acts on (capture, cancel).
    pub payment_intent: Option<&'a str>,
    /// Customer and card (authorize).
    pub customer: Option<&'a str>,
    /// The card.
    pub payment_method: Option<&'a str>,
    /// The act-by time of the hold a capture or cancel acts on.
    pub act_by_ms: Option<i64>,
}

/// Inserts the row for a call's operation (its key derived from both);
/// an existing row with that key is returned unchanged, never altered.
pub fn insert(conn: &Connection, new: &NewRow, now_ms: i64) -> Result<Row, StoreError> {
    let key = settlement::call_key(new.call_id, new.operation);
    insert_keyed(conn, &key, Some(new.call_id), new, None, 1, now_ms)
}

/// Inserts a row under `key`, due at `due_ms` (now when `None`); an
/// existing row with that key is returned unchanged.
fn insert_keyed(
    conn: &Connection,
    key: &str,
    call_id: Option<&str>,
    new: &NewRow,
    due_ms: Option<i64>,
    attempt: i64,
    now_ms: i64,
) -> Result<Row, StoreError> {
    conn.execute(
        "INSERT OR IGNORE INTO settlements (id, booking_id, call_id, operation, idempotency_key, amount, currency,
             state, payment_intent, customer, payment_method, created_ms, updated_ms, next_attempt_ms, attempt,
             act_by_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?9, ?10, ?11, ?11, ?12, ?13, ?14)",
        params![
            format!("st_{}", uuid::Uuid::now_v7().simple()),
            new.booking_id,
            call_id,
            new.operation.as_str(),
            key,
            new.amount,
            new.currency,
            new.payment_intent,
            new.customer,
            new.payment_method,
            now_ms,
            due_ms,
            attempt,
            new.act_by_ms
        ],
    )?;
    let sql = format!("SELECT {COLUMNS} FROM settlements WHERE idempotency_key = ?1");
    Ok(conn.query_row(&sql, [&key], row_from)?)
}

/// Marks a row sent (committed before the request goes out). Unless an
/// outcome is recorded first, the reconciler reads it back after 5
/// minutes (at once after a restart).
pub fn mark_sent(conn: &Connection, id: &str, now_ms: i64) -> Result<(), StoreError> {
    let look_again = now_ms + settlement::reconcile_after(1).as_millis() as i64;
    conn.execute(
        "UPDATE settlements SET state = 'sent', tries = tries + 1, updated_ms = ?2, next_attempt_ms = ?3 WHERE id = ?1",
        params![id, now_ms, look_again],
    )?;
    Ok(())
}

/// Records an outcome: `succeeded`, `failed` or `unknown` (to look again
/// at `next_attempt_ms`, or sooner when the hold it acts on must be acted
/// on before then).
pub fn conclude(
    conn: &Connection,
    id: &str,
    state: &str,
    payment_intent: Option<&str>,
    error: Option<&str>,
    next_attempt_ms: Option<i64>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let act_by: Option<i64> = conn
        .query_row(
            "SELECT act_by_ms FROM settlements WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let next_attempt_ms =
        next_attempt_ms.map(|next| settlement::look_again_at(now_ms, next, act_by));
    conn.execute(
        "UPDATE settlements SET state = ?2, payment_intent = COALESCE(?3, payment_intent), last_error = ?4,
             next_attempt_ms = ?5, updated_ms = ?6
         WHERE id = ?1",
        params![id, state, payment_intent, error, next_attempt_ms, now_ms],
    )?;
    Ok(())
}

/// Records a hold that succeeded (run it inside a transaction): its
/// PaymentIntent and until when it can be captured; for a call's hold, the
/// call's PaymentIntent and, when the call has ended meanwhile (the caller
/// hung up while the hold was on its way, or a crash cut the answer off),
/// the capture or release that follows, so no hold is left behind.
pub fn hold_succeeded(
    conn: &Connection,
    id: &str,
    payment_intent: &str,
    capture_before: Option<i64>,
    now_ms: i64,
) -> Result<(), StoreError> {
    conclude(
        conn,
        id,
        "succeeded",
        Some(payment_intent),
        None,
        None,
        now_ms,
    )?;
    held_until(conn, id, capture_before)?;
    let hold: Option<(Option<String>, String, i64)> = conn
        .query_row(
            "SELECT call_id, operation, amount FROM settlements WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((Some(call), operation, amount)) = hold else {
        return Ok(());
    };
    if operation != Operation::Authorize.as_str() {
        return Ok(());
    }
    conn.execute(
        "UPDATE calls SET payment_intent = ?2, hold_amount = ?3 WHERE id = ?1",
        params![call, payment_intent, amount],
    )?;
    let owed: Option<i64> = conn
        .query_row(
            "SELECT CASE WHEN ended_ms IS NULL THEN NULL ELSE COALESCE(amount, 0) END FROM calls WHERE id = ?1",
            [&call],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    if let Some(owed) = owed {
        after_call(conn, &call, owed, now_ms)?;
    }
    Ok(())
}

/// Records until when a hold that succeeded can be captured (Stripe's
/// `capture_before`, unix seconds, when it said) and so when it must be
/// captured, released or renewed at the latest.
fn held_until(conn: &Connection, id: &str, capture_before: Option<i64>) -> Result<(), StoreError> {
    let capture_before_ms = capture_before.map(|s| s.saturating_mul(1000));
    let held_ms: Option<i64> = conn
        .query_row(
            "SELECT created_ms FROM settlements WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    let Some(held_ms) = held_ms else {
        return Ok(());
    };
    conn.execute(
        "UPDATE settlements SET capture_before_ms = ?2, act_by_ms = ?3 WHERE id = ?1",
        params![
            id,
            capture_before_ms,
            settlement::act_by(held_ms, capture_before_ms)
        ],
    )?;
    Ok(())
}

/// Rows to work on now: every pending row, and sent or unknown rows whose
/// time has come (at start-up, `all_open`: every one of them, since a
/// crash may have cut them off).
pub fn due(conn: &Connection, now_ms: i64, all_open: bool) -> Result<Vec<Row>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM settlements
         WHERE (state = 'pending' AND COALESCE(next_attempt_ms, 0) <= ?1)
            OR (state IN ('sent', 'unknown') AND (?2 OR COALESCE(next_attempt_ms, 0) <= ?1))
         ORDER BY created_ms LIMIT 100"
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let rows = statement.query_map(params![now_ms, all_open], row_from)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// After a call is rated (in the transaction that closes its record):
/// the capture or cancel row for its hold, if it has one that succeeded
/// and none yet. Returns the new row.
pub fn after_call(
    conn: &Connection,
    call_id: &str,
    amount: i64,
    now_ms: i64,
) -> Result<Option<Row>, StoreError> {
    /// The PaymentIntent, currency, booking, under-minimum policy, act-by.
    type Hold = (String, String, Option<String>, String, Option<i64>);
    let hold: Option<Hold> = conn
        .query_row(
            "SELECT s.payment_intent, s.currency, s.booking_id, COALESCE(b.under_minimum, 'cancel'), s.act_by_ms
             FROM settlements s LEFT JOIN bookings b ON b.id = s.booking_id
             WHERE s.call_id = ?1 AND s.operation = 'authorize' AND s.state = 'succeeded'
               AND s.payment_intent IS NOT NULL",
            [call_id],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            },
        )
        .optional()?;
    let Some((payment_intent, currency, booking_id, policy, act_by_ms)) = hold else {
        return Ok(None);
    };
    let done: i64 = conn.query_row(
        "SELECT COUNT(*) FROM settlements WHERE call_id = ?1 AND operation IN ('capture', 'cancel')",
        [call_id],
        |row| row.get(0),
    )?;
    if done > 0 {
        return Ok(None);
    }
    let Some(code) = Currency::from_code(&currency) else {
        return Ok(None);
    };
    let policy = UnderMinimum::parse(&policy).unwrap_or(UnderMinimum::Cancel);
    let (operation, amount) = match settlement::after_call(amount, code, policy) {
        AfterCall::Capture(amount) => (Operation::Capture, amount),
        AfterCall::Cancel => (Operation::Cancel, 0),
    };
    let row = insert(
        conn,
        &NewRow {
            call_id,
            booking_id: booking_id.as_deref(),
            operation,
            amount,
            currency: &currency,
            payment_intent: Some(&payment_intent),
            customer: None,
            payment_method: None,
            act_by_ms,
        },
        now_ms,
    )?;
    Ok(Some(row))
}

/// Plans a booking's cancellation-fee hold (when it has a fee and a
/// card): due now, or a hold's lifetime before the window opens.
pub fn plan_fee_hold(
    conn: &Connection,
    booking_id: &str,
    now_ms: i64,
) -> Result<Option<Row>, StoreError> {
    /// Fee, currency, customer, card, window start.
    type FeeTerms = (Option<i64>, String, Option<String>, Option<String>, i64);
    let booking: Option<FeeTerms> = conn
        .query_row(
            "SELECT cancellation_fee, currency, stripe_customer, stripe_payment_method, window_start_ms
             FROM bookings WHERE id = ?1",
            [booking_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let Some((Some(fee), currency, Some(customer), Some(payment_method), window_start_ms)) =
        booking
    else {
        return Ok(None);
    };
    if fee <= 0 {
        return Ok(None);
    }
    let key = settlement::booking_key(booking_id, "fee-hold", 1);
    let new = NewRow {
        call_id: "",
        booking_id: Some(booking_id),
        operation: Operation::CancellationFee,
        amount: fee,
        currency: &currency,
        payment_intent: None,
        customer: Some(&customer),
        payment_method: Some(&payment_method),
        act_by_ms: None,
    };
    let due = settlement::fee_hold_at(now_ms, window_start_ms);
    Ok(Some(insert_keyed(
        conn,
        &key,
        None,
        &new,
        Some(due),
        1,
        now_ms,
    )?))
}

/// A booking's latest cancellation-fee hold and its attempt number.
fn current_fee_hold(conn: &Connection, booking_id: &str) -> Result<Option<(Row, i64)>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS}, attempt FROM settlements
         WHERE booking_id = ?1 AND operation = 'cancellation-fee' ORDER BY attempt DESC LIMIT 1"
    );
    Ok(conn
        .query_row(&sql, [booking_id], |r| {
            Ok((row_from(r)?, r.get::<_, i64>(13)?))
        })
        .optional()?)
}

/// Renews the cancellation-fee holds about to lapse (their act-by time
/// from Stripe's `capture_before` has come; a hold's safe lifetime after
/// it was placed when that was never read) while their booking is still
/// open: the old hold is released and a new one (the next attempt, new
/// keys) is placed at once. Returns how many.
pub fn renew_fee_holds(conn: &Connection, now_ms: i64) -> Result<usize, StoreError> {
    let safe = (settlement::HOLD_LIFETIME - settlement::HOLD_MARGIN).as_millis() as i64;
    let aging: Vec<String> = {
        let mut statement = conn.prepare_cached(
            "SELECT b.id FROM bookings b JOIN settlements s ON s.booking_id = b.id
             WHERE s.operation = 'cancellation-fee' AND s.state = 'succeeded'
               AND COALESCE(s.act_by_ms, s.updated_ms + ?3) <= ?1
               AND s.attempt = (SELECT MAX(attempt) FROM settlements
                                WHERE booking_id = b.id AND operation = 'cancellation-fee')
               AND b.state IN ('active', 'in-call') AND b.window_end_ms > ?2
               AND NOT EXISTS (SELECT 1 FROM settlements f WHERE f.booking_id = b.id AND f.call_id IS NULL
                               AND f.operation IN ('capture', 'cancel') AND f.attempt = s.attempt)",
        )?;
        let rows = statement.query_map(params![now_ms, now_ms, safe], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for booking in &aging {
        let Some((hold, attempt)) = current_fee_hold(conn, booking)? else {
            continue;
        };
        settle_fee(conn, booking, false, "renewed before it lapses", now_ms)?;
        let next = attempt + 1;
        let new = NewRow {
            call_id: "",
            booking_id: Some(booking),
            operation: Operation::CancellationFee,
            amount: hold.amount,
            currency: &hold.currency,
            payment_intent: None,
            customer: hold.customer.as_deref(),
            payment_method: hold.payment_method.as_deref(),
            act_by_ms: None,
        };
        let key = settlement::booking_key(booking, "fee-hold", next);
        insert_keyed(conn, &key, None, &new, None, next, now_ms)?;
    }
    Ok(aging.len())
}

/// What becomes of a booking's cancellation fee: captured (a late
/// cancellation, a no-show) or released (a completed call, an early
/// cancellation). A hold not placed yet is dropped instead.
pub fn settle_fee(
    conn: &Connection,
    booking_id: &str,
    capture: bool,
    reason: &str,
    now_ms: i64,
) -> Result<Option<Row>, StoreError> {
    let Some((hold, attempt)) = current_fee_hold(conn, booking_id)? else {
        return Ok(None);
    };
    match (hold.state.as_str(), hold.payment_intent.as_deref()) {
        ("pending", _) => {
            conclude(
                conn,
                &hold.id,
                "failed",
                None,
                Some(&format!("not needed: {reason}")),
                None,
                now_ms,
            )?;
            Ok(None)
        }
        ("succeeded", Some(payment_intent)) => {
            let (operation, movement, amount) = if capture {
                (Operation::Capture, "fee-capture", hold.amount)
            } else {
                (Operation::Cancel, "fee-release", 0)
            };
            let done: i64 = conn.query_row(
                "SELECT COUNT(*) FROM settlements WHERE idempotency_key IN (?1, ?2)",
                params![
                    settlement::booking_key(booking_id, "fee-capture", attempt),
                    settlement::booking_key(booking_id, "fee-release", attempt)
                ],
                |r| r.get(0),
            )?;
            if done > 0 {
                return Ok(None);
            }
            let new = NewRow {
                call_id: "",
                booking_id: Some(booking_id),
                operation,
                amount,
                currency: &hold.currency,
                payment_intent: Some(payment_intent),
                customer: None,
                payment_method: None,
                act_by_ms: hold.act_by_ms,
            };
            let key = settlement::booking_key(booking_id, movement, attempt);
            Ok(Some(insert_keyed(
                conn, &key, None, &new, None, attempt, now_ms,
            )?))
        }
        _ => Ok(None),
    }
}

/// Whether canceling `booking` at `now_ms` is late (its fee is due).
pub fn is_late(
    conn: &Connection,
    booking_id: &str,
    now_ms: i64,
    late: std::time::Duration,
) -> Result<bool, StoreError> {
    let start: i64 = conn.query_row(
        "SELECT window_start_ms FROM bookings WHERE id = ?1",
        [booking_id],
        |r| r.get(0),
    )?;
    Ok(settlement::is_late_cancellation(now_ms, start, late))
}

/// Captures the fee of every booking whose window ended without a
/// completed call.
pub fn fee_no_shows(conn: &Connection, now_ms: i64) -> Result<usize, StoreError> {
    let bookings: Vec<String> = {
        let mut statement = conn.prepare_cached(
            "SELECT b.id FROM bookings b JOIN settlements s ON s.booking_id = b.id
             WHERE s.operation = 'cancellation-fee' AND s.state = 'succeeded'
               AND s.attempt = (SELECT MAX(attempt) FROM settlements
                                WHERE booking_id = b.id AND operation = 'cancellation-fee')
               AND b.state = 'active' AND b.window_end_ms <= ?1
               AND NOT EXISTS (SELECT 1 FROM settlements f WHERE f.booking_id = b.id
                               AND f.call_id IS NULL AND f.operation IN ('capture', 'cancel')
                               AND f.attempt = s.attempt)",
        )?;
        let rows = statement.query_map([now_ms], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for booking in &bookings {
        settle_fee(conn, booking, true, "no call in the window", now_ms)?;
    }
    Ok(bookings.len())
}

/// A call's settlement attempts, oldest first, as JSON.
pub fn for_call(conn: &Connection, call_id: &str) -> Result<Vec<Value>, StoreError> {
    list(conn, Some(call_id), None)
}

/// Settlement rows as JSON, for a call or in a state.
pub fn list(
    conn: &Connection,
    call_id: Option<&str>,
    state: Option<&str>,
) -> Result<Vec<Value>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT id, call_id, booking_id, operation, idempotency_key, amount, currency, state, payment_intent,
                tries, last_error, created_ms, updated_ms, next_attempt_ms, capture_before_ms
         FROM settlements WHERE (?1 IS NULL OR call_id = ?1) AND (?2 IS NULL OR state = ?2)
         ORDER BY created_ms, id",
    )?;
    let rows = statement.query_map(params![call_id, state], |row| {
        Ok(json!({
            "id": row.get::<_, String>(0)?,
            "call": row.get::<_, Option<String>>(1)?,
            "booking": row.get::<_, Option<String>>(2)?,
            "operation": row.get::<_, String>(3)?,
            "idempotency_key": row.get::<_, String>(4)?,
            "amount": row.get::<_, i64>(5)?,
            "currency": row.get::<_, String>(6)?,
            "state": row.get::<_, String>(7)?,
            "payment_intent": row.get::<_, Option<String>>(8)?,
            "tries": row.get::<_, i64>(9)?,
            "last_error": row.get::<_, Option<String>>(10)?,
            "created_at": rfc3339(row.get(11)?),
            "updated_at": rfc3339(row.get(12)?),
            "next_attempt_at": row.get::<_, Option<i64>>(13)?.map(rfc3339),
            "capture_before": row.get::<_, Option<i64>>(14)?.map(rfc3339),
        }))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const DAY_MS: i64 = 86_400_000;

    /// A booking with a ¥500 fee whose window runs from day 10 to day 20,
    /// and its first fee hold, placed on day `placed`.
    fn booking_with_fee_hold(conn: &Connection, placed_ms: i64) {
        conn.execute_batch(&format!(
            "INSERT INTO bookings (id, called, callee, currency, price_per_minute, cap_seconds, window_start_ms,
                 window_end_ms, stripe_customer, stripe_payment_method, cancellation_fee, created_ms, updated_ms)
             VALUES ('bk_1', '+81500000001', '{{}}', 'jpy', 100, 600, {start}, {end}, 'cus_1', 'pm_1', 500, 0, 0);",
            start = 10 * DAY_MS,
            end = 20 * DAY_MS
        ))
        .unwrap();
        let row = plan_fee_hold(conn, "bk_1", 0).unwrap().unwrap();
        conclude(
            conn,
            &row.id,
            "succeeded",
            Some("pi_old"),
            None,
            None,
            placed_ms,
        )
        .unwrap();
    }

    fn rows(conn: &Connection) -> Vec<(String, String, String)> {
        let mut statement = conn
            .prepare("SELECT idempotency_key, operation, state FROM settlements ORDER BY created_ms, attempt, idempotency_key")
            .unwrap();
        statement
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[tokio::test]
    async fn a_fee_hold_about_to_lapse_is_released_and_placed_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("t.db")).unwrap();
        let result = store
            .call(|conn| {
                booking_with_fee_hold(conn, 6 * DAY_MS);
                // Four days on, not yet near its end: nothing to do.
                assert_eq!(renew_fee_holds(conn, 10 * DAY_MS).unwrap(), 0);
                // 4 d 12 h after it was placed: released and renewed.
                let aging = 6 * DAY_MS
                    + (settlement::HOLD_LIFETIME - settlement::HOLD_MARGIN).as_millis() as i64;
                assert_eq!(renew_fee_holds(conn, aging).unwrap(), 1);
                assert_eq!(renew_fee_holds(conn, aging).unwrap(), 0, "once");
                let listed = rows(conn);
                // A late cancellation now captures the new hold, not the old.
                let renewed = current_fee_hold(conn, "bk_1").unwrap().unwrap().0;
                conclude(
                    conn,
                    &renewed.id,
                    "succeeded",
                    Some("pi_new"),
                    None,
                    None,
                    aging + 1000,
                )
                .unwrap();
                let capture = settle_fee(conn, "bk_1", true, "late", aging + 2000)
                    .unwrap()
                    .unwrap();
                Ok((listed, capture))
            })
            .await
            .unwrap();
        let (listed, capture) = result;
        let keys: Vec<(&str, &str, &str)> = listed
            .iter()
            .map(|(k, o, s)| (k.as_str(), o.as_str(), s.as_str()))
            .collect();
        assert!(
            keys.contains(&("tb:booking:bk_1:fee-release:v1", "cancel", "pending")),
            "{keys:?}"
        );
        assert!(
            keys.contains(&("tb:booking:bk_1:fee-hold:v2", "cancellation-fee", "pending")),
            "{keys:?}"
        );
        assert_eq!(capture.key, "tb:booking:bk_1:fee-capture:v2");
        assert_eq!(
            (capture.payment_intent.as_deref(), capture.amount),
            (Some("pi_new"), 500)
        );
    }

    #[tokio::test]
    async fn a_booking_whose_window_ended_is_not_renewed_but_charged_as_a_no_show() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("t.db")).unwrap();
        let (renewed, charged, listed) = store
            .call(|conn| {
                booking_with_fee_hold(conn, 15 * DAY_MS);
                let after = 21 * DAY_MS;
                Ok((
                    renew_fee_holds(conn, after).unwrap(),
                    fee_no_shows(conn, after).unwrap(),
                    rows(conn),
                ))
            })
            .await
            .unwrap();
        assert_eq!((renewed, charged), (0, 1));
        assert!(
            listed
                .iter()
                .any(|(k, o, _)| k == "tb:booking:bk_1:fee-capture:v1" && o == "capture"),
            "{listed:?}"
        );
    }

    /// [`booking_with_fee_hold`] placed at `placed_ms`, whose charge
    /// Stripe says can be captured until `ends_ms`.
    fn fee_hold_ending(conn: &Connection, placed_ms: i64, ends_ms: i64) {
        booking_with_fee_hold(conn, placed_ms);
        let hold = current_fee_hold(conn, "bk_1").unwrap().unwrap().0;
        conn.execute(
            "UPDATE settlements SET created_ms = ?2 WHERE id = ?1",
            params![hold.id, placed_ms],
        )
        .unwrap();
        held_until(conn, &hold.id, Some(ends_ms / 1000)).unwrap();
    }

    #[tokio::test]
    async fn stripes_capture_before_sets_when_a_hold_is_renewed_or_looked_at_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("t.db")).unwrap();
        let hour = DAY_MS / 24;
        let placed = 6 * DAY_MS;
        // Stripe says the hold ends 2 days after it was placed, sooner
        // than the 4 d 18 h Tollbridge would assume.
        let ends = placed + 2 * DAY_MS;
        let act_by = ends - 6 * hour;
        let (early, on_time, capture, next_look) = store
            .call(move |conn| {
                fee_hold_ending(conn, placed, ends);
                let early = renew_fee_holds(conn, act_by - 1).unwrap();
                // A late cancellation now: the capture acts on that hold
                // and, when its outcome is unknown, is looked at again by
                // the act-by time, not a day later.
                let capture = settle_fee(conn, "bk_1", true, "late", act_by - 2 * hour)
                    .unwrap()
                    .unwrap();
                let now = act_by - 2 * hour;
                conclude(
                    conn,
                    &capture.id,
                    "unknown",
                    None,
                    Some("timeout"),
                    Some(now + DAY_MS),
                    now,
                )
                .unwrap();
                let next_look: i64 = conn
                    .query_row(
                        "SELECT next_attempt_ms FROM settlements WHERE id = ?1",
                        [&capture.id],
                        |r| r.get(0),
                    )
                    .unwrap();
                // Already captured (or being captured): not renewed.
                let on_time = renew_fee_holds(conn, act_by).unwrap();
                Ok((early, on_time, capture, next_look))
            })
            .await
            .unwrap();
        assert_eq!(early, 0, "not before its act-by time");
        assert_eq!(
            capture.act_by_ms,
            Some(act_by),
            "the capture knows the hold's end"
        );
        assert_eq!(next_look, act_by);
        assert_eq!(on_time, 0, "a hold being captured is not renewed");

        // Without the cancellation, the same hold is renewed at its
        // act-by time.
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("t.db")).unwrap();
        let (early, on_time) = store
            .call(move |conn| {
                fee_hold_ending(conn, placed, ends);
                Ok((
                    renew_fee_holds(conn, act_by - 1).unwrap(),
                    renew_fee_holds(conn, act_by).unwrap(),
                ))
            })
            .await
            .unwrap();
        assert_eq!((early, on_time), (0, 1));
    }
}
