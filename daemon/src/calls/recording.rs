//! Call recordings on this node's disk: where a call's file goes and
//! whether the disk has room for it, the files a crash left open made
//! playable at start, and retention. The files are written by the media
//! crate's recorder; the ledger keeps what became of each.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tollbridge_media::recording::Outcome;

use crate::clock::now_ms;
use crate::ledger::{Ledger, RecordingDone};
use crate::shutdown::Shutdown;
use crate::state::Shared;

/// How often retention looks for files past their age.
const RETENTION_POLL: Duration = Duration::from_secs(60);

/// Files deleted per retention pass; the rest wait for the next.
const RETENTION_BATCH: i64 = 500;

/// A call's file under `recording.dir`: the call id names it.
pub fn path_of(dir: &Path, call_id: &str) -> PathBuf {
    dir.join(format!("{call_id}.wav"))
}

/// Creates `dir` and says why a recording may not start there: the disk
/// holding it has less than `min_free_mb` free, or it cannot be created or
/// read. Blocking (run it off the call's task).
pub fn room_for_recording(dir: &Path, min_free_mb: u64) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("recording.dir {} cannot be created: {e}", dir.display()))?;
    let stats =
        rustix::fs::statvfs(dir).map_err(|e| format!("recording.dir {}: {e}", dir.display()))?;
    let free_mb = stats.f_bavail.saturating_mul(stats.f_frsize) / (1024 * 1024);
    if free_mb < min_free_mb {
        return Err(format!(
            "the disk holding {} has {free_mb} MB free, below recording.min_free_mb = {min_free_mb}",
            dir.display()
        ));
    }
    Ok(())
}

/// The ledger's account of a closed file.
pub fn done_of(outcome: &Outcome) -> RecordingDone {
    RecordingDone {
        bytes: i64::try_from(outcome.bytes).unwrap_or(i64::MAX),
        sha256: outcome.sha256.clone(),
        duration_ms: i64::try_from(outcome.duration.as_millis()).unwrap_or(i64::MAX),
        dropped_frames: i64::try_from(outcome.dropped_frames).unwrap_or(i64::MAX),
        late_frames: i64::try_from(outcome.late_frames).unwrap_or(i64::MAX),
        error: outcome.error.clone(),
        cut_short: false,
    }
}

/// Makes a file a crash left open playable (its header brought up to the
/// audio it holds) and measures it. Blocking.
fn finalize(path: &Path) -> std::io::Result<RecordingDone> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let audio = tollbridge_media::recording::repair(&file)?;
    file.sync_data()?;
    drop(file);
    let (bytes, sha256) = tollbridge_media::recording::digest(path)?;
    Ok(RecordingDone {
        bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
        sha256,
        duration_ms: i64::try_from(tollbridge_media::recording::duration_of(audio).as_millis())
            .unwrap_or(i64::MAX),
        dropped_frames: 0,
        late_frames: 0,
        error: Some(
            "cut short: the daemon stopped during the call; finalized at the next start".to_owned(),
        ),
        cut_short: true,
    })
}

/// At start, before any call: every recording this node left being
/// written (a crash, `kill -9`) is finalized and its outcome stored. A
/// file that is gone or unreadable is recorded as failed, with why.
pub async fn finalize_left_open(ledger: &Ledger) -> Result<usize, crate::ledger::LedgerError> {
    let open = ledger.open_recordings().await?;
    let count = open.len();
    for row in open {
        let path = PathBuf::from(&row.path);
        let done = tokio::task::spawn_blocking(move || finalize(&path))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|result| result);
        let done = match done {
            Ok(done) => {
                tracing::warn!(call = %row.call_id, path = %row.path, duration_ms = done.duration_ms, "recording left open by a previous run finalized");
                done
            }
            Err(e) => {
                tracing::error!(call = %row.call_id, path = %row.path, error = %e, "recording left open by a previous run cannot be finalized");
                RecordingDone {
                    bytes: 0,
                    sha256: String::new(),
                    duration_ms: 0,
                    dropped_frames: 0,
                    late_frames: 0,
                    error: Some(format!(
                        "the daemon stopped during the call and the file cannot be finalized: {e}"
                    )),
                    cut_short: false,
                }
            }
        };
        ledger
            .finish_recording(row.call_id.clone(), done, now_ms())
            .await?;
    }
    Ok(count)
}

/// Deletes a recording's file and records it; false when there was
/// nothing to delete. A file already gone counts as deleted.
pub async fn delete(
    ledger: &Ledger,
    call_id: &str,
    path: &str,
    reason: String,
) -> Result<bool, String> {
    let file = PathBuf::from(path);
    if !path.is_empty() {
        let removed = tokio::task::spawn_blocking(move || match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
            _ => Ok(()),
        })
        .await
        .map_err(|e| e.to_string())?;
        removed?;
    }
    ledger
        .mark_recording_deleted(call_id.to_owned(), reason, now_ms())
        .await
        .map_err(|e| e.to_string())
}

/// Deletes this node's recordings older than `recording.retention`, every
/// minute, until the daemon stops; each deletion is recorded with why.
pub async fn retention_loop(shared: Arc<Shared>, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            () = shutdown.requested() => return,
            () = tokio::time::sleep(RETENTION_POLL) => {}
        }
        let Some(retention) = shared.config.load().recording.retention else {
            continue;
        };
        let deleted = expire(&shared.ledger, retention).await;
        if deleted > 0 {
            tracing::info!(
                recordings = deleted,
                "recordings past recording.retention deleted"
            );
        }
    }
}

/// One retention pass: deletes the files closed more than `retention`
/// ago. Returns how many.
pub async fn expire(ledger: &Ledger, retention: Duration) -> usize {
    let age = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let before = now_ms().saturating_sub(age);
    let expired = match ledger.expired_recordings(before, RETENTION_BATCH).await {
        Ok(expired) => expired,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the recordings past their retention");
            return 0;
        }
    };
    let reason = format!("retention {}", show_days(retention));
    let mut deleted = 0;
    for row in expired {
        match delete(ledger, &row.call_id, &row.path, reason.clone()).await {
            Ok(true) => deleted += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(call = %row.call_id, path = %row.path, error = %e, "cannot delete a recording past its retention")
            }
        }
    }
    deleted
}

/// `90d`, `36h`, `3600s`: the retention as an operator wrote it.
fn show_days(retention: Duration) -> String {
    let seconds = retention.as_secs();
    if seconds.is_multiple_of(86_400) {
        format!("{}d", seconds / 86_400)
    } else if seconds.is_multiple_of(3_600) {
        format!("{}h", seconds / 3_600)
    } else {
        format!("{seconds}s")
    }
}
