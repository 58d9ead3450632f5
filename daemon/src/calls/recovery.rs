//! Finishing what a crash left behind, at start-up.
//!
//! `records::recover_open_calls` closes the records of calls that were
//! open when the daemon died (at their last checkpoint, settled like any
//! call). Their parties may still be connected and sending RTP, so this
//! module does the rest, as Kamailio's dialog module does from its
//! database:
//!
//! - every relay port those calls held, and every port released less than
//!   `media.port_quarantine` before the crash, is held back from new calls
//!   before the SIP edge starts;
//! - each party gets a BYE built from the dialog stored when its leg was
//!   established (remote target, route set, CSeq + 1), and the outcome is
//!   recorded as an event on the call;
//! - once both BYEs are done (answered or timed out), the call's ports
//!   wait out the quarantine and return to the pool.
//!
//! A call's `hangup_pending` flag is cleared only then, so a second crash
//! during this work finds the same calls again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use tollbridge_media::bridge::Side;
use tollbridge_media::relay::Relay;
use tollbridge_sip::edge::{ByeOutcome, DialogRecord, SipEdge};
use tracing::Instrument;

use crate::store::{Store, StoreError};

/// How long the ports of calls still being hung up are held back: until
/// their BYEs are done, which replaces this; a BYE transaction ends in
/// 32 s, so this only matters if the task itself is lost.
const UNTIL_HUNG_UP: Duration = Duration::from_secs(24 * 3600);

/// A call closed by recovery whose parties are still to be hung up (and
/// whose ports are still to be released: a call that was only ringing
/// has no dialog to end, but its expert may still send early media).
#[derive(Debug, Clone)]
pub struct Unfinished {
    /// Our id (`call_...`).
    pub call_id: String,
    /// Its final status, which its outcome events carry.
    pub status: String,
    /// The relay's RTP ports it held.
    pub rtp_ports: Vec<u16>,
    /// Each established leg's stored dialog (JSON).
    pub dialogs: Vec<(Side, String)>,
}

/// The calls whose parties are owed a BYE.
pub fn unfinished(conn: &Connection) -> Result<Vec<Unfinished>, StoreError> {
    let mut statement = conn.prepare(
        "SELECT id, status, caller_rtp_port, callee_rtp_port, caller_dialog, callee_dialog
         FROM calls WHERE hangup_pending = 1 ORDER BY created_ms, id",
    )?;
    let rows = statement.query_map([], |row| {
        let ports: [Option<i64>; 2] = [row.get(2)?, row.get(3)?];
        let dialogs: [(Side, Option<String>); 2] =
            [(Side::Caller, row.get(4)?), (Side::Callee, row.get(5)?)];
        Ok(Unfinished {
            call_id: row.get(0)?,
            status: row.get(1)?,
            rtp_ports: ports
                .into_iter()
                .flatten()
                .filter_map(|port| u16::try_from(port).ok())
                .collect(),
            dialogs: dialogs
                .into_iter()
                .filter_map(|(side, dialog)| Some((side, dialog?)))
                .collect(),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// RTP ports of calls that ended at or after `since_ms`, with when each
/// ended: their parties may still send for a while.
pub fn recently_released_ports(
    conn: &Connection,
    since_ms: i64,
) -> Result<Vec<(u16, i64)>, StoreError> {
    let mut statement = conn.prepare(
        "SELECT caller_rtp_port, callee_rtp_port, ended_ms FROM calls
         WHERE ended_ms >= ?1 AND hangup_pending = 0",
    )?;
    let rows = statement.query_map([since_ms], |row| {
        Ok((
            row.get::<_, Option<i64>>(0)?,
            row.get::<_, Option<i64>>(1)?,
            row.get::<_, i64>(2)?,
        ))
    })?;
    let mut ports = Vec::new();
    for row in rows {
        let (caller, callee, ended) = row?;
        for port in [caller, callee].into_iter().flatten() {
            if let Ok(port) = u16::try_from(port) {
                ports.push((port, ended));
            }
        }
    }
    Ok(ports)
}

/// Appends an event saying what became of a recovered call's party.
fn record_outcome(
    conn: &Connection,
    call_id: &str,
    status: &str,
    detail: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO call_events (call_id, seq, at_ms, status, detail)
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM call_events WHERE call_id = ?1), ?2, ?3, ?4)",
        params![call_id, now_ms, status, detail],
    )?;
    Ok(())
}

/// Marks a recovered call's parties as dealt with.
fn hangups_done(conn: &Connection, call_id: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE calls SET hangup_pending = 0 WHERE id = ?1",
        [call_id],
    )?;
    Ok(())
}

/// Holds back the ports of `unfinished` calls until they are hung up, and
/// the ports released within `quarantine` before `now_ms` until that much
/// after their release. Call before the SIP edge takes new calls.
pub fn hold_back_ports(
    relay: &Relay,
    unfinished: &[Unfinished],
    recently_released: &[(u16, i64)],
    quarantine: Duration,
    now_ms: i64,
) {
    let now = Instant::now();
    let ports: Vec<u16> = unfinished
        .iter()
        .flat_map(|call| call.rtp_ports.iter().copied())
        .collect();
    relay.hold_back(&ports, now + UNTIL_HUNG_UP);
    let quarantine_ms = i64::try_from(quarantine.as_millis()).unwrap_or(i64::MAX);
    for (port, ended_ms) in recently_released {
        let left_ms = ended_ms
            .saturating_add(quarantine_ms)
            .saturating_sub(now_ms);
        if let Ok(left_ms) = u64::try_from(left_ms)
            && left_ms > 0
        {
            relay.hold_back(&[*port], now + Duration::from_millis(left_ms));
        }
    }
}

/// What the hang-ups need.
pub struct Hangups {
    /// The ledger.
    pub store: Store,
    /// Sends the BYEs.
    pub edge: Arc<SipEdge>,
    /// Gets the ports back.
    pub relay: Arc<Relay>,
    /// `media.port_quarantine`.
    pub quarantine: Duration,
}

/// Hangs up every party of `unfinished`, all calls at once (a peer that
/// never answers delays only its own call's ports), recording each
/// outcome; returns when all are done.
pub async fn hang_up(hangups: Arc<Hangups>, unfinished: Vec<Unfinished>) {
    let mut tasks = tokio::task::JoinSet::new();
    for call in unfinished {
        let span = tracing::info_span!("recovery", call_id = %call.call_id);
        tasks.spawn(hang_up_call(hangups.clone(), call).instrument(span));
    }
    while tasks.join_next().await.is_some() {}
}

async fn hang_up_call(hangups: Arc<Hangups>, call: Unfinished) {
    let mut byes = tokio::task::JoinSet::new();
    for (side, dialog) in call.dialogs.clone() {
        let edge = hangups.edge.clone();
        byes.spawn(async move {
            let outcome = match serde_json::from_str::<DialogRecord>(&dialog) {
                Ok(record) => edge
                    .end_recorded(&record)
                    .await
                    .unwrap_or_else(|e| ByeOutcome::Unanswered(e.to_string())),
                Err(e) => ByeOutcome::Unanswered(format!("the stored dialog is unreadable: {e}")),
            };
            (side, outcome)
        });
    }
    while let Some(done) = byes.join_next().await {
        let Ok((side, outcome)) = done else {
            continue;
        };
        let detail = format!("after a restart: BYE to the {} {outcome}", side.as_str());
        match &outcome {
            ByeOutcome::Answered(_) => {
                tracing::info!(side = side.as_str(), %outcome, "recovered call: party hung up")
            }
            ByeOutcome::Unanswered(_) => {
                tracing::warn!(side = side.as_str(), %outcome, "recovered call: BYE not answered")
            }
        }
        let (id, status) = (call.call_id.clone(), call.status.clone());
        let written = hangups
            .store
            .call(move |conn| {
                record_outcome(conn, &id, &status, &detail, crate::calls::task::now_ms())
            })
            .await;
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot record a recovered call's hang-up");
        }
    }
    let id = call.call_id.clone();
    if let Err(e) = hangups
        .store
        .call(move |conn| hangups_done(conn, &id))
        .await
    {
        tracing::error!(error = %e, "cannot mark a recovered call hung up; a restart will try again");
    }
    hangups
        .relay
        .hold_back(&call.rtp_ports, Instant::now() + hangups.quarantine);
}
