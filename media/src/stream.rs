//! What one party receives from the relay, sans-IO: forwarded packets,
//! and prompts played into the same stream.
//!
//! A phone expects one RTP stream: one SSRC, sequence numbers that step by
//! one, timestamps that advance with time. Until a prompt is played the
//! other party's packets pass untouched. A prompt continues the stream the
//! party was hearing (its SSRC, the next sequence number, a timestamp
//! advanced by the time since the last packet), one 20 ms frame at a time;
//! forwarded packets after it are rewritten to continue from its last
//! frame. In `Replace` mode the other party is muted on this leg while the
//! prompt plays; in `Mix` mode the other party's audio is decoded, mixed
//! under the prompt and re-encoded, frame by frame.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::g711;
use crate::leg::RtpHeader;
use crate::prompt::{FRAME_SAMPLES, Prompt};
use crate::sdp::Codec;

/// The 20 ms frame time.
pub const FRAME: Duration = Duration::from_millis(20);

/// RTP header bytes we write for a prompt frame.
const HEADER: usize = 12;

/// The largest packet a prompt frame makes.
pub const PROMPT_PACKET: usize = HEADER + FRAME_SAMPLES;

/// How a prompt meets the other party's audio on this leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptMode {
    /// The other party is muted on this leg while the prompt plays.
    Replace,
    /// The other party is heard under the prompt.
    Mix,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    at: Instant,
}

/// Maps a forwarded source onto the stream the party hears.
#[derive(Debug, Clone, Copy)]
struct Mapping {
    from_ssrc: u32,
    seq_delta: u16,
    timestamp_delta: u32,
    ssrc: u32,
}

/// How forwarded packets of one source are rewritten to continue the
/// stream a prompt left: what the kernel fast path applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    /// Added to the sequence number.
    pub seq_delta: u16,
    /// Added to the timestamp.
    pub timestamp_delta: u32,
    /// The SSRC written.
    pub ssrc: u32,
}

#[derive(Debug, Clone)]
struct Playing {
    prompt: Arc<Prompt>,
    mode: PromptMode,
    codec: Codec,
    payload_type: u8,
    frame: usize,
    next_at: Instant,
    /// The other party's latest frame since the last prompt frame (mix).
    held: Option<[u8; FRAME_SAMPLES]>,
}

/// The stream one party receives.
#[derive(Debug, Clone, Default)]
pub struct OutStream {
    last: Option<Sent>,
    mapping: Option<Mapping>,
    playing: Option<Playing>,
    /// Set once a prompt has been played: from then on forwarded packets
    /// are mapped onto the stream the prompt continued.
    rewriting: bool,
    /// The next forwarded packet starts a talkspurt (marker bit).
    mark_next: bool,
}

/// Samples between two instants at 8 kHz, at least one frame.
fn samples_since(earlier: Instant, now: Instant) -> u32 {
    let samples = now.saturating_duration_since(earlier).as_micros() * 8 / 1000;
    (samples as u32).max(FRAME_SAMPLES as u32)
}

impl OutStream {
    /// Whether a prompt is playing.
    pub fn is_playing(&self) -> bool {
        self.playing.is_some()
    }

    /// When the next prompt frame is due.
    pub fn next_frame_at(&self) -> Option<Instant> {
        self.playing.as_ref().map(|p| p.next_at)
    }

    /// Starts `prompt` (replacing any prompt playing) with the party's
    /// codec and payload type; the first frame is due at once.
    pub fn play(&mut self, prompt: Arc<Prompt>, mode: PromptMode, codec: Codec, now: Instant) {
        self.playing = Some(Playing {
            prompt,
            mode,
            codec,
            payload_type: codec.payload_type(),
            frame: 0,
            next_at: now,
            held: None,
        });
    }

    /// Takes a packet forwarded from the other party, rewriting its header
    /// in place when the stream is being continued. Returns whether to send
    /// it now (false while a prompt plays: replaced, or held for mixing).
    pub fn forward(
        &mut self,
        packet: &mut [u8],
        header: RtpHeader,
        is_audio: bool,
        now: Instant,
    ) -> bool {
        if let Some(playing) = &mut self.playing {
            if playing.mode == PromptMode::Mix
                && is_audio
                && g711::codec_of(header.payload_type) == Some(playing.codec)
                && let Some(payload) =
                    packet.get(header.payload_offset..header.payload_offset + FRAME_SAMPLES)
            {
                let mut frame = [0u8; FRAME_SAMPLES];
                frame.copy_from_slice(payload);
                playing.held = Some(frame);
            }
            return false;
        }
        if self.rewriting {
            let mapping = match self.mapping {
                Some(m) if m.from_ssrc == header.ssrc => m,
                _ => {
                    // A new source, or the first packet after a prompt:
                    // continue from what the party heard last.
                    let (seq, timestamp, ssrc) = match self.last {
                        Some(last) => (
                            last.seq.wrapping_add(1),
                            last.timestamp.wrapping_add(samples_since(last.at, now)),
                            last.ssrc,
                        ),
                        None => (header.sequence, header.timestamp, header.ssrc),
                    };
                    let mapping = Mapping {
                        from_ssrc: header.ssrc,
                        seq_delta: seq.wrapping_sub(header.sequence),
                        timestamp_delta: timestamp.wrapping_sub(header.timestamp),
                        ssrc,
                    };
                    self.mapping = Some(mapping);
                    mapping
                }
            };
            let seq = header.sequence.wrapping_add(mapping.seq_delta);
            let timestamp = header.timestamp.wrapping_add(mapping.timestamp_delta);
            if packet.len() >= HEADER {
                if self.mark_next {
                    packet[1] |= 0x80;
                    self.mark_next = false;
                }
                packet[2..4].copy_from_slice(&seq.to_be_bytes());
                packet[4..8].copy_from_slice(&timestamp.to_be_bytes());
                packet[8..12].copy_from_slice(&mapping.ssrc.to_be_bytes());
            }
            self.last = Some(Sent {
                seq,
                timestamp,
                ssrc: mapping.ssrc,
                at: now,
            });
        } else {
            self.last = Some(Sent {
                seq: header.sequence,
                timestamp: header.timestamp,
                ssrc: header.ssrc,
                at: now,
            });
        }
        true
    }

    /// How packets from `ssrc` may be forwarded without this stream seeing
    /// them: `Some(None)` untouched, `Some(Some(rewrite))` rewritten;
    /// `None` while that needs this stream (a prompt plays, a talkspurt
    /// is to be marked, or the source has no mapping yet).
    pub fn offload(&self, ssrc: u32) -> Option<Option<Rewrite>> {
        if self.playing.is_some() || self.mark_next {
            return None;
        }
        if !self.rewriting {
            return Some(None);
        }
        let mapping = self.mapping.filter(|m| m.from_ssrc == ssrc)?;
        Some(Some(Rewrite {
            seq_delta: mapping.seq_delta,
            timestamp_delta: mapping.timestamp_delta,
            ssrc: mapping.ssrc,
        }))
    }

    /// Takes the last packet forwarded elsewhere (by the kernel), as sent
    /// at `at`: what a prompt continues from.
    pub fn fold(&mut self, seq: u16, timestamp: u32, ssrc: u32, at: Instant) {
        self.last = Some(Sent {
            seq,
            timestamp,
            ssrc,
            at,
        });
    }

    /// Writes the prompt frame due at `now` into `out` and returns its
    /// length; `None` when no frame is due. `fallback_ssrc` names the
    /// stream when the party has heard nothing yet. `prompt_only` gets the
    /// frame's prompt without the other party mixed under it (what a
    /// recording keeps in this party's channel).
    pub fn poll_frame(
        &mut self,
        now: Instant,
        out: &mut [u8; PROMPT_PACKET],
        fallback_ssrc: u32,
        prompt_only: &mut [u8; FRAME_SAMPLES],
    ) -> Option<usize> {
        let playing = self.playing.as_mut()?;
        if now < playing.next_at {
            return None;
        }
        let first = playing.frame == 0;
        let (seq, timestamp, ssrc) = match self.last {
            Some(last) if first => (
                last.seq.wrapping_add(1),
                last.timestamp.wrapping_add(samples_since(last.at, now)),
                last.ssrc,
            ),
            Some(last) => (
                last.seq.wrapping_add(1),
                last.timestamp.wrapping_add(FRAME_SAMPLES as u32),
                last.ssrc,
            ),
            None => (1, 0, fallback_ssrc),
        };
        out[0] = 0x80;
        out[1] = playing.payload_type | if first { 0x80 } else { 0 };
        out[2..4].copy_from_slice(&seq.to_be_bytes());
        out[4..8].copy_from_slice(&timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&ssrc.to_be_bytes());
        let start = playing.frame * FRAME_SAMPLES;
        let encoded = &playing.prompt.encoded(playing.codec)[start..start + FRAME_SAMPLES];
        prompt_only.copy_from_slice(encoded);
        let payload = &mut out[HEADER..];
        match playing.held.take() {
            Some(held) if playing.mode == PromptMode::Mix => {
                let samples = &playing.prompt.samples()[start..start + FRAME_SAMPLES];
                for ((byte, prompt), other) in payload.iter_mut().zip(samples).zip(held) {
                    let mixed = prompt.saturating_add(g711::decode(playing.codec, other));
                    *byte = match playing.codec {
                        Codec::Pcmu => g711::ulaw_encode(mixed),
                        Codec::Pcma => g711::alaw_encode(mixed),
                    };
                }
            }
            _ => payload.copy_from_slice(encoded),
        }
        self.last = Some(Sent {
            seq,
            timestamp,
            ssrc,
            at: now,
        });
        playing.frame += 1;
        playing.next_at += FRAME;
        if playing.frame >= playing.prompt.frames() {
            self.playing = None;
            self.rewriting = true;
            self.mapping = None;
            self.mark_next = true;
        }
        Some(PROMPT_PACKET)
    }
}

#[cfg(test)]
mod tests;
