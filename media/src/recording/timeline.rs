//! Where each frame of a recording goes, sans-IO: a stereo timeline at
//! 8 kHz (caller left, expert right) counted from the moment the recording
//! began.
//!
//! A frame's place comes from its RTP timestamp, anchored to its arrival:
//! the first frame of a stream lands where it arrived, the next ones where
//! their timestamps say (so network jitter does not smear the audio), and
//! a stream whose timestamps stray from its arrivals by more than
//! [`REANCHOR`] (a new SSRC after a re-INVITE, a jump, clock drift) is
//! anchored again. Silence between talkspurts, or while nobody sends, is
//! written as silence: the file is as long as the recording, never shorter.
//! Frames are held back [`HOLD_BACK`] before they are written so a
//! reordered or jittered packet still finds its place; one that comes
//! later than that is counted and left out.

use std::collections::VecDeque;

/// Samples per second (G.711).
pub const RATE: u64 = 8_000;

/// A stream whose next frame lands this many samples (120 ms) away from
/// its arrival is anchored again at its arrival.
pub const REANCHOR: i64 = 960;

/// How far behind the newest arrival the timeline is written out (400 ms):
/// the room reordered and jittered packets have.
pub const HOLD_BACK: u64 = 3_200;

/// Whose audio a frame is; each source has its own anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// What the caller said (left channel).
    CallerVoice,
    /// What the expert said (right channel).
    CalleeVoice,
    /// A prompt played to the caller (left channel, under the caller's
    /// voice).
    PromptToCaller,
    /// A prompt played to the expert (right channel).
    PromptToCallee,
}

impl Source {
    fn index(self) -> usize {
        match self {
            Source::CallerVoice => 0,
            Source::CalleeVoice => 1,
            Source::PromptToCaller => 2,
            Source::PromptToCallee => 3,
        }
    }

    /// 0 for the left (caller) channel, 1 for the right (expert).
    pub fn channel(self) -> usize {
        match self {
            Source::CallerVoice | Source::PromptToCaller => 0,
            Source::CalleeVoice | Source::PromptToCallee => 1,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    position: u64,
    timestamp: u32,
}

/// One recording's timeline: what is placed but not yet written.
#[derive(Debug, Default)]
pub struct Timeline {
    anchors: [Option<Anchor>; 4],
    /// Samples (per channel) already handed out to the file.
    written: u64,
    /// Samples from `written` on, placed but not written yet.
    pending: VecDeque<[i16; 2]>,
    /// Frames that came after their place was written.
    late: u64,
}

impl Timeline {
    /// Samples per channel written out so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Frames left out because they came after their place was written.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Places `samples` from `source`, which arrived `arrival` samples after
    /// the recording began and carry RTP timestamp `timestamp`, mixing them
    /// with anything already in their place.
    pub fn place(&mut self, source: Source, arrival: u64, timestamp: u32, samples: &[i16]) {
        let anchor = &mut self.anchors[source.index()];
        let position = match *anchor {
            Some(a) => {
                let offset = i64::from(timestamp.wrapping_sub(a.timestamp) as i32);
                let expected = a.position as i64 + offset;
                if expected < 0 || (expected - arrival as i64).abs() > REANCHOR {
                    None
                } else {
                    Some(expected as u64)
                }
            }
            None => None,
        };
        let position = position.unwrap_or_else(|| {
            *anchor = Some(Anchor {
                position: arrival,
                timestamp,
            });
            arrival
        });
        let end = position + samples.len() as u64;
        if end <= self.written {
            self.late += 1;
            return;
        }
        let needed = (end - self.written) as usize;
        if self.pending.len() < needed {
            self.pending.resize(needed, [0, 0]);
        }
        let channel = source.channel();
        for (offset, sample) in samples.iter().enumerate() {
            let at = position + offset as u64;
            if at < self.written {
                continue;
            }
            let slot = &mut self.pending[(at - self.written) as usize][channel];
            *slot = slot.saturating_add(*sample);
        }
    }

    /// Hands out every sample before `position` (silence where nothing was
    /// placed) as interleaved little-endian 16-bit PCM appended to `out`,
    /// and forgets it.
    pub fn take_until(&mut self, position: u64, out: &mut Vec<u8>) {
        if position <= self.written {
            return;
        }
        let count = (position - self.written) as usize;
        if self.pending.len() < count {
            self.pending.resize(count, [0, 0]);
        }
        out.reserve(count * 4);
        for [left, right] in self.pending.drain(..count) {
            out.extend_from_slice(&left.to_le_bytes());
            out.extend_from_slice(&right.to_le_bytes());
        }
        self.written = position;
    }

    /// Ends the timeline at `position`: anything placed after it is
    /// dropped, so the file is exactly as long as the recording.
    pub fn end_at(&mut self, position: u64, out: &mut Vec<u8>) {
        self.take_until(position, out);
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests;
