//! The call's recording, as the shell carries it out: started with the
//! talk when the disk has room (the ledger row first, so a crash finds the
//! file), stopped at the talk's end, its outcome stored before the call's
//! end is priced.

use super::*;
use crate::calls::recording::{done_of, path_of, room_for_recording};

/// How long the end of a call waits for its file to be closed and hashed.
const CLOSE_LIMIT: Duration = Duration::from_secs(10);

impl Shell {
    /// Begins recording both parties, timed from `origin`; a disk without
    /// room, or a recorder that is behind, records why instead (the call
    /// goes on).
    pub(super) async fn start_recording(&mut self, origin: std::time::Instant) {
        let (Some(media), Some(recorder)) = (&self.media, self.shared.recorder.get().cloned())
        else {
            return;
        };
        let settings = self.config.recording.clone();
        let dir = settings.dir.clone();
        let room =
            tokio::task::spawn_blocking(move || room_for_recording(&dir, settings.min_free_mb))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
        // Absolute: the ledger keeps it, and the API serves it, whatever
        // the working directory.
        let path = path_of(&self.config.recording.dir, &self.id);
        let path = std::path::absolute(&path).unwrap_or(path);
        let began = room.and_then(|()| {
            recorder
                .begin(path.clone(), origin)
                .map_err(|e| e.to_string())
        });
        let ledger = &self.shared.ledger;
        match began {
            Ok((tap, outcome)) => {
                let stored = ledger
                    .begin_recording(self.id.clone(), path.display().to_string(), now_ms())
                    .await;
                if let Err(e) = stored {
                    // Without its row the file would be nobody's: it is
                    // removed once the writer has closed it.
                    tracing::error!(error = %e, "cannot record the recording in the ledger; the call is not recorded");
                    tap.stop(origin);
                    tokio::spawn(async move {
                        if let Ok(closed) = outcome.await {
                            let _ = tokio::task::spawn_blocking(move || {
                                std::fs::remove_file(closed.path)
                            })
                            .await;
                        }
                    });
                    return;
                }
                media.record(tap);
                self.recording = Some(outcome);
                tracing::info!(path = %path.display(), "recording");
            }
            Err(why) => {
                tracing::warn!(reason = %why, "the call is not recorded");
                self.shared.metrics.recording_finished("refused");
                if let Err(e) = ledger
                    .refuse_recording(self.id.clone(), why, now_ms())
                    .await
                {
                    tracing::error!(error = %e, "cannot record why the call is not recorded");
                }
            }
        }
    }

    /// Ends the recording at `at` and stores what it came to.
    pub(super) async fn stop_recording(&mut self, at: std::time::Instant) {
        if let Some(media) = &self.media {
            media.stop_recording(at);
        }
        self.store_recording().await;
    }

    /// Waits for the recording's file to be closed (its tap stopped or
    /// dropped with the media) and stores its outcome.
    pub(super) async fn store_recording(&mut self) {
        let Some(outcome) = self.recording.take() else {
            return;
        };
        let outcome = match tokio::time::timeout(CLOSE_LIMIT, outcome).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) | Err(_) => {
                // Left `recording`: the next start finalizes the file.
                tracing::error!(
                    "the recorder did not close the file; it is finalized at the next start"
                );
                return;
            }
        };
        let done = done_of(&outcome);
        match &done.error {
            None => {
                self.shared.metrics.recording_finished("complete");
                tracing::info!(
                    bytes = done.bytes,
                    duration_ms = done.duration_ms,
                    dropped_frames = done.dropped_frames,
                    "recording closed"
                );
            }
            Some(why) => {
                self.shared.metrics.recording_finished("failed");
                tracing::warn!(reason = %why, bytes = done.bytes, "recording stopped short");
            }
        }
        if let Err(e) = self
            .shared
            .ledger
            .finish_recording(self.id.clone(), done, now_ms())
            .await
        {
            tracing::error!(error = %e, "cannot store what the recording came to");
        }
    }
}
