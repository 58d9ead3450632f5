//! The two legs of a call and the forwarding decision between them,
//! sans-IO: a datagram and `now` in, where to send it (if anywhere) out.
//! The relay thread calls this per packet, so it neither allocates nor
//! locks; the only per-packet writes are the telephone-event payload type
//! and, once a prompt has been played to a party, the header fields that
//! keep that party's stream continuous ([`OutStream`]).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::dtmf::KeyDetector;
use crate::leg::{LatchPolicy, Leg, LegStats, Peer, RtpHeader};
use crate::prompt::{FRAME_SAMPLES, Prompt};
use crate::stream::{OutStream, PROMPT_PACKET, PromptMode, Rewrite};

/// Which party a leg belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The party who called in (through the trunk).
    Caller,
    /// The party we dialled (the expert).
    Callee,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Caller => Side::Callee,
            Side::Callee => Side::Caller,
        }
    }

    /// 0 for the caller, 1 for the callee: its place in per-leg arrays.
    pub fn index(self) -> usize {
        match self {
            Side::Caller => 0,
            Side::Callee => 1,
        }
    }

    /// `"caller"` or `"callee"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Caller => "caller",
            Side::Callee => "callee",
        }
    }
}

/// What to do with one RTP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Send it (possibly rewritten in place) to this address from the
    /// other leg's socket; `None` drops it.
    pub send_to: Option<SocketAddr>,
    /// A DTMF key the packet completed.
    pub key: Option<char>,
    /// The party's G.711 audio, admitted before the cut: what a recording
    /// of the call keeps.
    pub audio: Option<Audio>,
}

/// Where a packet's audio is, for a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Audio {
    /// Its codec.
    pub codec: crate::sdp::Codec,
    /// Its RTP timestamp.
    pub timestamp: u32,
    /// Where its payload starts in the packet.
    pub payload_offset: usize,
    /// Where it ends (before any RTP padding).
    pub payload_end: usize,
}

/// Where a packet's payload ends: before the padding its last byte counts
/// when the padding bit is set.
fn payload_end(packet: &[u8]) -> usize {
    let padded = packet.first().is_some_and(|b| b & 0x20 != 0);
    let padding = if padded {
        packet.last().map_or(0, |n| usize::from(*n))
    } else {
        0
    };
    packet.len().saturating_sub(padding)
}

const DROP: Verdict = Verdict {
    send_to: None,
    key: None,
    audio: None,
};

/// A party that went quiet for the armed timeout, with what the relay
/// knows of why: when its RTP last arrived, and how many packets from
/// other sources were dropped meanwhile (a NAT the latch did not take).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inactivity {
    /// The quiet party.
    pub side: Side,
    /// When its last RTP packet arrived; `None` if none ever did.
    pub last_received: Option<Instant>,
    /// Packets dropped as foreign on its leg since the call started.
    pub dropped_foreign: u64,
}

/// What the kernel fast path may do with one direction's RTP while it
/// needs nothing else ([`Bridge::offload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offload {
    /// The party's latched source: only its datagrams are taken.
    pub source: SocketAddr,
    /// Where they go.
    pub target: SocketAddr,
    /// The one SSRC taken: another starts a new stream here.
    pub ssrc: u32,
    /// How the other party's stream continues after a prompt.
    pub rewrite: Option<Rewrite>,
    /// The party's telephone-event payload type: events stay here, where
    /// keys are heard and payload types renumbered.
    pub event_type: Option<u8>,
    /// The cut: nothing is forwarded from then on.
    pub cut: Option<Instant>,
}

/// What was forwarded elsewhere (by the kernel) under an [`Offload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    /// Packets forwarded.
    pub packets: u64,
    /// Their RTP bytes.
    pub bytes: u64,
    /// The last one's sequence number as sent.
    pub last_seq: u16,
    /// The last one's timestamp as sent.
    pub last_timestamp: u32,
    /// When it was forwarded.
    pub last_at: Instant,
}

/// Both legs of one call.
#[derive(Debug, Clone)]
pub struct Bridge {
    legs: [Leg; 2],
    keys: [KeyDetector; 2],
    forward_until: Option<Instant>,
    streams: [OutStream; 2],
    origin: Instant,
    watch: Option<(Duration, Instant)>,
    /// Per side, the RTP timestamp of a telephone-event that was not
    /// forwarded when it started (PIN entry, before the other party was
    /// there): its later packets stay with us too.
    withheld_event: [Option<u32>; 2],
}

impl Bridge {
    /// A bridge with both parties unknown; `origin` anchors arrival times.
    pub fn new(policy: LatchPolicy, origin: Instant) -> Self {
        Bridge {
            legs: [Leg::new(policy), Leg::new(policy)],
            keys: [KeyDetector::default(), KeyDetector::default()],
            forward_until: None,
            streams: [OutStream::default(), OutStream::default()],
            origin,
            watch: None,
            withheld_event: [None, None],
        }
    }

    /// One leg.
    pub fn leg(&self, side: Side) -> &Leg {
        &self.legs[side.index()]
    }

    /// Sets what a party's SDP said.
    pub fn set_peer(&mut self, side: Side, peer: Peer) {
        self.legs[side.index()].set_peer(peer);
    }

    /// Admits `side`'s media only from these networks (none: anywhere).
    pub fn restrict_sources(&mut self, side: Side, allowed: Vec<ipnet::IpNet>) {
        self.legs[side.index()].restrict_sources(allowed);
    }

    /// Stops forwarding between the legs from `at` on, judged per packet
    /// by the relay's own clock: the cut holds even if no message arrives
    /// in time (or a BYE is lost). `None` lifts it.
    pub fn forward_until(&mut self, at: Option<Instant>) {
        self.forward_until = at;
    }

    /// Plays `prompt` to `side`'s party in its agreed codec; nothing when
    /// no codec was agreed yet.
    pub fn play(&mut self, side: Side, prompt: Arc<Prompt>, mode: PromptMode, now: Instant) {
        if let Some(codec) = self.legs[side.index()].peer().codec {
            self.streams[side.index()].play(prompt, mode, codec, now);
        }
    }

    /// When the next prompt frame is due on either leg.
    pub fn next_prompt_at(&self) -> Option<Instant> {
        match (
            self.streams[0].next_frame_at(),
            self.streams[1].next_frame_at(),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The prompt frame due at `now` for `side`, written into `out`: its
    /// length and where to send it (from `side`'s own socket).
    /// `prompt_only` gets its prompt payload without the other party mixed
    /// in (for a recording).
    pub fn poll_prompt(
        &mut self,
        side: Side,
        now: Instant,
        out: &mut [u8; PROMPT_PACKET],
        prompt_only: &mut [u8; FRAME_SAMPLES],
    ) -> Option<(usize, SocketAddr)> {
        let ssrc = 0x7b1d_0000 | side.index() as u32;
        let len = self.streams[side.index()].poll_frame(now, out, ssrc, prompt_only)?;
        let leg = &mut self.legs[side.index()];
        let target = leg.rtp_target()?;
        leg.on_sent(len);
        Some((len, target))
    }

    /// Arms the inactivity watch: a leg that sends nothing for `timeout`
    /// (while neither party is on hold) is reported. `None` disarms.
    pub fn watch(&mut self, timeout: Option<Duration>, now: Instant) {
        self.watch = timeout.map(|t| (t, now));
    }

    /// Counters for one leg.
    pub fn stats(&self, side: Side) -> LegStats {
        self.legs[side.index()].stats()
    }

    /// Counts an SRTP or SRTCP packet from `side` that the relay refused
    /// before it reached the bridge.
    pub fn on_srtp_refused(&mut self, side: Side) {
        self.legs[side.index()].on_srtp_refused();
    }

    /// Decides about an RTP datagram that arrived on `side`'s socket from
    /// `source`, rewriting its telephone-event payload type in place when
    /// the legs use different numbers.
    pub fn on_rtp(
        &mut self,
        side: Side,
        source: SocketAddr,
        packet: &mut [u8],
        now: Instant,
    ) -> Verdict {
        let [caller, callee] = &mut self.legs;
        let (from, to) = match side {
            Side::Caller => (caller, callee),
            Side::Callee => (callee, caller),
        };
        let Some(header) = RtpHeader::read(packet) else {
            from.on_malformed();
            return DROP;
        };
        if !from.admit_rtp(source, now) {
            return DROP;
        }
        let event_type = from.peer().telephone_event;
        let is_event = event_type == Some(header.payload_type);
        let since = now.saturating_duration_since(self.origin);
        // 8 kHz units, in u64: `as_micros` is u128, and dividing one is a
        // library call per packet.
        let arrival = (since
            .as_secs()
            .wrapping_mul(8000)
            .wrapping_add(u64::from(since.subsec_micros()) / 125)
            & 0xffff_ffff) as u32;
        from.on_rtp_received(header, packet.len(), arrival, !is_event, now);
        let key = if is_event {
            self.keys[side.index()].on_packet(
                header.timestamp,
                packet.get(header.payload_offset..).unwrap_or_default(),
            )
        } else {
            None
        };
        let before_cut = self.forward_until.is_none_or(|until| now < until);
        let audio = crate::g711::codec_of(header.payload_type)
            .filter(|_| before_cut && !is_event)
            .map(|codec| Audio {
                codec,
                timestamp: header.timestamp,
                payload_offset: header.payload_offset,
                payload_end: payload_end(packet).max(header.payload_offset),
            });
        let deliver = before_cut && from.peer().direction.sends() && to.peer().direction.receives();
        let target = to.rtp_target().filter(|_| deliver);
        let send_to = match (target, is_event) {
            (Some(target), false) => Some(target),
            (Some(target), true) => match to.peer().telephone_event {
                Some(theirs) => {
                    if let Some(byte) = packet.get_mut(1) {
                        *byte = (*byte & 0x80) | (theirs & 0x7f);
                    }
                    Some(target)
                }
                // They cannot take events: do not send a payload type
                // they never agreed to.
                None => None,
            },
            (None, _) => None,
        };
        // An event is forwarded whole or not at all: the end packets of a
        // `#` that ended a PIN must not reach an expert who just answered.
        let withheld = &mut self.withheld_event[side.index()];
        let send_to = match (is_event, send_to) {
            (true, _) if *withheld == Some(header.timestamp) => None,
            (true, None) => {
                *withheld = Some(header.timestamp);
                None
            }
            (_, send_to) => send_to,
        };
        let send_to = send_to
            .filter(|_| self.streams[side.other().index()].forward(packet, header, !is_event, now));
        if send_to.is_some() {
            to.on_sent(packet.len());
        }
        Verdict {
            send_to,
            key,
            audio,
        }
    }

    /// What the kernel may forward from `side`'s party to the other while
    /// nothing else is needed: `None` once the cut is past, while a party
    /// is on hold or a prompt plays to the other party, and before the
    /// party's source is latched and its stream seen.
    pub fn offload(&self, side: Side, now: Instant) -> Option<Offload> {
        let from = &self.legs[side.index()];
        let to = &self.legs[side.other().index()];
        let cut_past = self.forward_until.is_some_and(|until| now >= until);
        let flowing = from.peer().direction.sends() && to.peer().direction.receives();
        if cut_past || !flowing {
            return None;
        }
        let ssrc = from.receiving_ssrc()?;
        Some(Offload {
            source: from.latched_rtp_source()?,
            target: to.rtp_target()?,
            ssrc,
            rewrite: self.streams[side.other().index()].offload(ssrc)?,
            event_type: from.peer().telephone_event,
            cut: self.forward_until,
        })
    }

    /// Counts what was forwarded from `side`'s party under `offload`, as
    /// if it had passed here: the legs' counters, the party's last
    /// arrival (the inactivity watch), and the other party's stream (what
    /// a prompt continues from).
    pub fn fold(&mut self, side: Side, offload: &Offload, forwarded: Forwarded) {
        if forwarded.packets == 0 {
            return;
        }
        let (seq_delta, ssrc) = offload
            .rewrite
            .map_or((0, offload.ssrc), |r| (r.seq_delta, r.ssrc));
        let received_seq = forwarded.last_seq.wrapping_sub(seq_delta);
        self.legs[side.index()].fold_received(
            forwarded.packets,
            forwarded.bytes,
            received_seq,
            forwarded.last_at,
        );
        self.legs[side.other().index()].fold_sent(forwarded.packets, forwarded.bytes);
        self.streams[side.other().index()].fold(
            forwarded.last_seq,
            forwarded.last_timestamp,
            ssrc,
            forwarded.last_at,
        );
    }

    /// Decides about an RTCP datagram that arrived on `side`'s RTCP socket.
    pub fn on_rtcp(&mut self, side: Side, source: SocketAddr, now: Instant) -> Option<SocketAddr> {
        let [caller, callee] = &mut self.legs;
        let (from, to) = match side {
            Side::Caller => (caller, callee),
            Side::Callee => (callee, caller),
        };
        let cut = self.forward_until.is_some_and(|until| now >= until);
        if !from.admit_rtcp(source, now) || cut {
            return None;
        }
        to.rtcp_target()
    }

    /// Whether [`Bridge::poll_inactivity`] could report a leg at `now`
    /// from what the bridge knows: with the kernel fast path, the time to
    /// fold in what the kernel forwarded first.
    pub fn inactivity_due(&self, now: Instant) -> bool {
        let Some((timeout, armed)) = self.watch else {
            return false;
        };
        self.legs.iter().any(|leg| {
            let last = leg.last_received().map_or(armed, |t| t.max(armed));
            now.saturating_duration_since(last) >= timeout
        })
    }

    /// The leg that went quiet for the armed timeout, reported once; the
    /// watch pauses while either party's direction is not sendrecv (hold).
    pub fn poll_inactivity(&mut self, now: Instant) -> Option<Inactivity> {
        let (timeout, armed) = self.watch?;
        let on_hold = self
            .legs
            .iter()
            .any(|leg| leg.peer().direction != crate::sdp::Direction::SendRecv);
        if on_hold {
            // Restart the clock so leaving hold gives a full timeout.
            self.watch = Some((timeout, now));
            return None;
        }
        for side in [Side::Caller, Side::Callee] {
            let last = self
                .leg(side)
                .last_received()
                .map_or(armed, |t| t.max(armed));
            if now.saturating_duration_since(last) >= timeout {
                self.watch = None;
                let leg = self.leg(side);
                return Some(Inactivity {
                    side,
                    last_received: leg.last_received(),
                    dropped_foreign: leg.stats().dropped_foreign,
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
