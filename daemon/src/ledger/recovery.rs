//! What finishing a crash's calls reads and writes: the calls whose
//! parties are owed a BYE, the ports of recently ended calls, each
//! hang-up's outcome, and the mark that they are done.

use tollbridge_media::bridge::Side;

use super::calls::add_event;
use super::db::Db;
use super::states::CallStatus;
use super::{Ledger, LedgerError};
use crate::args;

/// A call closed by recovery whose parties are still to be hung up (and
/// whose ports are still to be released: a call that was only ringing
/// has no dialog to end, but its expert may still send early media).
#[derive(Debug, Clone)]
pub struct Unfinished {
    /// Our id (`call_...`).
    pub call_id: String,
    /// Its final status, which its outcome events carry.
    pub status: CallStatus,
    /// The relay's RTP ports it held.
    pub rtp_ports: Vec<u16>,
    /// Each established leg's stored dialog (JSON).
    pub dialogs: Vec<(Side, String)>,
}

/// The calls `node` owes BYEs for: its own that it recovered, and those
/// it took over from silent nodes (only `ids`, when given).
pub(super) fn unfinished(
    db: &mut dyn Db,
    node: &str,
    ids: Option<&[String]>,
) -> Result<Vec<Unfinished>, LedgerError> {
    let rows = db.query(
        "SELECT id, status, caller_rtp_port, callee_rtp_port, caller_dialog, callee_dialog
         FROM calls WHERE hangup_pending = 1 AND COALESCE(taken_over_by, node) = ?1
         ORDER BY created_ms, id",
        args![node],
    )?;
    rows.iter()
        .filter(|row| ids.is_none_or(|ids| row.text(0).is_ok_and(|id| ids.contains(&id))))
        .map(|row| {
            let status = row.text(1)?;
            let dialogs = [
                (Side::Caller, row.opt_text(4)?),
                (Side::Callee, row.opt_text(5)?),
            ];
            Ok(Unfinished {
                call_id: row.text(0)?,
                status: CallStatus::parse(&status)
                    .ok_or_else(|| LedgerError::Decode(format!("call status {status:?}")))?,
                rtp_ports: [row.opt_int(2)?, row.opt_int(3)?]
                    .into_iter()
                    .flatten()
                    .filter_map(|port| u16::try_from(port).ok())
                    .collect(),
                dialogs: dialogs
                    .into_iter()
                    .filter_map(|(side, dialog)| Some((side, dialog?)))
                    .collect(),
            })
        })
        .collect()
}

impl Ledger {
    /// The calls whose parties are owed a BYE.
    pub async fn unfinished_calls(&self) -> Result<Vec<Unfinished>, LedgerError> {
        let node = self.node.clone();
        self.run(move |db| unfinished(db, &node, None)).await
    }

    /// This node's relay ports whose parties may still send: those of its
    /// calls that ended at or after `since_ms`, with when each ended, and
    /// those of its calls another node took over and is still hanging up
    /// (as if ended at `now_ms`).
    pub async fn recently_released_ports(
        &self,
        since_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<(u16, i64)>, LedgerError> {
        let node = self.node.clone();
        self.run(move |db| {
            let mut ports = Vec::new();
            for row in db.query(
                "SELECT caller_rtp_port, callee_rtp_port,
                        CASE WHEN hangup_pending = 1 THEN ?3 ELSE ended_ms END
                 FROM calls
                 WHERE node = ?1 AND ((ended_ms >= ?2 AND hangup_pending = 0)
                    OR (hangup_pending = 1 AND taken_over_by IS NOT NULL AND taken_over_by <> ?1))",
                args![&*node, since_ms, now_ms],
            )? {
                let ended = row.int(2)?;
                for port in [row.opt_int(0)?, row.opt_int(1)?].into_iter().flatten() {
                    if let Ok(port) = u16::try_from(port) {
                        ports.push((port, ended));
                    }
                }
            }
            Ok(ports)
        })
        .await
    }

    /// Appends an event saying what became of a recovered call's party.
    pub async fn record_hangup_outcome(
        &self,
        call_id: String,
        status: CallStatus,
        detail: String,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        self.run(move |db| add_event(db, &call_id, status, None, Some(&detail), now_ms))
            .await
    }

    /// Marks a recovered call's parties as dealt with.
    pub async fn hangups_done(&self, call_id: String) -> Result<(), LedgerError> {
        self.run(move |db| {
            db.execute(
                "UPDATE calls SET hangup_pending = 0 WHERE id = ?1",
                args![call_id],
            )?;
            Ok(())
        })
        .await
    }
}
