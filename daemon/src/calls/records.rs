//! Call records in the database: routing lookups that claim a booking in
//! the same transaction, status events, the end of a call with its
//! booking released, per-leg media statistics, start-up recovery, and the
//! API's JSON view. Synchronous: these run on the database owner thread.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};
use tollbridge_billing::rating::Tariff;
use tollbridge_media::relay::CallStats;
use tollbridge_sip::reject::RejectReason;

use super::machine::{End, Event, Status};
use super::route::{Candidate, Route};
use crate::bookings::model::rfc3339;
use crate::store::StoreError;

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

/// Inserts the call row (status `queued`).
pub fn insert_call(conn: &Connection, call: &NewCall, now_ms: i64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO calls (id, inbound_call_id, twilio_call_sid, caller, called, status, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6)",
        params![call.id, call.sip_call_id, call.twilio_call_sid, call.caller, call.called, now_ms],
    )?;
    Ok(())
}

/// Stores the relay's RTP ports for the caller's and the callee's leg,
/// before our SDP first gives them to a party: a restart after a crash
/// keeps them from new calls while this call's parties may be sending.
pub fn record_rtp_ports(
    conn: &Connection,
    call_id: &str,
    ports: [u16; 2],
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE calls SET caller_rtp_port = ?2, callee_rtp_port = ?3 WHERE id = ?1",
        params![call_id, ports[0], ports[1]],
    )?;
    Ok(())
}

/// Stores what it takes to end a leg's dialog after a restart (JSON of
/// `tollbridge_sip::edge::DialogRecord`), once the leg is established.
pub fn record_dialog(
    conn: &Connection,
    call_id: &str,
    side: tollbridge_media::bridge::Side,
    dialog: &str,
) -> Result<(), StoreError> {
    let sql = match side {
        tollbridge_media::bridge::Side::Caller => {
            "UPDATE calls SET caller_dialog = ?2 WHERE id = ?1"
        }
        tollbridge_media::bridge::Side::Callee => {
            "UPDATE calls SET callee_dialog = ?2 WHERE id = ?1"
        }
    };
    conn.execute(sql, params![call_id, dialog])?;
    Ok(())
}

/// The bookings on a number that routing may consider.
fn candidates(conn: &Connection, called: &str) -> Result<Vec<Candidate>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT id, callers, pin, window_start_ms, window_end_ms, state FROM bookings
         WHERE called = ?1 AND state IN ('active', 'in-call') ORDER BY window_start_ms, id",
    )?;
    let rows = statement.query_map([called], |row| {
        let callers: String = row.get(1)?;
        Ok(Candidate {
            id: row.get(0)?,
            callers: serde_json::from_str(&callers).unwrap_or_default(),
            pin: row.get(2)?,
            window_start_ms: row.get(3)?,
            window_end_ms: row.get(4)?,
            in_call: row.get::<_, String>(5)? == "in-call",
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What routing decided, with the routed booking's cap in seconds and
/// whether it has a card to hold.
pub type Routed = (Route, Option<i64>, bool);

/// Routes a call to the dialled number's bookings with `decide` (by
/// caller ID, `route::route`, or by PIN, `route::route_by_pin`) and
/// claims the booking it picks (active → in-call) in the same
/// transaction, so two calls cannot both take it.
pub fn route_and_claim(
    conn: &mut Connection,
    call_id: &str,
    called: Option<&str>,
    now_ms: i64,
    decide: impl FnOnce(&[Candidate]) -> Route,
) -> Result<Routed, StoreError> {
    let Some(called) = called else {
        return Ok((Route::Refuse(RejectReason::UnknownNumber), None, false));
    };
    let tx = conn.transaction()?;
    let found = candidates(&tx, called)?;
    let route = decide(&found);
    if !matches!(route, Route::Booking(_)) {
        // A call that found no booking keeps the ones it could have been,
        // so a failed PIN or caller ID can be looked into.
        let ids: Vec<&str> = found.iter().map(|c| c.id.as_str()).collect();
        tx.execute(
            "UPDATE calls SET candidates = ?2 WHERE id = ?1",
            params![call_id, serde_json::to_string(&ids).unwrap_or_default()],
        )?;
    }
    let mut cap = None;
    let mut card = false;
    let route = match route {
        Route::Booking(id) => {
            let claimed = tx.execute(
                "UPDATE bookings SET state = 'in-call', updated_ms = ?2 WHERE id = ?1 AND state = 'active'",
                params![id, now_ms],
            )?;
            if claimed == 1 {
                tx.execute(
                    "UPDATE calls SET booking_id = ?2 WHERE id = ?1",
                    params![call_id, id],
                )?;
                let (cap_seconds, has_card) = tx.query_row(
                    "SELECT cap_seconds, stripe_customer IS NOT NULL AND stripe_payment_method IS NOT NULL
                     FROM bookings WHERE id = ?1",
                    [&id],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?;
                cap = Some(cap_seconds);
                card = has_card;
                Route::Booking(id)
            } else {
                Route::Refuse(RejectReason::BookingInCall)
            }
        }
        other => other,
    };
    tx.commit()?;
    Ok((route, cap, card))
}

/// Appends a status event and moves the call's status (and its ringing or
/// answer time) with it.
pub fn record_event(
    conn: &mut Connection,
    call_id: &str,
    event: &Event,
    now_ms: i64,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO call_events (call_id, seq, at_ms, status, sip_code, sip_reason, detail)
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM call_events WHERE call_id = ?1), ?2, ?3, ?4, ?5, ?6)",
        params![
            call_id,
            now_ms,
            event.status.as_str(),
            event.sip_code,
            event.sip_code.map(reason_phrase),
            event.detail
        ],
    )?;
    tx.execute(
        "UPDATE calls SET status = ?2,
             ringing_ms = CASE WHEN ?2 = 'ringing' THEN COALESCE(ringing_ms, ?3) ELSE ringing_ms END,
             answered_ms = CASE WHEN ?2 = 'in-progress' THEN COALESCE(answered_ms, ?3) ELSE answered_ms END
         WHERE id = ?1",
        params![call_id, event.status.as_str(), now_ms],
    )?;
    tx.commit()?;
    Ok(())
}

/// Stores the callee leg's SIP Call-ID.
pub fn record_callee_call_id(
    conn: &Connection,
    call_id: &str,
    sip_call_id: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE calls SET outbound_call_id = ?2 WHERE id = ?1",
        params![call_id, sip_call_id],
    )?;
    Ok(())
}

/// A call's price as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    /// Talk seconds, rounded up to whole seconds.
    pub talk_seconds: u64,
    /// Seconds billed (increment and minimum applied).
    pub billed_seconds: u64,
    /// The amount in minor units.
    pub amount: i64,
    /// ISO currency code, lower case.
    pub currency: &'static str,
}

/// The tariff of the booking a call belongs to.
fn tariff_of_call(conn: &Connection, call_id: &str) -> Result<Option<Tariff>, StoreError> {
    let booking: Option<String> = conn
        .query_row(
            "SELECT booking_id FROM calls WHERE id = ?1",
            [call_id],
            |row| row.get(0),
        )
        .optional()?
        .flatten();
    let Some(booking) = booking else {
        return Ok(None);
    };
    Ok(crate::bookings::rows::terms(conn, &booking)?.map(|terms| terms.tariff))
}

/// Rates `talk_ms` of talk under the call's tariff (a call that never
/// connected costs nothing, not even the minimum) and stores the result.
fn price_call(
    conn: &Connection,
    call_id: &str,
    talk_ms: i64,
    connected: bool,
) -> Result<Option<Priced>, StoreError> {
    let Some(tariff) = tariff_of_call(conn, call_id)? else {
        return Ok(None);
    };
    let talk_seconds = u64::try_from(talk_ms).unwrap_or(0).div_ceil(1000);
    let (billed_seconds, amount) = if connected {
        match tariff.rate(talk_seconds) {
            Ok(rating) => (rating.billed_seconds, rating.amount.minor),
            Err(e) => {
                tracing::error!(call = call_id, error = %e, "cannot rate the call; left unrated");
                return Ok(None);
            }
        }
    } else {
        (0, 0)
    };
    let currency = tariff.currency.code();
    conn.execute(
        "UPDATE calls SET billed_seconds = ?2, amount = ?3, currency = ?4 WHERE id = ?1",
        params![
            call_id,
            i64::try_from(billed_seconds).unwrap_or(i64::MAX),
            amount,
            currency
        ],
    )?;
    Ok(Some(Priced {
        talk_seconds,
        billed_seconds,
        amount,
        currency,
    }))
}

/// Closes the call record, rates it, and releases its booking in one
/// transaction: a booking whose call connected is completed, one whose
/// call never did is active again (the caller may retry within the
/// window). Returns the price when the call belongs to a booking.
pub fn record_end(
    conn: &mut Connection,
    call_id: &str,
    end: &End,
    ended_ms: i64,
) -> Result<Option<Priced>, StoreError> {
    let tx = conn.transaction()?;
    let talk_ms = i64::try_from(end.talk.as_millis()).unwrap_or(i64::MAX);
    let closed = tx.execute(
        "UPDATE calls SET status = ?2, ended_ms = ?3, talk_ms = ?4, end_reason = ?5
         WHERE id = ?1 AND ended_ms IS NULL",
        params![call_id, end.status.as_str(), ended_ms, talk_ms, end.reason],
    )?;
    let priced = if closed == 1 {
        let priced = price_call(&tx, call_id, talk_ms, end.connected)?;
        // The hold's capture or release, in the same transaction.
        crate::settle::rows::after_call(
            &tx,
            call_id,
            priced.as_ref().map_or(0, |p| p.amount),
            ended_ms,
        )?;
        if end.connected
            && let Some(booking) = tx.query_row(
                "SELECT booking_id FROM calls WHERE id = ?1",
                [call_id],
                |row| row.get::<_, Option<String>>(0),
            )?
        {
            // The call took place: the booking's cancellation fee is released.
            crate::settle::rows::settle_fee(&tx, &booking, false, "the call took place", ended_ms)?;
        }
        priced
    } else {
        None
    };
    release_booking(&tx, call_id, end.connected, ended_ms)?;
    tx.commit()?;
    Ok(priced)
}

/// Saves that these connected calls were still talking at `now_ms`, all
/// in one transaction: after a crash each is billed up to its last
/// checkpoint.
pub fn checkpoint(
    conn: &mut Connection,
    call_ids: &[String],
    now_ms: i64,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    {
        let mut statement = tx.prepare_cached(
            "UPDATE calls SET checkpoint_ms = ?2 WHERE id = ?1 AND ended_ms IS NULL",
        )?;
        for id in call_ids {
            statement.execute(params![id, now_ms])?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn release_booking(
    conn: &Connection,
    call_id: &str,
    connected: bool,
    now_ms: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE bookings SET state = ?2, updated_ms = ?3
         WHERE state = 'in-call' AND id = (SELECT booking_id FROM calls WHERE id = ?1)",
        params![
            call_id,
            if connected { "completed" } else { "active" },
            now_ms
        ],
    )?;
    Ok(())
}

/// Stores both legs' media counters.
pub fn record_media(
    conn: &mut Connection,
    call_id: &str,
    stats: &CallStats,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    for (side, leg) in [("caller", &stats.caller), ("callee", &stats.callee)] {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT OR REPLACE INTO call_legs (call_id, side, packets_received, bytes_received, packets_sent,
                 bytes_sent, packets_lost, jitter_ms, dropped_foreign, dropped_malformed, rtcp_received)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                call_id,
                side,
                n(leg.packets_received),
                n(leg.bytes_received),
                n(leg.packets_sent),
                n(leg.bytes_sent),
                n(leg.lost),
                leg.jitter_ms,
                n(leg.dropped_foreign),
                n(leg.dropped_malformed),
                n(leg.rtcp_received)
            ],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Closes every call a crash left open (reason `recovered`, ended at its
/// last known time) and releases their bookings. Returns how many.
pub fn recover_open_calls(conn: &mut Connection, now_ms: i64) -> Result<usize, StoreError> {
    let tx = conn.transaction()?;
    // An answered call ends at its last checkpoint (or its answer, when it
    // crashed before the first): under-billing by at most one interval,
    // never over-billing.
    let open: Vec<(String, bool, i64, i64)> = {
        let mut statement = tx.prepare(
            "SELECT id, answered_ms IS NOT NULL,
                    MAX(created_ms, COALESCE(answered_ms, 0), COALESCE(checkpoint_ms, 0)),
                    CASE WHEN answered_ms IS NULL THEN 0
                         ELSE MAX(0, COALESCE(checkpoint_ms, answered_ms) - answered_ms) END
             FROM calls WHERE ended_ms IS NULL",
        )?;
        let rows = statement.query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    for (id, answered, last_known, talk_ms) in &open {
        let status = if *answered {
            Status::Completed
        } else {
            Status::Failed
        };
        // Its parties may still be connected (or an expert still sending
        // early media): a BYE to each established leg is owed, and its
        // ports stay out of use until then and a quarantine after
        // (`calls::recovery`).
        tx.execute(
            "UPDATE calls SET status = ?2, ended_ms = ?3, end_reason = 'recovered', talk_ms = ?4,
                 hangup_pending = (caller_dialog IS NOT NULL OR callee_dialog IS NOT NULL
                                   OR caller_rtp_port IS NOT NULL)
             WHERE id = ?1",
            params![id, status.as_str(), last_known, talk_ms],
        )?;
        let priced = price_call(&tx, id, *talk_ms, *answered)?;
        crate::settle::rows::after_call(&tx, id, priced.as_ref().map_or(0, |p| p.amount), now_ms)?;
        tx.execute(
            "INSERT INTO call_events (call_id, seq, at_ms, status, detail)
             VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM call_events WHERE call_id = ?1), ?2, ?3,
                     'closed at start-up: the daemon stopped during the call')",
            params![id, now_ms, status.as_str()],
        )?;
        release_booking(&tx, id, *answered, now_ms)?;
    }
    tx.commit()?;
    Ok(open.len())
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

/// A call record with its legs, media statistics and ordered events, as JSON.
pub fn call_json(conn: &Connection, id: &str) -> Result<Option<Value>, StoreError> {
    let call = conn
        .query_row(
            "SELECT id, booking_id, inbound_call_id, outbound_call_id, twilio_call_sid, caller, called, status,
                    created_ms, ringing_ms, answered_ms, ended_ms, talk_ms, billed_seconds, amount, currency, end_reason,
                    caller_rtp_port, callee_rtp_port
             FROM calls WHERE id = ?1",
            [id],
            |row| {
                let time = |i: usize| -> rusqlite::Result<Option<String>> { Ok(row.get::<_, Option<i64>>(i)?.map(rfc3339)) };
                Ok(json!({
                    "id": row.get::<_, String>(0)?,
                    "booking": row.get::<_, Option<String>>(1)?,
                    "legs": {
                        "caller": {
                            "sip_call_id": row.get::<_, String>(2)?,
                            "relay_port": row.get::<_, Option<i64>>(17)?,
                            "media": null,
                        },
                        "callee": {
                            "sip_call_id": row.get::<_, Option<String>>(3)?,
                            "relay_port": row.get::<_, Option<i64>>(18)?,
                            "media": null,
                        },
                    },
                    "twilio_call_sid": row.get::<_, Option<String>>(4)?,
                    "caller": row.get::<_, Option<String>>(5)?,
                    "called": row.get::<_, Option<String>>(6)?,
                    "status": row.get::<_, String>(7)?,
                    "created_at": time(8)?,
                    "ringing_at": time(9)?,
                    "answered_at": time(10)?,
                    "ended_at": time(11)?,
                    "talk_ms": row.get::<_, Option<i64>>(12)?,
                    "billed_seconds": row.get::<_, Option<i64>>(13)?,
                    "amount": row.get::<_, Option<i64>>(14)?,
                    "currency": row.get::<_, Option<String>>(15)?,
                    "end_reason": row.get::<_, Option<String>>(16)?,
                }))
            },
        )
        .optional()?;
    let Some(mut call) = call else {
        return Ok(None);
    };
    // The rating inputs: the booking's tariff (bookings are never edited).
    call["rating"] = conn
        .query_row(
            "SELECT b.currency, b.price_per_minute, b.increment_seconds, b.minimum_seconds, b.cap_seconds
             FROM calls c JOIN bookings b ON b.id = c.booking_id WHERE c.id = ?1",
            [id],
            |row| {
                Ok(json!({
                    "currency": row.get::<_, String>(0)?,
                    "price_per_minute": row.get::<_, i64>(1)?,
                    "increment_seconds": row.get::<_, i64>(2)?,
                    "minimum_seconds": row.get::<_, i64>(3)?,
                    "cap_seconds": row.get::<_, i64>(4)?,
                }))
            },
        )
        .optional()?
        .unwrap_or(Value::Null);
    let mut statement = conn.prepare_cached(
        "SELECT side, packets_received, bytes_received, packets_sent, bytes_sent, packets_lost, jitter_ms,
                dropped_foreign, dropped_malformed, rtcp_received FROM call_legs WHERE call_id = ?1",
    )?;
    let legs = statement.query_map([id], |row| {
        Ok((
            row.get::<_, String>(0)?,
            json!({
                "packets_received": row.get::<_, i64>(1)?,
                "bytes_received": row.get::<_, i64>(2)?,
                "packets_sent": row.get::<_, i64>(3)?,
                "bytes_sent": row.get::<_, i64>(4)?,
                "packets_lost": row.get::<_, i64>(5)?,
                "jitter_ms": row.get::<_, f64>(6)?,
                "dropped_foreign": row.get::<_, i64>(7)?,
                "dropped_malformed": row.get::<_, i64>(8)?,
                "rtcp_received": row.get::<_, i64>(9)?,
            }),
        ))
    })?;
    for leg in legs {
        let (side, media) = leg?;
        call["legs"][side]["media"] = media;
    }
    let mut statement =
        conn.prepare_cached("SELECT seq, at_ms, status, sip_code, sip_reason, detail FROM call_events WHERE call_id = ?1 ORDER BY seq")?;
    let events = statement
        .query_map([id], |row| {
            Ok(json!({
                "seq": row.get::<_, i64>(0)?,
                "at": rfc3339(row.get(1)?),
                "status": row.get::<_, String>(2)?,
                "sip_code": row.get::<_, Option<i64>>(3)?,
                "sip_reason": row.get::<_, Option<String>>(4)?,
                "detail": row.get::<_, Option<String>>(5)?,
            }))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    call["events"] = Value::Array(events);
    call["payment_intent"] = conn
        .query_row(
            "SELECT payment_intent FROM calls WHERE id = ?1",
            [id],
            |row| row.get::<_, Option<String>>(0),
        )
        .map(|v| v.map_or(Value::Null, Value::String))?;
    call["settlements"] = Value::Array(crate::settle::rows::for_call(conn, id)?);
    call["candidates"] = conn
        .query_row("SELECT candidates FROM calls WHERE id = ?1", [id], |row| {
            row.get::<_, Option<String>>(0)
        })?
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null);
    Ok(Some(call))
}

/// The ids of calls to a booking and/or a dialled number, oldest first,
/// at most `limit`.
pub fn call_ids(
    conn: &Connection,
    booking: Option<&str>,
    called: Option<&str>,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT id FROM calls
         WHERE (?1 IS NULL OR booking_id = ?1) AND (?2 IS NULL OR called = ?2)
         ORDER BY created_ms, id LIMIT ?3",
    )?;
    let ids = statement.query_map(params![booking, called, limit], |row| row.get(0))?;
    Ok(ids.collect::<Result<_, _>>()?)
}
