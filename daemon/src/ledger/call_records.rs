//! The call record as the API and the export show it: the call, its two
//! legs with their media counters, its ordered events, the tariff it was
//! rated with and its settlements; read one by id or a page by filter.

use super::db::{Db, Row};
use super::states::CallStatus;
use super::{Ledger, LedgerError, SettlementView, settlements};
use crate::args;

/// One leg of a call record.
#[derive(Debug, Clone, PartialEq)]
pub struct CallLeg {
    /// The leg's SIP Call-ID.
    pub sip_call_id: Option<String>,
    /// The relay's RTP port on this leg.
    pub relay_port: Option<i64>,
    /// The relay's counters, once the call has ended.
    pub media: Option<LegMedia>,
}

/// A leg's media counters.
#[derive(Debug, Clone, PartialEq)]
pub struct LegMedia {
    /// RTP packets received from the party.
    pub packets_received: i64,
    /// Their bytes.
    pub bytes_received: i64,
    /// RTP packets sent to the party.
    pub packets_sent: i64,
    /// Their bytes.
    pub bytes_sent: i64,
    /// Lost on the way from the party.
    pub packets_lost: i64,
    /// Interarrival jitter, ms.
    pub jitter_ms: f64,
    /// Dropped: from a foreign source.
    pub dropped_foreign: i64,
    /// Dropped: not RTP.
    pub dropped_malformed: i64,
    /// RTCP packets received.
    pub rtcp_received: i64,
    /// Dropped: SRTP or SRTCP that failed authentication or replayed.
    pub srtp_refused: i64,
}

/// One status change of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEvent {
    /// Its order on the call, from 1.
    pub seq: i64,
    /// When, Unix ms.
    pub at_ms: i64,
    /// The status.
    pub status: CallStatus,
    /// The SIP code behind it.
    pub sip_code: Option<i64>,
    /// Its reason phrase.
    pub sip_reason: Option<String>,
    /// What happened.
    pub detail: Option<String>,
}

/// The tariff a call was rated with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rating {
    /// ISO code, lower case.
    pub currency: String,
    /// Minor units a minute.
    pub price_per_minute: i64,
    /// Billing increment, seconds.
    pub increment_seconds: i64,
    /// Billed at least, seconds.
    pub minimum_seconds: i64,
    /// The call's cap, seconds: what remained of its booking's budget
    /// when it was routed, moved by each extension block it held.
    pub cap_seconds: i64,
    /// Minor units a minute of recording, when the booking records calls.
    pub recording_price_per_minute: Option<i64>,
}

/// A call record with everything the API shows.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// `call_...`
    pub id: String,
    /// The booking it was routed to.
    pub booking: Option<String>,
    /// The caller's leg.
    pub caller_leg: CallLeg,
    /// The callee's leg.
    pub callee_leg: CallLeg,
    /// Twilio's CallSid.
    pub twilio_call_sid: Option<String>,
    /// The caller ID, E.164.
    pub caller: Option<String>,
    /// The dialled number, E.164.
    pub called: Option<String>,
    /// Where it stands.
    pub status: CallStatus,
    /// When each thing happened, Unix ms.
    pub created_ms: i64,
    /// The callee's first 180/183.
    pub ringing_ms: Option<i64>,
    /// The callee's answer.
    pub answered_ms: Option<i64>,
    /// The end.
    pub ended_ms: Option<i64>,
    /// Talk, ms.
    pub talk_ms: Option<i64>,
    /// Billed seconds.
    pub billed_seconds: Option<i64>,
    /// Amount, minor units.
    pub amount: Option<i64>,
    /// Its currency.
    pub currency: Option<String>,
    /// Why it ended.
    pub end_reason: Option<String>,
    /// The tariff it was rated with.
    pub rating: Option<Rating>,
    /// Its events, in order.
    pub events: Vec<CallEvent>,
    /// The card hold's PaymentIntent.
    pub payment_intent: Option<String>,
    /// Every settlement attempt for it.
    pub settlements: Vec<SettlementView>,
    /// For a call that found no booking: the bookings it could have been.
    pub candidates: Option<Vec<String>>,
    /// The node that carried the call (`node.name`).
    pub node: String,
    /// The node that ended it in that node's place, when it fell silent.
    pub taken_over_by: Option<String>,
    /// What was actually charged, minor units: the captures that
    /// succeeded, one per hold the call placed (the rated amount, or
    /// Stripe's minimum under `charge-minimum`), 0 when its hold was released (a call cheaper
    /// than the minimum under `cancel`, or one that never connected);
    /// `None` while it settles, or without Stripe.
    pub charged: Option<i64>,
    /// What its charge has refunded, minor units (by us or in Stripe).
    pub refunded_amount: i64,
    /// Its charge's dispute, when the customer opened one.
    pub dispute: Option<Dispute>,
    /// The part of `amount` that paid for its recording, when its booking
    /// prices recording.
    pub recording_amount: Option<i64>,
    /// Its recording, when its booking records calls.
    pub recording: Option<super::RecordingRow>,
}

/// A dispute on a call's charge, as Stripe last described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispute {
    /// `du_...`
    pub id: Option<String>,
    /// Stripe's state: `warning_needs_response`, `needs_response`,
    /// `under_review`, `won`, `lost`, ...
    pub status: String,
    /// Minor units disputed.
    pub amount: Option<i64>,
}

fn leg_media(row: &Row) -> Result<LegMedia, LedgerError> {
    Ok(LegMedia {
        packets_received: row.int(1)?,
        bytes_received: row.int(2)?,
        packets_sent: row.int(3)?,
        bytes_sent: row.int(4)?,
        packets_lost: row.int(5)?,
        jitter_ms: row.real(6)?,
        dropped_foreign: row.int(7)?,
        dropped_malformed: row.int(8)?,
        rtcp_received: row.int(9)?,
        srtp_refused: row.int(10)?,
    })
}

/// One call record, or `None`.
fn record(db: &mut dyn Db, id: &str) -> Result<Option<CallRecord>, LedgerError> {
    let Some(row) = db.query_opt(
        "SELECT id, booking_id, inbound_call_id, outbound_call_id, twilio_call_sid, caller, called, status,
                created_ms, ringing_ms, answered_ms, ended_ms, talk_ms, billed_seconds, amount, currency, end_reason,
                caller_rtp_port, callee_rtp_port, payment_intent, candidates, node, taken_over_by,
                refunded_amount, dispute_id, dispute_status, dispute_amount, recording_amount
         FROM calls WHERE id = ?1",
        args![id],
    )?
    else {
        return Ok(None);
    };
    let status_word = row.text(7)?;
    let mut call = CallRecord {
        id: row.text(0)?,
        booking: row.opt_text(1)?,
        caller_leg: CallLeg {
            sip_call_id: row.opt_text(2)?,
            relay_port: row.opt_int(17)?,
            media: None,
        },
        callee_leg: CallLeg {
            sip_call_id: row.opt_text(3)?,
            relay_port: row.opt_int(18)?,
            media: None,
        },
        twilio_call_sid: row.opt_text(4)?,
        caller: row.opt_text(5)?,
        called: row.opt_text(6)?,
        status: CallStatus::parse(&status_word)
            .ok_or_else(|| LedgerError::Decode(format!("call status {status_word:?}")))?,
        created_ms: row.int(8)?,
        ringing_ms: row.opt_int(9)?,
        answered_ms: row.opt_int(10)?,
        ended_ms: row.opt_int(11)?,
        talk_ms: row.opt_int(12)?,
        billed_seconds: row.opt_int(13)?,
        amount: row.opt_int(14)?,
        currency: row.opt_text(15)?,
        end_reason: row.opt_text(16)?,
        rating: None,
        events: Vec::new(),
        payment_intent: row.opt_text(19)?,
        settlements: Vec::new(),
        candidates: row
            .opt_text(20)?
            .and_then(|text| serde_json::from_str(&text).ok()),
        node: row.text(21)?,
        taken_over_by: row.opt_text(22)?,
        charged: None,
        refunded_amount: row.int(23)?,
        dispute: row
            .opt_text(25)?
            .map(|status| -> Result<Dispute, LedgerError> {
                Ok(Dispute {
                    id: row.opt_text(24)?,
                    status,
                    amount: row.opt_int(26)?,
                })
            })
            .transpose()?,
        recording_amount: row.opt_int(27)?,
        recording: super::recordings::get(db, id)?,
    };
    // The rating inputs: the booking's tariff, the call's cap.
    call.rating = db
        .query_opt(
            "SELECT b.currency, b.price_per_minute, b.increment_seconds, b.minimum_seconds,
                    COALESCE(c.cap_seconds, b.cap_seconds),
                    CASE WHEN b.recording_enabled = 1 THEN b.recording_price_per_minute END
             FROM calls c JOIN bookings b ON b.id = c.booking_id WHERE c.id = ?1",
            args![id],
        )?
        .map(|row| -> Result<Rating, LedgerError> {
            Ok(Rating {
                currency: row.text(0)?,
                price_per_minute: row.int(1)?,
                increment_seconds: row.int(2)?,
                minimum_seconds: row.int(3)?,
                cap_seconds: row.int(4)?,
                recording_price_per_minute: row.opt_int(5)?,
            })
        })
        .transpose()?;
    for row in db.query(
        "SELECT side, packets_received, bytes_received, packets_sent, bytes_sent, packets_lost, jitter_ms,
                dropped_foreign, dropped_malformed, rtcp_received, srtp_refused
         FROM call_legs WHERE call_id = ?1",
        args![id],
    )? {
        let media = Some(leg_media(&row)?);
        match row.text(0)?.as_str() {
            "caller" => call.caller_leg.media = media,
            _ => call.callee_leg.media = media,
        }
    }
    call.events = db
        .query(
            "SELECT seq, at_ms, status, sip_code, sip_reason, detail FROM call_events
             WHERE call_id = ?1 ORDER BY seq",
            args![id],
        )?
        .iter()
        .map(|row| {
            let status = row.text(2)?;
            Ok(CallEvent {
                seq: row.int(0)?,
                at_ms: row.int(1)?,
                status: CallStatus::parse(&status)
                    .ok_or_else(|| LedgerError::Decode(format!("event status {status:?}")))?,
                sip_code: row.opt_int(3)?,
                sip_reason: row.opt_text(4)?,
                detail: row.opt_text(5)?,
            })
        })
        .collect::<Result<_, LedgerError>>()?;
    call.settlements = settlements::views(db, Some(id), None)?;
    // Every capture of the call's holds (one per extension block).
    call.charged = call
        .settlements
        .iter()
        .filter(|s| s.state == "succeeded" && (s.operation == "capture" || s.operation == "cancel"))
        .map(|s| {
            if s.operation == "capture" {
                s.amount
            } else {
                0
            }
        })
        .reduce(|a, b| a + b);
    Ok(Some(call))
}

impl Ledger {
    /// One call record.
    pub async fn call(&self, id: String) -> Result<Option<CallRecord>, LedgerError> {
        self.run(move |db| record(db, &id)).await
    }

    /// The calls `filter` selects (on every node), in start order (then
    /// id), after its cursor, at most `limit`.
    pub async fn calls(
        &self,
        filter: CallFilter,
        limit: i64,
    ) -> Result<Vec<CallRecord>, LedgerError> {
        self.run(move |db| {
            let (after_ms, after_id) = filter.after.clone().unwrap_or((i64::MIN, String::new()));
            let ids: Vec<String> = db
                .query(
                    "SELECT id FROM calls
                     WHERE (CAST(?1 AS TEXT) IS NULL OR booking_id = ?1) AND (CAST(?2 AS TEXT) IS NULL OR called = ?2)
                       AND (CAST(?3 AS TEXT) IS NULL OR caller = ?3) AND (CAST(?4 AS TEXT) IS NULL OR status = ?4)
                       AND (?5 = 0 OR ended_ms IS NULL)
                       AND created_ms >= ?6 AND created_ms < ?7
                       AND (created_ms > ?8 OR (created_ms = ?8 AND id > ?9))
                     ORDER BY created_ms, id LIMIT ?10",
                    args![
                        filter.booking,
                        filter.called,
                        filter.caller,
                        filter.status.map(CallStatus::as_str),
                        i64::from(filter.open_only),
                        filter.from_ms.unwrap_or(i64::MIN),
                        filter.to_ms.unwrap_or(i64::MAX),
                        after_ms,
                        after_id,
                        limit
                    ],
                )?
                .iter()
                .map(|row| row.text(0))
                .collect::<Result<_, _>>()?;
            let mut calls = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(call) = record(db, &id)? {
                    calls.push(call);
                }
            }
            Ok(calls)
        })
        .await
    }
}

/// Which calls a list shows; every field narrows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallFilter {
    /// Calls of this booking.
    pub booking: Option<String>,
    /// Calls to this number.
    pub called: Option<String>,
    /// Calls from this caller ID.
    pub caller: Option<String>,
    /// Calls in this status.
    pub status: Option<CallStatus>,
    /// Only calls not yet ended.
    pub open_only: bool,
    /// Calls that started at or after this (Unix ms).
    pub from_ms: Option<i64>,
    /// Calls that started before this (Unix ms).
    pub to_ms: Option<i64>,
    /// Calls after this one in start order: its (start, id), the cursor.
    pub after: Option<(i64, String)>,
}
