//! Call records: a call begun (its routing to a booking is `routing.rs`),
//! its status events, the callee leg, the legs' dialogs and
//! relay ports (kept for a restart), checkpoints of the running meter, and
//! its close: rated, its booking released and its settlement rows written
//! in one transaction. The record as the API shows it is
//! `call_records.rs`.

use tollbridge_billing::rating::{Tariff, rate_recorded};
use tollbridge_media::bridge::Side;
use tollbridge_media::relay::CallStats;

use super::db::{Db, Value};
use super::states::CallStatus;
use super::{Ledger, LedgerError, bookings, fees, holds};
use crate::args;

/// What a new call row starts with.
#[derive(Debug, Clone)]
pub struct NewCall {
    /// Our id (`call_...`).
    pub id: String,
    /// The caller leg's SIP Call-ID.
    pub sip_call_id: String,
    /// Twilio's CallSid, when the trunk sent one.
    pub twilio_call_sid: Option<String>,
    /// The caller ID as E.164, when it is one.
    pub caller: Option<String>,
    /// The dialled number as E.164, when it is one.
    pub called: Option<String>,
}

/// A call's price as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    /// Talk seconds, rounded up to whole seconds.
    pub talk_seconds: u64,
    /// Seconds billed (increment and minimum applied).
    pub billed_seconds: u64,
    /// The amount in minor units: talk and recording together (what is
    /// captured).
    pub amount: i64,
    /// The part of `amount` that pays for the call's recording.
    pub recording_amount: i64,
    /// ISO currency code, lower case.
    pub currency: &'static str,
}

/// How a call ended, as the record keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEnd {
    /// The final status.
    pub status: CallStatus,
    /// A stable reason word (`caller-hangup`, `no-answer`, ...).
    pub reason: String,
    /// Talk time in ms (the callee's answer to the end, or less).
    pub talk_ms: i64,
    /// Whether the parties were ever connected.
    pub connected: bool,
}

/// Locks the rows of the calls matching `condition` until the transaction
/// ends, before an event is numbered for them: the next `seq` is read as
/// `MAX(seq) + 1`, and two nodes (or two pool threads) adding an event to
/// one call at once would otherwise both read the same maximum.
pub(super) fn lock_call_events(
    db: &mut dyn Db,
    condition: &str,
    args: &[Value],
) -> Result<(), LedgerError> {
    let sql = format!(
        "SELECT id FROM calls WHERE {condition}{}",
        db.dialect().for_update()
    );
    db.query(&sql, args)?;
    Ok(())
}

/// Appends an event to a call.
pub(super) fn add_event(
    db: &mut dyn Db,
    call_id: &str,
    status: CallStatus,
    sip_code: Option<u16>,
    detail: Option<&str>,
    now_ms: i64,
) -> Result<(), LedgerError> {
    lock_call_events(db, "id = ?1", args![call_id])?;
    db.execute(
        "INSERT INTO call_events (call_id, seq, at_ms, status, sip_code, sip_reason, detail)
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM call_events WHERE call_id = ?1), ?2, ?3, ?4, ?5, ?6)",
        args![
            call_id,
            now_ms,
            status.as_str(),
            sip_code,
            sip_code.map(reason_phrase),
            detail
        ],
    )?;
    Ok(())
}

/// The talk tariff of the booking a call belongs to, and what its
/// recording costs a minute on top (zero when not recorded).
fn tariff_of_call(db: &mut dyn Db, call_id: &str) -> Result<Option<(Tariff, u64)>, LedgerError> {
    let booking = db
        .query_opt("SELECT booking_id FROM calls WHERE id = ?1", args![call_id])?
        .map(|row| row.opt_text(0))
        .transpose()?
        .flatten();
    let Some(booking) = booking else {
        return Ok(None);
    };
    Ok(bookings::terms(db, &booking)?.map(|terms| {
        let recording = terms.recording_per_minute;
        let talk = Tariff {
            price_per_minute: terms.tariff.price_per_minute - recording,
            ..terms.tariff
        };
        (talk, recording)
    }))
}

/// Rates `talk_ms` of talk under the call's tariff, and its recording for
/// as long as it ran (a call that never connected costs nothing, not even
/// the minimum), and stores the result.
fn price_call(
    db: &mut dyn Db,
    call_id: &str,
    talk_ms: i64,
    connected: bool,
) -> Result<Option<Priced>, LedgerError> {
    let Some((tariff, recording_per_minute)) = tariff_of_call(db, call_id)? else {
        return Ok(None);
    };
    let talk_seconds = u64::try_from(talk_ms).unwrap_or(0).div_ceil(1000);
    let recorded_ms = super::recordings::recorded_ms(db, call_id, talk_ms)?;
    let recorded_seconds = u64::try_from(recorded_ms).unwrap_or(0).div_ceil(1000);
    let (billed_seconds, talk_amount, recording_amount) = if connected {
        match rate_recorded(
            &tariff,
            recording_per_minute,
            talk_seconds,
            recorded_seconds,
        ) {
            Ok(rated) => (
                rated.billed_seconds,
                rated.talk.minor,
                rated.recording.minor,
            ),
            Err(e) => {
                tracing::error!(call = call_id, error = %e, "cannot rate the call; left unrated");
                return Ok(None);
            }
        }
    } else {
        (0, 0, 0)
    };
    let amount = talk_amount + recording_amount;
    let currency = tariff.currency.code();
    let recording_amount_stored = (recording_per_minute > 0).then_some(recording_amount);
    db.execute(
        "UPDATE calls SET billed_seconds = ?2, amount = ?3, currency = ?4, recording_amount = ?5
         WHERE id = ?1",
        args![
            call_id,
            billed_seconds,
            amount,
            currency,
            recording_amount_stored
        ],
    )?;
    Ok(Some(Priced {
        talk_seconds,
        billed_seconds,
        amount,
        recording_amount,
        currency,
    }))
}

/// A booking whose call ended: the seconds the call was billed count
/// against its budget; it is completed when the budget is used up, active
/// again otherwise (the caller may call back within the window for what
/// remains; the window's end is `bookings::end_windows`). True when it is
/// now completed.
fn release_booking(
    db: &mut dyn Db,
    call_id: &str,
    billed_seconds: u64,
    now_ms: i64,
) -> Result<bool, LedgerError> {
    let changed = db.execute(
        "UPDATE bookings SET used_seconds = used_seconds + ?2,
             state = CASE WHEN used_seconds + ?2 >= cap_seconds THEN 'completed' ELSE 'active' END,
             updated_ms = ?3
         WHERE state = 'in-call' AND id = (SELECT booking_id FROM calls WHERE id = ?1)",
        args![call_id, billed_seconds, now_ms],
    )?;
    if changed != 1 {
        return Ok(false);
    }
    let state = db.query_one(
        "SELECT state FROM bookings WHERE id = (SELECT booking_id FROM calls WHERE id = ?1)",
        args![call_id],
    )?;
    Ok(state.text(0)? == "completed")
}

/// What closing a call record did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Closing {
    /// It was closed already (by this node before, or by another that
    /// took it over): nothing was written.
    AlreadyClosed,
    /// Closed now, with its price when it belongs to a booking.
    Closed(Option<Priced>),
}

/// Closes a call's record (unless already closed), rates it, writes the
/// hold's capture or release and settles the booking's fee when the call
/// took place, and releases the booking.
pub(super) fn close(
    db: &mut dyn Db,
    call_id: &str,
    end: &CallEnd,
    ended_ms: i64,
    settle_at_ms: i64,
) -> Result<Closing, LedgerError> {
    let closed = db.execute(
        "UPDATE calls SET status = ?2, ended_ms = ?3, talk_ms = ?4, end_reason = ?5
         WHERE id = ?1 AND ended_ms IS NULL",
        args![
            call_id,
            end.status.as_str(),
            ended_ms,
            end.talk_ms,
            end.reason.as_str()
        ],
    )?;
    if closed != 1 {
        return Ok(Closing::AlreadyClosed);
    }
    let priced = {
        let priced = price_call(db, call_id, end.talk_ms, end.connected)?;
        // The hold's capture or release, in the same transaction.
        holds::after_call(
            db,
            call_id,
            priced.as_ref().map_or(0, |p| p.amount),
            settle_at_ms,
        )?;
        if end.connected {
            let booking = db
                .query_opt("SELECT booking_id FROM calls WHERE id = ?1", args![call_id])?
                .map(|row| row.opt_text(0))
                .transpose()?
                .flatten();
            if let Some(booking) = booking {
                // The call took place: the booking's cancellation fee is released.
                fees::decide_fee(
                    db,
                    &booking,
                    fees::FeeMove::Release,
                    "the call took place",
                    settle_at_ms,
                )?;
            }
        }
        priced
    };
    let billed_seconds = priced.as_ref().map_or(0, |p| p.billed_seconds);
    let completed = release_booking(db, call_id, billed_seconds, settle_at_ms)?;
    if let Some(booking) = super::events::booking_of_call(db, call_id)? {
        let data = serde_json::json!({
            "status": end.status.as_str(),
            "reason": end.reason,
            "connected": end.connected,
            "talk_ms": end.talk_ms,
            "billed_seconds": priced.as_ref().map_or(0, |p| p.billed_seconds),
            "amount": priced.as_ref().map_or(0, |p| p.amount),
            "recording_amount": priced.as_ref().map_or(0, |p| p.recording_amount),
            "currency": priced.as_ref().map(|p| p.currency),
        });
        super::events::emit(db, "call.ended", &booking, Some(call_id), data, ended_ms)?;
        if completed {
            let data = serde_json::json!({
                "state": "completed",
                "reason": "budget-used",
                "call": call_id,
            });
            super::events::emit(
                db,
                "booking.completed",
                &booking,
                Some(call_id),
                data,
                ended_ms,
            )?;
        }
    }
    Ok(Closing::Closed(priced))
}

impl Ledger {
    /// Records a new call (status `queued`).
    pub async fn begin_call(&self, call: NewCall, now_ms: i64) -> Result<(), LedgerError> {
        let node = self.node.clone();
        self.run(move |db| {
            db.execute(
                "INSERT INTO calls (id, inbound_call_id, twilio_call_sid, caller, called, status, created_ms, node)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7)",
                args![
                    call.id,
                    call.sip_call_id,
                    call.twilio_call_sid,
                    call.caller,
                    call.called,
                    now_ms,
                    &*node
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Appends a status event and moves the call's status (and its ringing
    /// or answer time) with it.
    pub async fn record_event(
        &self,
        call_id: String,
        status: CallStatus,
        sip_code: Option<u16>,
        detail: Option<String>,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        self.record_event_noting(call_id, status, sip_code, detail, false, now_ms)
            .await
    }

    /// [`Ledger::record_event`]; with `warning`, the event is the
    /// warning prompt both parties heard. The booking platform is told of
    /// the first ringing, the answer and the warning (`call.ringing`,
    /// `call.answered`, `call.warning`) in the same transaction.
    pub async fn record_event_noting(
        &self,
        call_id: String,
        status: CallStatus,
        sip_code: Option<u16>,
        detail: Option<String>,
        warning: bool,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        self.run(move |db| {
            let before = db.query_opt(
                "SELECT booking_id, ringing_ms, answered_ms FROM calls WHERE id = ?1 AND ended_ms IS NULL",
                args![&call_id],
            )?;
            add_event(db, &call_id, status, sip_code, detail.as_deref(), now_ms)?;
            if let Some(before) = before
                && let Some(booking) = before.opt_text(0)?
            {
                let kind = match status {
                    CallStatus::Ringing if before.opt_int(1)?.is_none() => Some("call.ringing"),
                    CallStatus::InProgress if before.opt_int(2)?.is_none() => Some("call.answered"),
                    CallStatus::InProgress if warning => Some("call.warning"),
                    _ => None,
                };
                if let Some(kind) = kind {
                    let data = serde_json::json!({
                        "status": status.as_str(),
                        "sip_code": sip_code,
                        "detail": detail,
                    });
                    super::events::emit(db, kind, &booking, Some(&call_id), data, now_ms)?;
                }
            }
            db.execute(
                "UPDATE calls SET status = ?2,
                     ringing_ms = CASE WHEN ?2 = 'ringing' THEN COALESCE(ringing_ms, ?3) ELSE ringing_ms END,
                     answered_ms = CASE WHEN ?2 = 'in-progress' THEN COALESCE(answered_ms, ?3) ELSE answered_ms END
                 WHERE id = ?1 AND ended_ms IS NULL",
                args![call_id, status.as_str(), now_ms],
            )?;
            Ok(())
        })
        .await
    }

    /// Records what became of extension block `block`'s hold: the call's
    /// new cap in seconds (the record and a restart's recovery then use
    /// it), or why the paid time stays. The booking platform is told
    /// (`call.extended`, `call.extension_failed`) in the same transaction.
    pub async fn record_extension(
        &self,
        call_id: String,
        block: u32,
        cap_seconds: Result<u64, String>,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        self.run(move |db| {
            let Some(call) = db.query_opt(
                "SELECT booking_id FROM calls WHERE id = ?1",
                args![&call_id],
            )?
            else {
                return Ok(());
            };
            let (kind, detail, data) = match &cap_seconds {
                Ok(cap) => {
                    db.execute(
                        "UPDATE calls SET cap_seconds = ?2 WHERE id = ?1 AND ended_ms IS NULL",
                        args![&call_id, i64::try_from(*cap).unwrap_or(i64::MAX)],
                    )?;
                    (
                        "call.extended",
                        format!("paid time extended to {cap} s (block {block})"),
                        serde_json::json!({"block": block, "cap_seconds": cap}),
                    )
                }
                Err(why) => (
                    "call.extension_failed",
                    format!("paid time not extended (block {block}): {why}"),
                    serde_json::json!({"block": block, "error": why}),
                ),
            };
            add_event(
                db,
                &call_id,
                CallStatus::InProgress,
                None,
                Some(&detail),
                now_ms,
            )?;
            if let Some(booking) = call.opt_text(0)? {
                super::events::emit(db, kind, &booking, Some(&call_id), data, now_ms)?;
            }
            Ok(())
        })
        .await
    }

    /// Stores the callee leg's SIP Call-ID.
    pub async fn record_callee_call_id(
        &self,
        call_id: String,
        sip_call_id: String,
    ) -> Result<(), LedgerError> {
        self.run(move |db| {
            db.execute(
                "UPDATE calls SET outbound_call_id = ?2 WHERE id = ?1",
                args![call_id, sip_call_id],
            )?;
            Ok(())
        })
        .await
    }

    /// Stores what it takes to end a leg's dialog after a restart (JSON of
    /// `tollbridge_sip::edge::DialogRecord`), once the leg is established.
    pub async fn record_dialog(
        &self,
        call_id: String,
        side: Side,
        dialog: String,
    ) -> Result<(), LedgerError> {
        self.run(move |db| {
            let sql = match side {
                Side::Caller => "UPDATE calls SET caller_dialog = ?2 WHERE id = ?1",
                Side::Callee => "UPDATE calls SET callee_dialog = ?2 WHERE id = ?1",
            };
            db.execute(sql, args![call_id, dialog])?;
            Ok(())
        })
        .await
    }

    /// Stores the relay's RTP ports of both legs, before our SDP first
    /// names them: a restart after a crash keeps them from new calls.
    pub async fn record_rtp_ports(
        &self,
        call_id: String,
        ports: [u16; 2],
    ) -> Result<(), LedgerError> {
        self.run(move |db| {
            db.execute(
                "UPDATE calls SET caller_rtp_port = ?2, callee_rtp_port = ?3 WHERE id = ?1",
                args![call_id, ports[0], ports[1]],
            )?;
            Ok(())
        })
        .await
    }

    /// Closes the call record, rates it, writes its settlement rows and
    /// releases its booking, in one transaction. Returns the price when the
    /// call belongs to a booking; `None` too when the record was closed
    /// already (another node took the call over while this one was cut
    /// off from the ledger): it is then neither rated nor settled again.
    pub async fn close_call(
        &self,
        call_id: String,
        end: CallEnd,
        ended_ms: i64,
    ) -> Result<Option<Priced>, LedgerError> {
        self.run(move |db| {
            Ok(match close(db, &call_id, &end, ended_ms, ended_ms)? {
                Closing::Closed(priced) => priced,
                Closing::AlreadyClosed => None,
            })
        })
        .await
    }

    /// Saves that these connected calls were still talking at `now_ms`,
    /// all in one transaction: after a crash each is billed up to its last
    /// checkpoint.
    pub async fn checkpoint(&self, call_ids: Vec<String>, now_ms: i64) -> Result<(), LedgerError> {
        self.run(move |db| {
            // A statement per CHECKPOINT_BATCH calls, always of that shape
            // (the last batch repeats its last id), so one prepared
            // statement serves every round and a round trip serves many.
            let sql = checkpoint_statement();
            for batch in call_ids.chunks(CHECKPOINT_BATCH) {
                let Some(last) = batch.last() else {
                    continue;
                };
                let mut values: Vec<Value> = batch
                    .iter()
                    .chain(std::iter::repeat(last))
                    .take(CHECKPOINT_BATCH)
                    .map(|id| Value::from(id.as_str()))
                    .collect();
                values.push(Value::from(now_ms));
                db.execute(&sql, &values)?;
            }
            Ok(())
        })
        .await
    }

    /// Stores both legs' media counters.
    pub async fn record_media(&self, call_id: String, stats: CallStats) -> Result<(), LedgerError> {
        self.run(move |db| {
            for (side, leg) in [("caller", &stats.caller), ("callee", &stats.callee)] {
                db.execute(
                    "INSERT INTO call_legs (call_id, side, packets_received, bytes_received, packets_sent,
                         bytes_sent, packets_lost, jitter_ms, dropped_foreign, dropped_malformed, rtcp_received,
                         srtp_refused)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                     ON CONFLICT (call_id, side) DO UPDATE SET
                         packets_received = excluded.packets_received, bytes_received = excluded.bytes_received,
                         packets_sent = excluded.packets_sent, bytes_sent = excluded.bytes_sent,
                         packets_lost = excluded.packets_lost, jitter_ms = excluded.jitter_ms,
                         dropped_foreign = excluded.dropped_foreign,
                         dropped_malformed = excluded.dropped_malformed, rtcp_received = excluded.rtcp_received,
                         srtp_refused = excluded.srtp_refused",
                    args![
                        call_id.as_str(),
                        side,
                        leg.packets_received,
                        leg.bytes_received,
                        leg.packets_sent,
                        leg.bytes_sent,
                        leg.lost,
                        leg.jitter_ms,
                        leg.dropped_foreign,
                        leg.dropped_malformed,
                        leg.rtcp_received,
                        leg.srtp_refused
                    ],
                )?;
            }
            Ok(())
        })
        .await
    }

    /// Closes every call a crash left open (reason `recovered`, ended at
    /// its last checkpoint: under-billed by at most one interval, never
    /// over-billed), settles it, releases its booking, and marks its
    /// parties as owed a BYE. Returns how many.
    pub async fn recover_open_calls(&self, now_ms: i64) -> Result<usize, LedgerError> {
        let node = self.node.clone();
        self.run(move |db| {
            // Rows written before nodes were recorded are this node's.
            db.execute("UPDATE calls SET node = ?1 WHERE node = ''", args![&*node])?;
            Ok(
                super::recovery::recover_open(
                    db,
                    &super::recovery::Recovering::Own(&node),
                    now_ms,
                )?
                .len(),
            )
        })
        .await
    }
}

/// Calls checkpointed per statement.
const CHECKPOINT_BATCH: usize = 100;

/// `UPDATE ... WHERE id IN (?1, ..., ?100)`, the time in `?101`.
fn checkpoint_statement() -> String {
    let ids: Vec<String> = (1..=CHECKPOINT_BATCH).map(|n| format!("?{n}")).collect();
    format!(
        "UPDATE calls SET checkpoint_ms = ?{} WHERE ended_ms IS NULL AND id IN ({})",
        CHECKPOINT_BATCH + 1,
        ids.join(", ")
    )
}

/// The reason phrase for a status code we record.
fn reason_phrase(code: u16) -> &'static str {
    match code {
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        404 => "Not Found",
        408 => "Request Timeout",
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        600 => "Busy Everywhere",
        603 => "Decline",
        _ => "",
    }
}
