//! The `tb-recorder` thread: every recording's file, fed by the queue.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::timeline::{HOLD_BACK, RATE, Timeline};
use super::wav::{self, BLOCK_ALIGN, HEADER_LEN};
use super::{CHECKPOINT, Frame, MAX_PAYLOAD, Message, Outcome, digest, duration_of};
use crate::g711;

/// One open recording.
struct Track {
    path: PathBuf,
    /// `None` once writing failed (the reason is in `error`).
    file: Option<File>,
    origin: Instant,
    timeline: Timeline,
    dropped: Arc<AtomicU64>,
    done: oneshot::Sender<Outcome>,
    error: Option<String>,
}

/// Samples from `origin` to `at`.
fn position(origin: Instant, at: Instant) -> u64 {
    (at.saturating_duration_since(origin).as_micros() as u64) * RATE / 1_000_000
}

impl Track {
    fn open(
        path: PathBuf,
        origin: Instant,
        dropped: Arc<AtomicU64>,
        done: oneshot::Sender<Outcome>,
    ) -> Track {
        let created = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                // Read too: a failed write repairs the header from the file.
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)
            })
            .and_then(|mut file| file.write_all(&wav::header(0)).map(|()| file));
        let (file, error) = match created {
            Ok(file) => (Some(file), None),
            Err(e) => (None, Some(format!("cannot create {}: {e}", path.display()))),
        };
        Track {
            path,
            file,
            origin,
            timeline: Timeline::default(),
            dropped,
            done,
            error,
        }
    }

    fn place(&mut self, frame: &Frame) {
        let mut samples = [0i16; MAX_PAYLOAD];
        let len = usize::from(frame.len).min(MAX_PAYLOAD);
        for (sample, byte) in samples.iter_mut().zip(&frame.payload[..len]) {
            *sample = g711::decode(frame.codec, *byte);
        }
        let arrival = position(self.origin, frame.at);
        self.timeline
            .place(frame.source, arrival, frame.timestamp, &samples[..len]);
    }

    /// Writes out everything before `until` and brings the header up to
    /// date; a failed write stops the file where it is.
    fn write_until(&mut self, until: u64, end: bool, scratch: &mut Vec<u8>) {
        scratch.clear();
        if end {
            self.timeline.end_at(until, scratch);
        } else {
            self.timeline.take_until(until, scratch);
        }
        let Some(file) = &mut self.file else {
            return;
        };
        let written = file
            .write_all(scratch)
            .and_then(|()| wav::set_length(file, self.timeline.written() * BLOCK_ALIGN));
        if let Err(e) = written {
            self.error = Some(describe(&e));
            // What is on disk stays playable as far as it goes.
            let _ = wav::repair(file);
            self.file = None;
        }
    }

    /// Closes the file at `at` and reports the outcome.
    fn close(mut self, at: Instant, scratch: &mut Vec<u8>) {
        let end = position(self.origin, at);
        self.write_until(end, true, scratch);
        if let Some(file) = &self.file
            && let Err(e) = file.sync_data()
        {
            self.error = Some(describe(&e));
        }
        let (bytes, sha256) = digest(&self.path).unwrap_or_default();
        let outcome = Outcome {
            path: self.path,
            bytes,
            sha256,
            duration: duration_of(bytes.saturating_sub(HEADER_LEN)),
            dropped_frames: self.dropped.load(Ordering::Relaxed),
            late_frames: self.timeline.late(),
            error: self.error,
        };
        let _ = self.done.send(outcome);
    }
}

fn describe(e: &io::Error) -> String {
    if e.raw_os_error() == Some(28) {
        format!("the disk is full: {e}")
    } else {
        e.to_string()
    }
}

/// How long the writer sleeps once the queue is empty. It polls rather
/// than waits on the queue so that handing it a frame never has to wake
/// it: a wake-up per packet (a futex call) cost the relay thread 4.5 µs a
/// packet, 40 % more, at 500 recorded calls.
const POLL: Duration = Duration::from_millis(10);

/// The thread's loop: until every sender is gone, then each open file is
/// closed where its recording stands.
pub(super) fn run(inbox: Receiver<Message>) {
    let mut tracks: HashMap<u64, Track> = HashMap::new();
    let mut scratch = Vec::new();
    let mut checkpoint = Instant::now() + CHECKPOINT;
    let mut open = true;
    while open {
        loop {
            match inbox.try_recv() {
                Ok(message) => handle(&mut tracks, message, &mut scratch),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let now = Instant::now();
        if now >= checkpoint {
            for track in tracks.values_mut() {
                let until = position(track.origin, now).saturating_sub(HOLD_BACK);
                track.write_until(until, false, &mut scratch);
            }
            checkpoint = now + CHECKPOINT;
        }
        if open {
            std::thread::sleep(POLL);
        }
    }
    let now = Instant::now();
    for (_, track) in tracks.drain() {
        track.close(now, &mut scratch);
    }
}

fn handle(tracks: &mut HashMap<u64, Track>, message: Message, scratch: &mut Vec<u8>) {
    match message {
        Message::Open {
            recording,
            path,
            origin,
            dropped,
            done,
        } => {
            tracks.insert(recording, Track::open(path, origin, dropped, done));
        }
        Message::Frame(frame) => {
            if let Some(track) = tracks.get_mut(&frame.recording) {
                track.place(&frame);
            }
        }
        Message::Close { recording, at } => {
            if let Some(track) = tracks.remove(&recording) {
                track.close(at, scratch);
            }
        }
    }
}
