//! Call recording: both parties on two channels of one WAV file per call
//! (caller left, expert right, 8 kHz 16-bit PCM), the prompts each party
//! heard in its channel.
//!
//! The relay never waits on a disk: its thread hands each frame (the
//! G.711 payload, as it arrived, with its RTP timestamp and arrival time)
//! to a [`RecordingTap`], which puts it on one bounded queue shared by all
//! calls without blocking or allocating; a full queue drops the frame and
//! counts it, for the call and in total. One writer thread (`tb-recorder`)
//! owns every file: it places the frames on each call's [`Timeline`],
//! writes them out [`timeline::HOLD_BACK`] behind, and every checkpoint
//! brings the header up to date, so a file cut short by a crash plays up
//! to its last checkpoint (and [`repair`] makes the rest playable at
//! start). At the end it fixes the header, syncs the file to disk,
//! hashes it (SHA-256) and reports an [`Outcome`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::sdp::Codec;

pub mod timeline;
mod wav;
mod writer;

pub use timeline::{Source, Timeline};
pub use wav::repair;

/// Frames the queue holds for all calls together: 330 ms of 500 calls
/// with both parties talking. Its slots are allocated once, at start.
pub const QUEUE_FRAMES: usize = 16_384;

/// The longest payload recorded (40 ms of G.711); longer ones are cut.
pub const MAX_PAYLOAD: usize = 320;

/// How often the writer writes out what it holds and brings each header
/// up to date: a crash loses at most this plus [`timeline::HOLD_BACK`].
pub const CHECKPOINT: Duration = Duration::from_millis(500);

/// Why a recording could not begin.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The queue is full (the disk cannot keep up): recording is refused
    /// rather than letting the relay wait.
    #[error("the recorder is behind (its queue is full)")]
    Busy,
    /// The writer thread is gone.
    #[error("the recorder has stopped")]
    Stopped,
}

/// What became of a recording, once its file is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The file.
    pub path: PathBuf,
    /// The file's size in bytes (header included).
    pub bytes: u64,
    /// The file's SHA-256, lowercase hex; empty when it could not be read.
    pub sha256: String,
    /// How long the audio is.
    pub duration: Duration,
    /// Frames the full queue dropped.
    pub dropped_frames: u64,
    /// Frames that came too late for their place.
    pub late_frames: u64,
    /// Why the file stopped short (disk full, cannot create), if it did:
    /// the call went on without it.
    pub error: Option<String>,
}

/// One frame on its way to the writer.
#[derive(Clone, Copy)]
struct Frame {
    recording: u64,
    source: Source,
    at: Instant,
    timestamp: u32,
    codec: Codec,
    len: u16,
    payload: [u8; MAX_PAYLOAD],
}

#[allow(
    clippy::large_enum_variant,
    reason = "frames travel inline: boxing one would allocate per packet on the relay thread"
)]
enum Message {
    Open {
        recording: u64,
        path: PathBuf,
        origin: Instant,
        dropped: Arc<AtomicU64>,
        done: oneshot::Sender<Outcome>,
    },
    Frame(Frame),
    Close {
        recording: u64,
        at: Instant,
    },
}

/// The recording writer: one thread, one queue, every call's file.
#[derive(Debug)]
pub struct Recorder {
    queue: SyncSender<Message>,
    next: AtomicU64,
    dropped: Arc<AtomicU64>,
}

impl Recorder {
    /// Starts the writer thread.
    pub fn start() -> std::io::Result<Recorder> {
        let (queue, inbox) = mpsc::sync_channel(QUEUE_FRAMES);
        std::thread::Builder::new()
            .name("tb-recorder".into())
            .spawn(move || writer::run(inbox))?;
        Ok(Recorder {
            queue,
            next: AtomicU64::new(1),
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Frames dropped because the queue was full, over all calls.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Begins a recording into `path` (its directory is created), timed
    /// from `origin`. The tap goes to the call's relay
    /// ([`crate::relay::CallMedia::record`]); the receiver hears the
    /// outcome once the tap is stopped or dropped.
    pub fn begin(
        &self,
        path: PathBuf,
        origin: Instant,
    ) -> Result<(RecordingTap, oneshot::Receiver<Outcome>), RecordError> {
        let recording = self.next.fetch_add(1, Ordering::Relaxed);
        let dropped = Arc::new(AtomicU64::new(0));
        let (done, outcome) = oneshot::channel();
        let open = Message::Open {
            recording,
            path,
            origin,
            dropped: dropped.clone(),
            done,
        };
        match self.queue.try_send(open) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(RecordError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(RecordError::Stopped),
        }
        let tap = RecordingTap {
            recording,
            queue: self.queue.clone(),
            dropped,
            total_dropped: self.dropped.clone(),
            stopped: false,
        };
        Ok((tap, outcome))
    }
}

/// The relay's end of one recording: frames in, never blocking.
#[derive(Debug)]
pub struct RecordingTap {
    recording: u64,
    queue: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
    total_dropped: Arc<AtomicU64>,
    stopped: bool,
}

impl RecordingTap {
    /// Hands one G.711 frame to the writer; a full queue drops it and
    /// counts it.
    pub fn frame(&self, source: Source, at: Instant, timestamp: u32, codec: Codec, payload: &[u8]) {
        let len = payload.len().min(MAX_PAYLOAD);
        let mut frame = Frame {
            recording: self.recording,
            source,
            at,
            timestamp,
            codec,
            len: len as u16,
            payload: [0; MAX_PAYLOAD],
        };
        frame.payload[..len].copy_from_slice(&payload[..len]);
        if self.queue.try_send(Message::Frame(frame)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.total_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Ends the recording at `at`: the file is as long as `at` is after
    /// its origin.
    pub fn stop(mut self, at: Instant) {
        self.close(at);
    }

    fn close(&mut self, at: Instant) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let close = Message::Close {
            recording: self.recording,
            at,
        };
        if let Err(TrySendError::Full(close)) = self.queue.try_send(close) {
            // The close must not be lost, and the relay must not wait:
            // a short-lived thread waits for room instead.
            let queue = self.queue.clone();
            let _ = std::thread::Builder::new()
                .name("tb-recorder-close".into())
                .spawn(move || {
                    let _ = queue.send(close);
                });
        }
    }
}

impl Drop for RecordingTap {
    fn drop(&mut self) {
        self.close(Instant::now());
    }
}

/// A file's size and SHA-256 (lowercase hex), read through once.
pub fn digest(path: &std::path::Path) -> std::io::Result<(u64, String)> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buffer[..n]);
    }
    Ok((bytes, hex::encode(hasher.finalize())))
}

/// How long `audio_bytes` of a recording's audio (after the header) play.
pub fn duration_of(audio_bytes: u64) -> Duration {
    let samples = audio_bytes / wav::BLOCK_ALIGN;
    Duration::from_micros(samples * 1_000_000 / timeline::RATE)
}

#[cfg(test)]
pub(crate) mod tests;
