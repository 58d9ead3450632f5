//! Call recordings as the ledger keeps them: which node's disk holds the
//! file, its size and SHA-256 once closed, what went wrong if anything,
//! and when and why it was deleted. The file itself is the recorder's.

use super::db::{Db, Row};
use super::{Ledger, LedgerError};
use crate::args;

/// Where a recording stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingState {
    /// Being written.
    Recording,
    /// Closed, its size and hash known.
    Complete,
    /// Not made, or cut short (the disk full, the recorder behind); what
    /// was written, if anything, is kept.
    Failed,
    /// The file was deleted (through the API or by retention).
    Deleted,
}

impl RecordingState {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingState::Recording => "recording",
            RecordingState::Complete => "complete",
            RecordingState::Failed => "failed",
            RecordingState::Deleted => "deleted",
        }
    }

    fn parse(word: &str) -> Option<RecordingState> {
        Some(match word {
            "recording" => RecordingState::Recording,
            "complete" => RecordingState::Complete,
            "failed" => RecordingState::Failed,
            "deleted" => RecordingState::Deleted,
            _ => return None,
        })
    }
}

/// One call's recording as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingRow {
    /// The call.
    pub call_id: String,
    /// The node whose disk holds the file.
    pub node: String,
    /// The file on that node.
    pub path: String,
    /// Where it stands.
    pub state: RecordingState,
    /// When it began, Unix ms.
    pub started_ms: i64,
    /// When it was closed, Unix ms.
    pub ended_ms: Option<i64>,
    /// The file's size in bytes, header included.
    pub bytes: Option<i64>,
    /// The file's SHA-256, lowercase hex.
    pub sha256: Option<String>,
    /// How long its audio is.
    pub duration_ms: Option<i64>,
    /// Frames the recorder's full queue dropped.
    pub dropped_frames: i64,
    /// Frames that came too late for their place.
    pub late_frames: i64,
    /// Why it failed or stopped short.
    pub error: Option<String>,
    /// When the file was deleted, Unix ms.
    pub deleted_ms: Option<i64>,
    /// Why (`api`, `retention 90d`).
    pub deleted_reason: Option<String>,
}

const COLUMNS: &str = "call_id, node, path, state, started_ms, ended_ms, bytes, sha256, \
     duration_ms, dropped_frames, late_frames, error, deleted_ms, deleted_reason";

fn row_of(row: &Row) -> Result<RecordingRow, LedgerError> {
    let state = row.text(3)?;
    Ok(RecordingRow {
        call_id: row.text(0)?,
        node: row.text(1)?,
        path: row.text(2)?,
        state: RecordingState::parse(&state)
            .ok_or_else(|| LedgerError::Decode(format!("recording state {state:?}")))?,
        started_ms: row.int(4)?,
        ended_ms: row.opt_int(5)?,
        bytes: row.opt_int(6)?,
        sha256: row.opt_text(7)?,
        duration_ms: row.opt_int(8)?,
        dropped_frames: row.int(9)?,
        late_frames: row.int(10)?,
        error: row.opt_text(11)?,
        deleted_ms: row.opt_int(12)?,
        deleted_reason: row.opt_text(13)?,
    })
}

/// A call's recording, if it has one.
pub(super) fn get(db: &mut dyn Db, call_id: &str) -> Result<Option<RecordingRow>, LedgerError> {
    let sql = format!("SELECT {COLUMNS} FROM recordings WHERE call_id = ?1");
    db.query_opt(&sql, args![call_id])?
        .map(|row| row_of(&row))
        .transpose()
}

/// How much of a call's talk its recording covers, in ms, for pricing:
/// none without a recording (or one that never started), the file's length
/// once closed, and the whole talk while its outcome is unknown (a node
/// that died mid-call: the recording ran as long as the call did).
pub(super) fn recorded_ms(
    db: &mut dyn Db,
    call_id: &str,
    talk_ms: i64,
) -> Result<i64, LedgerError> {
    Ok(match get(db, call_id)? {
        None => 0,
        Some(row) => match (row.state, row.duration_ms) {
            (RecordingState::Recording, _) => talk_ms,
            (_, Some(duration)) => duration.min(talk_ms),
            (_, None) => 0,
        },
    })
}

/// What a closed recording came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingDone {
    /// The file's size in bytes.
    pub bytes: i64,
    /// The file's SHA-256, lowercase hex.
    pub sha256: String,
    /// How long its audio is.
    pub duration_ms: i64,
    /// Frames the full queue dropped.
    pub dropped_frames: i64,
    /// Frames that came too late.
    pub late_frames: i64,
    /// Why it stopped short, when it did.
    pub error: Option<String>,
    /// The file is whole up to where the daemon stopped (`error` says
    /// so): complete, not failed.
    pub cut_short: bool,
}

impl Ledger {
    /// Records that this node began recording a call into `path`.
    pub async fn begin_recording(
        &self,
        call_id: String,
        path: String,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        let node = self.node().to_owned();
        self.run(move |db| {
            db.execute(
                "INSERT INTO recordings (call_id, node, path, state, started_ms)
                 VALUES (?1, ?2, ?3, 'recording', ?4)",
                args![call_id, node, path, now_ms],
            )?;
            Ok(())
        })
        .await
    }

    /// Records that a call that should have been recorded was not, and why
    /// (the disk nearly full, the recorder behind).
    pub async fn refuse_recording(
        &self,
        call_id: String,
        why: String,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        let node = self.node().to_owned();
        self.run(move |db| {
            db.execute(
                "INSERT INTO recordings (call_id, node, path, state, started_ms, ended_ms, error)
                 VALUES (?1, ?2, '', 'failed', ?3, ?3, ?4)",
                args![call_id, node, now_ms, why],
            )?;
            Ok(())
        })
        .await
    }

    /// Stores what a recording came to: `complete`, or `failed` with why.
    pub async fn finish_recording(
        &self,
        call_id: String,
        done: RecordingDone,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        self.run(move |db| {
            let state = if done.error.is_none() || done.cut_short {
                RecordingState::Complete
            } else {
                RecordingState::Failed
            };
            db.execute(
                "UPDATE recordings SET state = ?2, ended_ms = ?3, bytes = ?4, sha256 = ?5,
                     duration_ms = ?6, dropped_frames = ?7, late_frames = ?8, error = ?9
                 WHERE call_id = ?1 AND state = 'recording'",
                args![
                    call_id,
                    state.as_str(),
                    now_ms,
                    done.bytes,
                    done.sha256,
                    done.duration_ms,
                    done.dropped_frames,
                    done.late_frames,
                    done.error
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// A call's recording, if it has one.
    pub async fn recording(&self, call_id: String) -> Result<Option<RecordingRow>, LedgerError> {
        self.run(move |db| get(db, &call_id)).await
    }

    /// This node's recordings still marked as being written: at start,
    /// the files a crash left open.
    pub async fn open_recordings(&self) -> Result<Vec<RecordingRow>, LedgerError> {
        let node = self.node().to_owned();
        self.run(move |db| {
            let sql = format!(
                "SELECT {COLUMNS} FROM recordings WHERE node = ?1 AND state = 'recording'
                 ORDER BY started_ms"
            );
            db.query(&sql, args![node])?.iter().map(row_of).collect()
        })
        .await
    }

    /// This node's files (complete or cut short) closed before
    /// `before_ms`, oldest first, at most `limit`: what retention deletes.
    pub async fn expired_recordings(
        &self,
        before_ms: i64,
        limit: i64,
    ) -> Result<Vec<RecordingRow>, LedgerError> {
        let node = self.node().to_owned();
        self.run(move |db| {
            let sql = format!(
                "SELECT {COLUMNS} FROM recordings
                 WHERE node = ?1 AND state IN ('complete', 'failed') AND path <> ''
                   AND ended_ms < ?2
                 ORDER BY ended_ms LIMIT ?3"
            );
            db.query(&sql, args![node, before_ms, limit])?
                .iter()
                .map(row_of)
                .collect()
        })
        .await
    }

    /// Records that a recording's file was deleted, and why; false when
    /// there was nothing left to delete (deleted already, or still being
    /// written).
    pub async fn mark_recording_deleted(
        &self,
        call_id: String,
        reason: String,
        now_ms: i64,
    ) -> Result<bool, LedgerError> {
        self.run(move |db| {
            let changed = db.execute(
                "UPDATE recordings SET state = 'deleted', deleted_ms = ?2, deleted_reason = ?3
                 WHERE call_id = ?1 AND state IN ('complete', 'failed')",
                args![call_id, now_ms, reason],
            )?;
            Ok(changed == 1)
        })
        .await
    }
}
