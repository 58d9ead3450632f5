//! Finishing what a crash left behind, at start-up.
//!
//! `Ledger::recover_open_calls` closes the records of calls that were
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

use tollbridge_media::relay::Relay;
use tollbridge_sip::edge::{ByeOutcome, DialogRecord, SipEdge};
use tracing::Instrument;

use crate::ledger::{Ledger, Unfinished};

/// How long the ports of calls still being hung up are held back: until
/// their BYEs are done, which replaces this; a BYE transaction ends in
/// 32 s, so this only matters if the task itself is lost.
const UNTIL_HUNG_UP: Duration = Duration::from_secs(24 * 3600);

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
    pub ledger: Ledger,
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
/// `context` says why, in each outcome's event ("after a restart").
pub async fn hang_up(hangups: Arc<Hangups>, unfinished: Vec<Unfinished>, context: String) {
    let context: Arc<str> = Arc::from(context);
    let mut tasks = tokio::task::JoinSet::new();
    for call in unfinished {
        let span = tracing::info_span!("recovery", call_id = %call.call_id);
        tasks.spawn(hang_up_call(hangups.clone(), call, context.clone()).instrument(span));
    }
    while tasks.join_next().await.is_some() {}
}

async fn hang_up_call(hangups: Arc<Hangups>, call: Unfinished, context: Arc<str>) {
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
        let detail = format!("{context}: BYE to the {} {outcome}", side.as_str());
        match &outcome {
            ByeOutcome::Answered(_) => {
                tracing::info!(side = side.as_str(), %outcome, "recovered call: party hung up")
            }
            ByeOutcome::Unanswered(_) => {
                tracing::warn!(side = side.as_str(), %outcome, "recovered call: BYE not answered")
            }
        }
        let written = hangups
            .ledger
            .record_hangup_outcome(
                call.call_id.clone(),
                call.status,
                detail,
                crate::clock::now_ms(),
            )
            .await;
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot record a recovered call's hang-up");
        }
    }
    if let Err(e) = hangups.ledger.hangups_done(call.call_id.clone()).await {
        tracing::error!(error = %e, "cannot mark a recovered call hung up; a restart will try again");
    }
    if !call.rtp_ports.is_empty() {
        hangups
            .relay
            .hold_back(&call.rtp_ports, Instant::now() + hangups.quarantine);
    }
}
