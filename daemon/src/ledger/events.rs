//! The outbox of events the booking platform is told of by webhook.
//!
//! An event is written in the transaction of the change it reports (a
//! call answered, a call ended and rated, a settlement concluded), so a
//! change without its event, or an event without its change, cannot be
//! committed. Events are numbered per booking (`sequence` 1, 2, 3, ...)
//! under a lock on the booking's row, so a receiver can order them. Each
//! event gets one delivery row per endpoint subscribed to its type; a
//! node claims due deliveries (with a lease, as settlements are claimed)
//! and records each attempt's outcome. Delivery is at least once: a
//! receiver de-duplicates by the event id.

use serde_json::{Value as Json, json};

use super::db::Db;
use super::{Ledger, LedgerError};
use crate::args;
use crate::clock::rfc3339;

/// How long a node's claim on a delivery lasts: longer than one attempt
/// (10 s) with its margin.
const CLAIM_LEASE_MS: i64 = 60_000;

/// Records event `kind` about `booking_id` (and `call_id`), with `data`,
/// and a delivery for every endpoint subscribed to it. Nothing when the
/// booking does not exist.
pub(super) fn emit(
    db: &mut dyn Db,
    kind: &str,
    booking_id: &str,
    call_id: Option<&str>,
    data: Json,
    now_ms: i64,
) -> Result<(), LedgerError> {
    // The booking's row lock numbers its events in turn across nodes.
    let lock = format!(
        "SELECT id FROM bookings WHERE id = ?1{}",
        db.dialect().for_update()
    );
    if db.query_opt(&lock, args![booking_id])?.is_none() {
        return Ok(());
    }
    let sequence = db
        .query_one(
            "SELECT COALESCE(MAX(booking_seq), 0) + 1 FROM events WHERE booking_id = ?1",
            args![booking_id],
        )?
        .int(0)?;
    let id = format!("evt_{}", uuid::Uuid::now_v7().simple());
    let body = json!({
        "id": id,
        "type": kind,
        "created": rfc3339(now_ms),
        "booking": booking_id,
        "sequence": sequence,
        "call": call_id,
        "data": data,
    })
    .to_string();
    db.execute(
        "INSERT INTO events (id, type, booking_id, booking_seq, call_id, created_ms, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        args![&id, kind, booking_id, sequence, call_id, now_ms, body],
    )?;
    fan_out(db, &id, kind, now_ms)?;
    Ok(())
}

/// A delivery, due at `now_ms`, to every endpoint subscribed to `kind`
/// that has none for the event yet.
fn fan_out(db: &mut dyn Db, event_id: &str, kind: &str, now_ms: i64) -> Result<u64, LedgerError> {
    db.execute(
        "INSERT INTO event_deliveries (id, event_id, endpoint, state, attempts, next_attempt_ms)
         SELECT CAST(?1 AS TEXT) || '/' || name, ?1, name, 'pending', 0, ?2 FROM webhook_endpoints
         WHERE (types = '*' OR (' ' || types || ' ') LIKE ('% ' || CAST(?3 AS TEXT) || ' %'))
           AND NOT EXISTS (SELECT 1 FROM event_deliveries d
                           WHERE d.event_id = ?1 AND d.endpoint = webhook_endpoints.name)",
        args![event_id, now_ms, kind],
    )
}

/// The booking of call `call_id`, when it has one.
pub(super) fn booking_of_call(
    db: &mut dyn Db,
    call_id: &str,
) -> Result<Option<String>, LedgerError> {
    Ok(db
        .query_opt("SELECT booking_id FROM calls WHERE id = ?1", args![call_id])?
        .map(|row| row.opt_text(0))
        .transpose()?
        .flatten())
}

/// An endpoint events go to (`[[webhook]]`), as the ledger keeps it: the
/// secret stays in each node's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    /// Its name, unique.
    pub name: String,
    /// Where events are POSTed.
    pub url: String,
    /// The types it takes; empty for all.
    pub types: Vec<String>,
}

/// One attempt's result, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx.
    Delivered {
        /// Its status.
        status: u16,
    },
    /// Try again at `next_attempt_ms`.
    Retry {
        /// The receiver's status, if it answered.
        status: Option<u16>,
        /// What went wrong.
        error: String,
        /// When to try again.
        next_attempt_ms: i64,
    },
    /// Given up (3 days of attempts).
    GaveUp {
        /// The receiver's status, if it answered.
        status: Option<u16>,
        /// What went wrong last.
        error: String,
    },
}

/// A delivery a node has claimed and must attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    /// `evt_.../endpoint`.
    pub id: String,
    /// The event.
    pub event_id: String,
    /// The endpoint's name (its secret is in the config under it).
    pub endpoint: String,
    /// Where to POST.
    pub url: String,
    /// The exact body to send.
    pub body: String,
    /// Attempts made before this one.
    pub attempts: i64,
    /// When the event was made (deliveries give up 3 days after).
    pub created_ms: i64,
}

/// An attempt log line of one delivery, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryView {
    /// The endpoint.
    pub endpoint: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    /// Attempts made.
    pub attempts: i64,
    /// The last status the receiver answered.
    pub last_status: Option<i64>,
    /// The last error.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_ms: Option<i64>,
    /// When the next attempt is due (pending).
    pub next_attempt_ms: i64,
}

/// An event with its deliveries.
#[derive(Debug, Clone, PartialEq)]
pub struct EventView {
    /// `evt_...`
    pub id: String,
    /// Its type.
    pub kind: String,
    /// Its booking.
    pub booking: String,
    /// Its number among the booking's events.
    pub sequence: i64,
    /// When it was made.
    pub created_ms: i64,
    /// The body its deliveries send.
    pub body: Json,
    /// One per endpoint.
    pub deliveries: Vec<DeliveryView>,
}

fn event_view(db: &mut dyn Db, row: &super::db::Row) -> Result<EventView, LedgerError> {
    let id = row.text(0)?;
    let deliveries = db
        .query(
            "SELECT endpoint, state, attempts, last_status, last_error, delivered_ms, next_attempt_ms
             FROM event_deliveries WHERE event_id = ?1 ORDER BY endpoint",
            args![&id],
        )?
        .iter()
        .map(|d| {
            Ok(DeliveryView {
                endpoint: d.text(0)?,
                state: d.text(1)?,
                attempts: d.int(2)?,
                last_status: d.opt_int(3)?,
                last_error: d.opt_text(4)?,
                delivered_ms: d.opt_int(5)?,
                next_attempt_ms: d.int(6)?,
            })
        })
        .collect::<Result<Vec<_>, LedgerError>>()?;
    Ok(EventView {
        id,
        kind: row.text(1)?,
        booking: row.text(2)?,
        sequence: row.int(3)?,
        created_ms: row.int(4)?,
        body: serde_json::from_str(&row.text(5)?).unwrap_or(Json::Null),
        deliveries,
    })
}

const EVENT_COLUMNS: &str = "id, type, booking_id, booking_seq, created_ms, body";

impl Ledger {
    /// Makes the ledger's endpoints these (every node writes its
    /// `[[webhook]]` list at start and on reload; keep them alike).
    pub async fn set_webhook_endpoints(
        &self,
        endpoints: Vec<WebhookEndpoint>,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        self.run(move |db| {
            let names: Vec<&str> = endpoints.iter().map(|e| e.name.as_str()).collect();
            for endpoint in &endpoints {
                let types = if endpoint.types.is_empty() {
                    "*".to_owned()
                } else {
                    endpoint.types.join(" ")
                };
                let updated = db.execute(
                    "UPDATE webhook_endpoints SET url = ?2, types = ?3, updated_ms = ?4 WHERE name = ?1",
                    args![&endpoint.name, &endpoint.url, &types, now_ms],
                )?;
                if updated == 0 {
                    db.execute(
                        "INSERT INTO webhook_endpoints (name, url, types, updated_ms) VALUES (?1, ?2, ?3, ?4)",
                        args![&endpoint.name, &endpoint.url, &types, now_ms],
                    )?;
                }
            }
            let known: Vec<String> = db
                .query("SELECT name FROM webhook_endpoints", &[])?
                .iter()
                .map(|row| row.text(0))
                .collect::<Result<_, _>>()?;
            for name in known.iter().filter(|n| !names.contains(&n.as_str())) {
                db.execute("DELETE FROM webhook_endpoints WHERE name = ?1", args![name])?;
            }
            Ok(())
        })
        .await
    }

    /// Events, oldest first, of a booking and/or of a type, after
    /// `after` (the cursor: the time and id of the last event of the page
    /// before), at most `limit`, with their deliveries.
    pub async fn events(
        &self,
        booking: Option<String>,
        kind: Option<String>,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<EventView>, LedgerError> {
        self.run(move |db| {
            let (after_ms, after_id) = after.unwrap_or((i64::MIN, String::new()));
            let rows = db.query(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events
                     WHERE (CAST(?1 AS TEXT) IS NULL OR booking_id = ?1)
                       AND (CAST(?2 AS TEXT) IS NULL OR type = ?2)
                       AND (created_ms > ?3 OR (created_ms = ?3 AND id > ?4))
                     ORDER BY created_ms, id LIMIT ?5"
                ),
                args![booking, kind, after_ms, after_id, limit],
            )?;
            rows.iter().map(|row| event_view(db, row)).collect()
        })
        .await
    }

    /// One event with its deliveries.
    pub async fn event(&self, id: String) -> Result<Option<EventView>, LedgerError> {
        self.run(move |db| {
            let row = db.query_opt(
                &format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1"),
                args![&id],
            )?;
            row.map(|row| event_view(db, &row)).transpose()
        })
        .await
    }

    /// Sends event `id` again to every endpoint subscribed to it now
    /// (delivered or not). Returns how many deliveries are due, or `None`
    /// for no such event.
    pub async fn redeliver(&self, id: String, now_ms: i64) -> Result<Option<u64>, LedgerError> {
        self.run(move |db| {
            let Some(kind) = db
                .query_opt("SELECT type FROM events WHERE id = ?1", args![&id])?
                .map(|row| row.text(0))
                .transpose()?
            else {
                return Ok(None);
            };
            let again = db.execute(
                "UPDATE event_deliveries SET state = 'pending', next_attempt_ms = ?2,
                     claimed_by = NULL, claimed_until_ms = NULL
                 WHERE event_id = ?1",
                args![&id, now_ms],
            )?;
            let new = fan_out(db, &id, &kind, now_ms)?;
            Ok(Some(again + new))
        })
        .await
    }

    /// Claims up to `limit` deliveries due at `now_ms` for this node.
    pub async fn claim_due_deliveries(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<DueDelivery>, LedgerError> {
        let node = self.node.clone();
        self.run(move |db| {
            let dialect = db.dialect();
            let now = dialect.now_ms();
            let claimed: Vec<String> = db
                .query(
                    &format!(
                        "UPDATE event_deliveries SET claimed_by = ?2, claimed_until_ms = {now} + ?3
                         WHERE id IN (
                             SELECT id FROM event_deliveries
                             WHERE state = 'pending' AND next_attempt_ms <= ?1
                               AND (claimed_by IS NULL OR claimed_by = ?2 OR claimed_until_ms < {now})
                             ORDER BY next_attempt_ms, id LIMIT ?4{})
                         RETURNING id",
                        dialect.skip_locked()
                    ),
                    args![now_ms, &*node, CLAIM_LEASE_MS, limit],
                )?
                .iter()
                .map(|row| row.text(0))
                .collect::<Result<_, _>>()?;
            let mut due = Vec::with_capacity(claimed.len());
            for id in claimed {
                let row = db.query_opt(
                    "SELECT d.id, d.event_id, d.endpoint, w.url, e.body, d.attempts, e.created_ms
                     FROM event_deliveries d
                     JOIN events e ON e.id = d.event_id
                     JOIN webhook_endpoints w ON w.name = d.endpoint
                     WHERE d.id = ?1",
                    args![&id],
                )?;
                // An endpoint removed from the config: nowhere to send.
                let Some(row) = row else {
                    db.execute(
                        "UPDATE event_deliveries SET state = 'failed', last_error = 'the endpoint is no longer configured',
                             claimed_by = NULL, claimed_until_ms = NULL WHERE id = ?1",
                        args![&id],
                    )?;
                    continue;
                };
                due.push(DueDelivery {
                    id: row.text(0)?,
                    event_id: row.text(1)?,
                    endpoint: row.text(2)?,
                    url: row.text(3)?,
                    body: row.text(4)?,
                    attempts: row.int(5)?,
                    created_ms: row.int(6)?,
                });
            }
            due.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(due)
        })
        .await
    }

    /// Records an attempt of delivery `id` by this node.
    pub async fn delivery_attempted(
        &self,
        id: String,
        outcome: DeliveryOutcome,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        self.run(move |db| {
            let (state, status, error, next, delivered) = match &outcome {
                DeliveryOutcome::Delivered { status } => {
                    ("delivered", Some(i64::from(*status)), None, now_ms, Some(now_ms))
                }
                DeliveryOutcome::Retry {
                    status,
                    error,
                    next_attempt_ms,
                } => (
                    "pending",
                    status.map(i64::from),
                    Some(error.as_str()),
                    *next_attempt_ms,
                    None,
                ),
                DeliveryOutcome::GaveUp { status, error } => (
                    "failed",
                    status.map(i64::from),
                    Some(error.as_str()),
                    now_ms,
                    None,
                ),
            };
            db.execute(
                "UPDATE event_deliveries SET state = ?2, attempts = attempts + 1, last_status = ?3,
                     last_error = ?4, next_attempt_ms = ?5, delivered_ms = COALESCE(?6, delivered_ms),
                     claimed_by = NULL, claimed_until_ms = NULL
                 WHERE id = ?1",
                args![&id, state, status, error, next, delivered],
            )?;
            Ok(())
        })
        .await
    }

    /// Deliveries not yet made (pending), for the metric.
    pub async fn pending_deliveries(&self) -> Result<u64, LedgerError> {
        self.run(|db| {
            let n = db
                .query_one(
                    "SELECT COUNT(*) FROM event_deliveries WHERE state = 'pending'",
                    &[],
                )?
                .int(0)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }
}
