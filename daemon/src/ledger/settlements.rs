//! Settlement rows: one per money movement, written (and committed)
//! before anything is sent, with the idempotency key and parameters that
//! never change; their outcomes; the rows due for the worker. A call's
//! holds and what follows them are `holds.rs`; the cancellation fees'
//! rows are `fees.rs`.

use tollbridge_billing::settlement::machine::{Facts, Movement};
use tollbridge_billing::settlement::{self, Operation};

use super::db::{Db, Row};
use super::states::SettlementState;
use super::{Ledger, LedgerError};
use crate::args;

/// A settlement row, as the worker acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// What it is: fixed when it was written.
    pub facts: Facts,
    /// Where it stands.
    pub state: SettlementState,
    /// Times sent.
    pub tries: i64,
    /// When the hold this row places or acts on must be acted on at the
    /// latest (see [`settlement::act_by`]), once known.
    pub act_by_ms: Option<i64>,
}

impl Settlement {
    /// The settlement machine for this row, as it stands.
    pub fn movement(&self) -> Movement {
        Movement::new(
            self.facts.clone(),
            self.state,
            u32::try_from(self.tries).unwrap_or(u32::MAX),
        )
    }
}

pub(super) const COLUMNS: &str = "id, call_id, booking_id, operation, idempotency_key, amount, currency, \
                       state, payment_intent, customer, payment_method, tries, act_by_ms, reason";

pub(super) fn settlement_from(row: &Row) -> Result<Settlement, LedgerError> {
    let operation = row.text(3)?;
    let state = row.text(7)?;
    Ok(Settlement {
        facts: Facts {
            id: row.text(0)?,
            call_id: row.opt_text(1)?,
            booking_id: row.opt_text(2)?,
            operation: Operation::parse(&operation)
                .ok_or_else(|| LedgerError::Decode(format!("operation {operation:?}")))?,
            key: row.text(4)?,
            amount: row.int(5)?,
            currency: row.text(6)?,
            payment_intent: row.opt_text(8)?,
            customer: row.opt_text(9)?,
            payment_method: row.opt_text(10)?,
            reason: row.opt_text(13)?,
        },
        state: SettlementState::parse(&state)
            .ok_or_else(|| LedgerError::Decode(format!("settlement state {state:?}")))?,
        tries: row.int(11)?,
        act_by_ms: row.opt_int(12)?,
    })
}

/// What a new row holds.
#[derive(Debug, Clone)]
pub struct NewSettlement<'a> {
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
pub(super) fn insert(
    db: &mut dyn Db,
    new: &NewSettlement,
    now_ms: i64,
) -> Result<Settlement, LedgerError> {
    let key = settlement::call_key(new.call_id, new.operation);
    insert_keyed(db, &key, Some(new.call_id), new, None, 1, now_ms)
}

/// Inserts a row under `key`, due at `due_ms` (now when `None`); an
/// existing row with that key is returned unchanged.
pub(super) fn insert_keyed(
    db: &mut dyn Db,
    key: &str,
    call_id: Option<&str>,
    new: &NewSettlement,
    due_ms: Option<i64>,
    attempt: i64,
    now_ms: i64,
) -> Result<Settlement, LedgerError> {
    db.execute(
        "INSERT INTO settlements (id, booking_id, call_id, operation, idempotency_key, amount, currency,
             state, payment_intent, customer, payment_method, created_ms, updated_ms, next_attempt_ms, attempt,
             act_by_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?9, ?10, ?11, ?11, ?12, ?13, ?14)
         ON CONFLICT (idempotency_key) DO NOTHING",
        args![
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
    settlement_from(&db.query_one(&sql, args![key])?)
}

/// Marks a row sent by `node` (committed before the request goes out),
/// which claims it for [`CLAIM_LEASE_MS`]; false (nothing changed) when
/// another node's claim on it still runs (that node sends it, not this
/// one) or when it has concluded meanwhile (a fee hold dropped as not
/// needed after the worker picked it up must not go out). Unless an
/// outcome is recorded first, the reconciler reads it back from Stripe
/// after 5 minutes (at once after a restart).
pub(super) fn mark_sent(
    db: &mut dyn Db,
    id: &str,
    node: &str,
    now_ms: i64,
) -> Result<bool, LedgerError> {
    let look_again = now_ms + settlement::reconcile_after(1).as_millis() as i64;
    let now = db.dialect().now_ms();
    let marked = db.execute(
        &format!(
            "UPDATE settlements SET state = 'sent', tries = tries + 1, updated_ms = ?2, next_attempt_ms = ?3,
                 claimed_by = ?4, claimed_until_ms = {now} + ?5
             WHERE id = ?1 AND state IN ('pending', 'sent', 'unknown')
               AND (claimed_by IS NULL OR claimed_by = ?4 OR claimed_until_ms < {now})"
        ),
        args![id, now_ms, look_again, node, CLAIM_LEASE_MS],
    )?;
    Ok(marked == 1)
}

/// How long a node's claim on a settlement row lasts: longer than any
/// request with its retries takes, short enough that another node soon
/// finishes the work of a node that died holding it.
pub const CLAIM_LEASE_MS: i64 = 120_000;

/// Records an outcome: `succeeded`, `failed` or `unknown` (to look again
/// at `next_attempt_ms`, or sooner when the hold it acts on must be acted
/// on before then).
pub(super) fn conclude(
    db: &mut dyn Db,
    id: &str,
    state: SettlementState,
    payment_intent: Option<&str>,
    error: Option<&str>,
    next_attempt_ms: Option<i64>,
    now_ms: i64,
) -> Result<(), LedgerError> {
    let act_by = db
        .query_opt("SELECT act_by_ms FROM settlements WHERE id = ?1", args![id])?
        .map(|row| row.opt_int(0))
        .transpose()?
        .flatten();
    let next_attempt_ms =
        next_attempt_ms.map(|next| settlement::look_again_at(now_ms, next, act_by));
    let before = db
        .query_opt("SELECT state FROM settlements WHERE id = ?1", args![id])?
        .map(|row| row.text(0))
        .transpose()?;
    db.execute(
        "UPDATE settlements SET state = ?2, payment_intent = COALESCE(?3, payment_intent), last_error = ?4,
             next_attempt_ms = ?5, updated_ms = ?6, claimed_by = NULL, claimed_until_ms = NULL
         WHERE id = ?1",
        args![id, state.as_str(), payment_intent, error, next_attempt_ms, now_ms],
    )?;
    if before.as_deref() != Some(state.as_str()) {
        if state == SettlementState::Succeeded {
            super::refunds::count_refunded(db, id)?;
        }
        tell_platform(db, id, state, error, now_ms)?;
    }
    Ok(())
}

/// A settlement that reached `succeeded`, `failed` or `unknown`, as an
/// event for the booking platform (in the same transaction).
pub(super) fn tell_platform(
    db: &mut dyn Db,
    id: &str,
    state: SettlementState,
    error: Option<&str>,
    now_ms: i64,
) -> Result<(), LedgerError> {
    let Some(row) = db.query_opt(
        "SELECT booking_id, call_id, operation, amount, currency, payment_intent, attempt, reason,
                stripe_object
         FROM settlements WHERE id = ?1",
        args![id],
    )?
    else {
        return Ok(());
    };
    let Some(booking) = row.opt_text(0)? else {
        return Ok(());
    };
    let operation = row.text(2)?;
    let refund = operation == Operation::Refund.as_str();
    let kind = match state {
        SettlementState::Succeeded if refund => "refund.succeeded",
        SettlementState::Failed if refund => "refund.failed",
        SettlementState::Succeeded => "settlement.succeeded",
        SettlementState::Failed => "settlement.failed",
        SettlementState::Unknown => "settlement.unknown",
        SettlementState::Pending | SettlementState::Sent => return Ok(()),
    };
    let call = row.opt_text(1)?;
    let mut data = serde_json::json!({
        "settlement": id,
        "operation": operation,
        "amount": row.int(3)?,
        "currency": row.text(4)?,
        "payment_intent": row.opt_text(5)?,
        "attempt": row.int(6)?,
        "error": error,
    });
    if refund {
        data["refund"] = serde_json::json!(id);
        data["reason"] = serde_json::json!(row.opt_text(7)?);
        data["stripe_refund"] = serde_json::json!(row.opt_text(8)?);
        data["source"] = serde_json::json!("tollbridge");
    }
    super::events::emit(db, kind, &booking, call.as_deref(), data, now_ms)
}

/// A settlement attempt as the API and the CLI show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementView {
    /// `st_...`
    pub id: String,
    /// The call.
    pub call: Option<String>,
    /// The booking.
    pub booking: Option<String>,
    /// What it does.
    pub operation: String,
    /// Its idempotency key.
    pub idempotency_key: String,
    /// Minor units.
    pub amount: i64,
    /// ISO code.
    pub currency: String,
    /// Where it stands.
    pub state: String,
    /// The PaymentIntent.
    pub payment_intent: Option<String>,
    /// Times sent.
    pub tries: i64,
    /// The last error.
    pub last_error: Option<String>,
    /// Created, Unix ms.
    pub created_ms: i64,
    /// Last changed, Unix ms.
    pub updated_ms: i64,
    /// When it is looked at next, Unix ms.
    pub next_attempt_ms: Option<i64>,
    /// Until when a hold can be captured (Stripe's word), Unix ms.
    pub capture_before_ms: Option<i64>,
    /// A refund's reason, when given.
    pub reason: Option<String>,
    /// The Stripe object a refund created (`re_...`).
    pub stripe_object: Option<String>,
}

/// Settlement attempts, oldest first, for a call and/or in a state.
pub(super) fn views(
    db: &mut dyn Db,
    call_id: Option<&str>,
    state: Option<&str>,
) -> Result<Vec<SettlementView>, LedgerError> {
    db.query(
        "SELECT id, call_id, booking_id, operation, idempotency_key, amount, currency, state, payment_intent,
                tries, last_error, created_ms, updated_ms, next_attempt_ms, capture_before_ms, reason,
                stripe_object
         FROM settlements WHERE (CAST(?1 AS TEXT) IS NULL OR call_id = ?1) AND (CAST(?2 AS TEXT) IS NULL OR state = ?2)
         ORDER BY created_ms, id",
        args![call_id, state],
    )?
    .iter()
    .map(|row| {
        Ok(SettlementView {
            id: row.text(0)?,
            call: row.opt_text(1)?,
            booking: row.opt_text(2)?,
            operation: row.text(3)?,
            idempotency_key: row.text(4)?,
            amount: row.int(5)?,
            currency: row.text(6)?,
            state: row.text(7)?,
            payment_intent: row.opt_text(8)?,
            tries: row.int(9)?,
            last_error: row.opt_text(10)?,
            created_ms: row.int(11)?,
            updated_ms: row.int(12)?,
            next_attempt_ms: row.opt_int(13)?,
            capture_before_ms: row.opt_int(14)?,
            reason: row.opt_text(15)?,
            stripe_object: row.opt_text(16)?,
        })
    })
    .collect()
}

impl Ledger {
    /// Marks a row sent, committed before its request goes out, and
    /// claims it for this node. False when another node holds the claim:
    /// the request must not be sent from here.
    pub async fn mark_sent(&self, id: String, now_ms: i64) -> Result<bool, LedgerError> {
        let node = self.node.clone();
        self.run(move |db| mark_sent(db, &id, &node, now_ms)).await
    }

    /// Records a row's outcome (see [`conclude`]).
    pub async fn conclude_settlement(
        &self,
        id: String,
        state: SettlementState,
        payment_intent: Option<String>,
        error: Option<String>,
        next_attempt_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        self.run(move |db| {
            conclude(
                db,
                &id,
                state,
                payment_intent.as_deref(),
                error.as_deref(),
                next_attempt_ms,
                now_ms,
            )
        })
        .await
    }

    /// Claims the rows to work on now, for this node: every pending row,
    /// and sent or unknown rows whose time has come (at start-up,
    /// `all_open`: every one of them, since a crash may have cut them
    /// off); none that another node's claim still covers. Oldest first.
    pub async fn claim_due_settlements(
        &self,
        now_ms: i64,
        all_open: bool,
    ) -> Result<Vec<Settlement>, LedgerError> {
        let node = self.node.clone();
        self.run(move |db| {
            let dialect = db.dialect();
            let now = dialect.now_ms();
            let sql = format!(
                "UPDATE settlements SET claimed_by = ?3, claimed_until_ms = {now} + ?4
                 WHERE id IN (
                     SELECT id FROM settlements
                     WHERE ((state = 'pending' AND COALESCE(next_attempt_ms, 0) <= ?1)
                         OR (state IN ('sent', 'unknown') AND (?2 = 1 OR COALESCE(next_attempt_ms, 0) <= ?1)))
                       AND (claimed_by IS NULL OR claimed_by = ?3 OR claimed_until_ms < {now})
                     ORDER BY created_ms, id LIMIT 100{})
                 RETURNING {COLUMNS}",
                dialect.skip_locked()
            );
            let mut rows = db
                .query(&sql, args![now_ms, all_open, &*node, CLAIM_LEASE_MS])?
                .iter()
                .map(settlement_from)
                .collect::<Result<Vec<_>, _>>()?;
            // Ids are UUIDv7: in the order the rows were made.
            rows.sort_by(|a, b| a.facts.id.cmp(&b.facts.id));
            Ok(rows)
        })
        .await
    }

    /// How many settlement rows are in each state.
    pub async fn settlement_counts(&self) -> Result<Vec<(SettlementState, u64)>, LedgerError> {
        self.run(|db| {
            db.query(
                "SELECT state, COUNT(*) FROM settlements GROUP BY state ORDER BY state",
                &[],
            )?
            .iter()
            .filter_map(|row| {
                let state = row.text(0).ok().and_then(|s| SettlementState::parse(&s))?;
                Some(row.int(1).map(|n| (state, u64::try_from(n).unwrap_or(0))))
            })
            .collect()
        })
        .await
    }

    /// Settlement attempts in a state (all when `None`), oldest first.
    pub async fn settlements(
        &self,
        state: Option<SettlementState>,
    ) -> Result<Vec<SettlementView>, LedgerError> {
        self.run(move |db| views(db, None, state.map(SettlementState::as_str)))
            .await
    }
}
