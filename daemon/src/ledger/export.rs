//! The accounting export: one row per call, read a page at a time in a
//! stable order (by start time, then id) so a caller can stream any
//! number of rows in bounded memory.

use super::db::{Db, Row};
use super::{Ledger, LedgerError};
use crate::args;

/// One call as the accounting export shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRow {
    /// `call_...`
    pub call: String,
    /// The booking, when the call found one.
    pub booking: Option<String>,
    /// Caller ID, E.164.
    pub caller: Option<String>,
    /// The number dialled, E.164.
    pub called: Option<String>,
    /// Final status (Twilio's vocabulary).
    pub status: String,
    /// Why it ended.
    pub end_reason: Option<String>,
    /// When it arrived, Unix ms.
    pub created_ms: i64,
    /// When the expert answered.
    pub answered_ms: Option<i64>,
    /// When it ended.
    pub ended_ms: Option<i64>,
    /// Talk time in ms.
    pub talk_ms: Option<i64>,
    /// Seconds billed.
    pub billed_seconds: Option<i64>,
    /// The rated amount, minor units.
    pub amount: Option<i64>,
    /// ISO currency, lower case.
    pub currency: Option<String>,
    /// The tariff: price per minute, minor units.
    pub price_per_minute: Option<i64>,
    /// The tariff's billing increment.
    pub increment_seconds: Option<i64>,
    /// The tariff's minimum.
    pub minimum_seconds: Option<i64>,
    /// The call's card hold.
    pub payment_intent: Option<String>,
    /// Captured at Stripe (succeeded captures), minor units.
    pub captured: i64,
    /// Refunded of its charge, minor units (by us or in Stripe).
    pub refunded: i64,
    /// The state of the call's capture or release row.
    pub settlement_state: Option<String>,
    /// Its charge's dispute state (Stripe's word), when disputed.
    pub dispute_status: Option<String>,
    /// The node that carried it.
    pub node: String,
    /// The booking's recording price a minute, when it records calls.
    pub recording_price_per_minute: Option<i64>,
    /// The part of `amount` that paid for the recording.
    pub recording_amount: Option<i64>,
}

fn export_row(row: &Row) -> Result<ExportRow, LedgerError> {
    Ok(ExportRow {
        call: row.text(0)?,
        booking: row.opt_text(1)?,
        caller: row.opt_text(2)?,
        called: row.opt_text(3)?,
        status: row.text(4)?,
        end_reason: row.opt_text(5)?,
        created_ms: row.int(6)?,
        answered_ms: row.opt_int(7)?,
        ended_ms: row.opt_int(8)?,
        talk_ms: row.opt_int(9)?,
        billed_seconds: row.opt_int(10)?,
        amount: row.opt_int(11)?,
        currency: row.opt_text(12)?,
        price_per_minute: row.opt_int(13)?,
        increment_seconds: row.opt_int(14)?,
        minimum_seconds: row.opt_int(15)?,
        payment_intent: row.opt_text(16)?,
        captured: row.int(17)?,
        settlement_state: row.opt_text(18)?,
        node: row.text(19)?,
        refunded: row.int(20)?,
        dispute_status: row.opt_text(21)?,
        recording_price_per_minute: row.opt_int(22)?,
        recording_amount: row.opt_int(23)?,
    })
}

/// Where a page ends: the next page starts after this call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportCursor {
    /// Its start time.
    pub created_ms: i64,
    /// Its id.
    pub call: String,
}

fn page(
    db: &mut dyn Db,
    from_ms: i64,
    to_ms: i64,
    after: Option<&ExportCursor>,
    limit: i64,
) -> Result<Vec<ExportRow>, LedgerError> {
    let (after_ms, after_id) = match after {
        Some(cursor) => (cursor.created_ms, cursor.call.clone()),
        None => (i64::MIN, String::new()),
    };
    db.query(
        "SELECT c.id, c.booking_id, c.caller, c.called, c.status, c.end_reason, c.created_ms,
                c.answered_ms, c.ended_ms, c.talk_ms, c.billed_seconds, c.amount, c.currency,
                b.price_per_minute, b.increment_seconds, b.minimum_seconds, c.payment_intent,
                (SELECT CAST(COALESCE(SUM(s.amount), 0) AS BIGINT) FROM settlements s
                 WHERE s.call_id = c.id AND s.operation = 'capture' AND s.state = 'succeeded'),
                (SELECT s.state FROM settlements s
                 WHERE s.call_id = c.id AND s.operation IN ('capture', 'cancel')
                 ORDER BY s.created_ms DESC, s.id DESC LIMIT 1),
                c.node, c.refunded_amount, c.dispute_status,
                CASE WHEN b.recording_enabled = 1 THEN b.recording_price_per_minute END,
                c.recording_amount
         FROM calls c LEFT JOIN bookings b ON b.id = c.booking_id
         WHERE c.created_ms >= ?1 AND c.created_ms < ?2
           AND (c.created_ms > ?3 OR (c.created_ms = ?3 AND c.id > ?4))
         ORDER BY c.created_ms, c.id LIMIT ?5",
        args![from_ms, to_ms, after_ms, after_id, limit],
    )?
    .iter()
    .map(export_row)
    .collect()
}

impl Ledger {
    /// Up to `limit` calls that started in `from_ms..to_ms`, after
    /// `after`, in start order.
    pub async fn export_page(
        &self,
        from_ms: i64,
        to_ms: i64,
        after: Option<ExportCursor>,
        limit: i64,
    ) -> Result<Vec<ExportRow>, LedgerError> {
        self.run(move |db| page(db, from_ms, to_ms, after.as_ref(), limit))
            .await
    }
}
