//! What finishing a crash's calls reads and writes: the open calls of a
//! node that stopped (its own at start, or a silent one's), closed at
//! their last checkpoint; the calls whose parties are owed a BYE, the
//! ports of recently ended calls, each hang-up's outcome, and the mark
//! that they are done.

use tollbridge_media::bridge::Side;

use super::calls::{CallEnd, Closing, add_event, close};
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

/// Whose open calls to close, and for whom.
pub(super) enum Recovering<'a> {
    /// This node's own, at its start: it stopped during them.
    Own(&'a str),
    /// A node that fell silent, by the node taking its calls over.
    Silent {
        /// The silent node.
        node: &'a str,
        /// The node taking over.
        taker: &'a str,
    },
}

/// Closes the open calls of a node at their last checkpoint, settles them
/// and marks their parties as owed a BYE; returns the ids it closed (a
/// call another node closed first is left alone). See
/// [`Ledger::recover_open_calls`].
pub(super) fn recover_open(
    db: &mut dyn Db,
    whose: &Recovering<'_>,
    now_ms: i64,
) -> Result<Vec<String>, LedgerError> {
    let (node, taker, detail) = match whose {
        Recovering::Own(node) => (
            *node,
            None,
            "closed at start-up: the daemon stopped during the call".to_owned(),
        ),
        Recovering::Silent { node, taker } => (
            *node,
            Some(*taker),
            format!("closed by node {taker}: node {node} fell silent during the call"),
        ),
    };
    let greatest = db.dialect().greatest();
    let sql = format!(
        "SELECT id, answered_ms IS NOT NULL,
                {greatest}(created_ms, COALESCE(answered_ms, 0), COALESCE(checkpoint_ms, 0)),
                CASE WHEN answered_ms IS NULL THEN 0
                     ELSE {greatest}(0, COALESCE(checkpoint_ms, answered_ms) - answered_ms) END
         FROM calls WHERE ended_ms IS NULL AND node = ?1 ORDER BY created_ms, id"
    );
    let open = db.query(&sql, args![node])?;
    let mut closed = Vec::with_capacity(open.len());
    for row in &open {
        let (id, answered, last_known, talk_ms) =
            (row.text(0)?, row.flag(1)?, row.int(2)?, row.int(3)?);
        let status = if answered {
            CallStatus::Completed
        } else {
            CallStatus::Failed
        };
        let end = CallEnd {
            status,
            reason: "recovered".to_owned(),
            talk_ms,
            connected: answered,
        };
        if close(db, &id, &end, last_known, now_ms)? == Closing::AlreadyClosed {
            continue;
        }
        // Its parties may still be connected (or an expert still sending
        // early media): a BYE to each established leg is owed, and its
        // ports stay out of use until then (`calls::recovery`).
        db.execute(
            "UPDATE calls SET taken_over_by = ?2, hangup_pending = CASE WHEN caller_dialog IS NOT NULL
                 OR callee_dialog IS NOT NULL OR caller_rtp_port IS NOT NULL THEN 1 ELSE 0 END
             WHERE id = ?1",
            args![id.as_str(), taker],
        )?;
        add_event(db, &id, status, None, Some(&detail), now_ms)?;
        closed.push(id);
    }
    Ok(closed)
}
