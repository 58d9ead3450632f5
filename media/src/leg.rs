//! One side of a relayed call, sans-IO: where its party is (signalled and
//! latched), what it receives (direction, telephone-event payload type),
//! and what arrived from it (RFC 3550 loss and jitter, foreign sources).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::sdp::Direction;

mod reception;
use reception::Reception;

/// How long a `learn` leg keeps looking for a better source after its
/// first packet before it locks (rtpengine's learning phase is alike).
pub const LEARNING_WINDOW: Duration = Duration::from_secs(3);

/// Which sources a leg may latch to (`media.latch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatchPolicy {
    /// The default, as rtpengine does it: the first source is taken (a
    /// phone behind a NAT sends from an address its SDP does not name);
    /// for [`LEARNING_WINDOW`] after that a source closer to the SDP
    /// (same IP, then the exact address and port) takes over; then the
    /// leg locks. The exact signalled address and port is taken whenever
    /// it shows up, so a stranger who sent first never keeps the leg once
    /// the party itself sends.
    Learn,
    /// Only a source on the IP address the party's SDP gave (its port may
    /// differ, as behind a NAT); a party behind a NAT that rewrites its
    /// address gets one-way audio.
    SignalledIp,
    /// The first source at all, for the whole call (symmetric RTP for any
    /// NAT; open to RTP injection by whoever sends first).
    Any,
}

/// How well a source matches what the party's SDP said.
fn closeness(signalled: Option<SocketAddr>, source: SocketAddr) -> u8 {
    match signalled {
        Some(s) if s == source => 2,
        Some(s) if s.ip() == source.ip() => 1,
        _ => 0,
    }
}

/// One latch (RTP or RTCP) of a leg: where the party's packets come from.
#[derive(Debug, Clone, Default)]
struct Latch {
    source: Option<SocketAddr>,
    /// Until when a closer source may still take over (`learn`).
    learning_until: Option<Instant>,
}

impl Latch {
    /// Whether a packet from `source` is the party's, latching (or moving
    /// the latch) as `policy` allows.
    fn admit(
        &mut self,
        policy: LatchPolicy,
        signalled: Option<SocketAddr>,
        source: SocketAddr,
        now: Instant,
    ) -> bool {
        if self.source == Some(source) {
            return true;
        }
        match policy {
            LatchPolicy::Any => {
                if self.source.is_none() {
                    self.source = Some(source);
                }
                self.source == Some(source)
            }
            LatchPolicy::SignalledIp => {
                let allowed =
                    self.source.is_none() && signalled.is_some_and(|s| s.ip() == source.ip());
                if allowed {
                    self.source = Some(source);
                }
                allowed
            }
            LatchPolicy::Learn => {
                let take = match self.source {
                    None => true,
                    Some(current) => {
                        let closer = closeness(signalled, source) > closeness(signalled, current);
                        let exact = signalled == Some(source);
                        exact || (closer && self.learning_until.is_some_and(|t| now < t))
                    }
                };
                if take {
                    if self.source.is_none() {
                        self.learning_until = now.checked_add(LEARNING_WINDOW);
                    }
                    self.source = Some(source);
                }
                take
            }
        }
    }
}

/// What a party's SDP said about where and how it takes media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Its RTP address, `None` before it sent SDP or while on `c=0.0.0.0`.
    pub rtp: Option<SocketAddr>,
    /// Its RTCP address.
    pub rtcp: Option<SocketAddr>,
    /// Its direction.
    pub direction: Direction,
    /// The payload type it takes telephone-events on.
    pub telephone_event: Option<u8>,
    /// The G.711 codec agreed with it, once known (prompts use it).
    pub codec: Option<crate::sdp::Codec>,
}

impl Peer {
    /// A party we know nothing of yet: nothing is sent to it or taken from it.
    pub const UNKNOWN: Peer = Peer {
        rtp: None,
        rtcp: None,
        direction: Direction::SendRecv,
        telephone_event: None,
        codec: None,
    };
}

/// Counters of one leg, as stored on the call record.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LegStats {
    /// RTP packets received from the party (and admitted).
    pub packets_received: u64,
    /// Their bytes (RTP header and payload).
    pub bytes_received: u64,
    /// RTP packets sent to the party.
    pub packets_sent: u64,
    /// Their bytes.
    pub bytes_sent: u64,
    /// Packets lost on the way from the party (RFC 3550 A.3).
    pub lost: u64,
    /// Interarrival jitter of the party's stream in ms (RFC 3550 A.8).
    pub jitter_ms: f64,
    /// Packets from a source other than the latched one, dropped.
    pub dropped_foreign: u64,
    /// Datagrams that were not RTP version 2, dropped.
    pub dropped_malformed: u64,
    /// RTCP packets received from the party.
    pub rtcp_received: u64,
    /// SRTP and SRTCP packets from the party's address that failed
    /// authentication or replayed one already seen, dropped.
    pub srtp_refused: u64,
    /// Of `packets_received`, those the kernel fast path forwarded
    /// (`media.fast_path`); jitter is measured on the others only.
    pub kernel_forwarded: u64,
}

/// One side of the bridge.
#[derive(Debug, Clone)]
pub struct Leg {
    peer: Peer,
    policy: LatchPolicy,
    /// When not empty, the only networks the party's media may come from
    /// (a trunk's media range, e.g. Twilio's 168.86.128.0/18).
    allowed: Vec<IpNet>,
    rtp_latch: Latch,
    rtcp_latch: Latch,
    reception: Reception,
    stats: LegStats,
    last_received: Option<Instant>,
}

impl Leg {
    /// A leg whose party is not known yet.
    pub fn new(policy: LatchPolicy) -> Self {
        Leg {
            peer: Peer::UNKNOWN,
            policy,
            allowed: Vec::new(),
            rtp_latch: Latch::default(),
            rtcp_latch: Latch::default(),
            reception: Reception::default(),
            stats: LegStats::default(),
            last_received: None,
        }
    }

    /// Admits media only from these networks (none: from anywhere).
    pub fn restrict_sources(&mut self, allowed: Vec<IpNet>) {
        self.allowed = allowed;
    }

    /// What the party's latest SDP said. A new address drops the latch,
    /// so media follows a re-INVITE that moved it.
    pub fn set_peer(&mut self, peer: Peer) {
        if peer.rtp != self.peer.rtp {
            self.rtp_latch = Latch::default();
            self.rtcp_latch = Latch::default();
        }
        self.peer = peer;
    }

    fn source_allowed(&self, ip: IpAddr) -> bool {
        self.allowed.is_empty() || self.allowed.iter().any(|net| net.contains(&ip))
    }

    /// The party's SDP as last set.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The counters so far.
    pub fn stats(&self) -> LegStats {
        LegStats {
            lost: self.reception.lost(),
            jitter_ms: self.reception.jitter_ms(),
            ..self.stats
        }
    }

    /// When RTP last arrived from the party.
    pub fn last_received(&self) -> Option<Instant> {
        self.last_received
    }

    /// Whether an RTP packet from `source` comes from this leg's party,
    /// latching to it as the policy allows; a foreign one is counted.
    pub fn admit_rtp(&mut self, source: SocketAddr, now: Instant) -> bool {
        let admitted = self.source_allowed(source.ip())
            && self
                .rtp_latch
                .admit(self.policy, self.peer.rtp, source, now);
        if !admitted {
            self.stats.dropped_foreign += 1;
        }
        admitted
    }

    /// The same for RTCP (latched separately: its port is its own).
    pub fn admit_rtcp(&mut self, source: SocketAddr, now: Instant) -> bool {
        let signalled = self.peer.rtcp.or(self.peer.rtp);
        let admitted = self.source_allowed(source.ip())
            && self.rtcp_latch.admit(self.policy, signalled, source, now);
        if admitted {
            self.stats.rtcp_received += 1;
        } else {
            self.stats.dropped_foreign += 1;
        }
        admitted
    }

    /// Counts an admitted RTP packet. `arrival` is the arrival time in
    /// 8 kHz units on any fixed origin; `audio` is false for events, whose
    /// timestamps do not advance and so say nothing about jitter.
    pub fn on_rtp_received(
        &mut self,
        header: RtpHeader,
        len: usize,
        arrival: u32,
        audio: bool,
        now: Instant,
    ) {
        self.stats.packets_received += 1;
        self.stats.bytes_received += len as u64;
        self.last_received = Some(now);
        self.reception.on_packet(
            header.ssrc,
            header.sequence,
            header.timestamp,
            arrival,
            audio,
        );
    }

    /// The source RTP is latched to. Another source can take the latch
    /// only through a packet of its own, which the kernel fast path never
    /// takes (its route names this source), so the thread sees it.
    pub fn latched_rtp_source(&self) -> Option<SocketAddr> {
        self.rtp_latch.source
    }

    /// The SSRC of the party's stream as last received.
    pub fn receiving_ssrc(&self) -> Option<u32> {
        self.reception.ssrc()
    }

    /// Counts what the kernel fast path forwarded from the party:
    /// `packets` of `bytes`, the last (sequence number `last_seq` as the
    /// party sent it) at `last_at`. Jitter is not measured on them.
    pub fn fold_received(&mut self, packets: u64, bytes: u64, last_seq: u16, last_at: Instant) {
        if packets == 0 {
            return;
        }
        self.stats.packets_received += packets;
        self.stats.bytes_received += bytes;
        self.stats.kernel_forwarded += packets;
        self.last_received = Some(self.last_received.map_or(last_at, |t| t.max(last_at)));
        self.reception.fold(packets, last_seq);
    }

    /// Counts what the kernel fast path sent to the party.
    pub fn fold_sent(&mut self, packets: u64, bytes: u64) {
        self.stats.packets_sent += packets;
        self.stats.bytes_sent += bytes;
    }

    /// Counts a datagram that was not RTP.
    pub fn on_malformed(&mut self) {
        self.stats.dropped_malformed += 1;
    }

    /// Counts an SRTP or SRTCP packet refused (forged, tampered, replayed).
    pub fn on_srtp_refused(&mut self) {
        self.stats.srtp_refused += 1;
    }

    /// Where RTP for the party goes: the latched source, else the signalled
    /// address.
    pub fn rtp_target(&self) -> Option<SocketAddr> {
        self.rtp_latch.source.or(self.peer.rtp)
    }

    /// Where RTCP for the party goes.
    pub fn rtcp_target(&self) -> Option<SocketAddr> {
        self.rtcp_latch.source.or(self.peer.rtcp)
    }

    /// Counts a packet sent to the party.
    pub fn on_sent(&mut self, len: usize) {
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += len as u64;
    }
}

/// The fixed RTP header fields the relay reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Payload type (marker bit removed).
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// Timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Where the payload starts.
    pub payload_offset: usize,
}

impl RtpHeader {
    /// Reads an RTP version 2 header (zero-copy, via `rtp-rs`).
    pub fn read(packet: &[u8]) -> Option<RtpHeader> {
        let reader = rtp_rs::RtpReader::new(packet).ok()?;
        Some(RtpHeader {
            payload_type: reader.payload_type(),
            sequence: reader.sequence_number().into(),
            timestamp: reader.timestamp(),
            ssrc: reader.ssrc(),
            payload_offset: reader.payload_offset(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn header(seq: u16, timestamp: u32) -> RtpHeader {
        RtpHeader {
            payload_type: 0,
            sequence: seq,
            timestamp,
            ssrc: 7,
            payload_offset: 12,
        }
    }

    fn peer(rtp: &str) -> Peer {
        Peer {
            rtp: Some(rtp.parse().unwrap()),
            rtcp: None,
            ..Peer::UNKNOWN
        }
    }

    fn at(now: Instant, ms: u64) -> Instant {
        now + Duration::from_millis(ms)
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn latching_to_the_signalled_ip_only() {
        let now = Instant::now();
        let mut leg = Leg::new(LatchPolicy::SignalledIp);
        leg.set_peer(peer("192.0.2.10:4000"));
        assert_eq!(leg.rtp_target(), Some(addr("192.0.2.10:4000")));
        // Another IP first: refused and counted, no latch.
        assert!(!leg.admit_rtp(addr("198.51.100.1:4000"), now));
        // The signalled IP from another port (a NAT): latched.
        assert!(leg.admit_rtp(addr("192.0.2.10:5555"), now));
        assert_eq!(leg.rtp_target(), Some(addr("192.0.2.10:5555")));
        // After latching, even the signalled port is foreign.
        assert!(!leg.admit_rtp(addr("192.0.2.10:4000"), now));
        assert_eq!(leg.stats().dropped_foreign, 2);
        // A re-INVITE to a new address drops the latch.
        leg.set_peer(peer("192.0.2.20:4000"));
        assert_eq!(leg.rtp_target(), Some(addr("192.0.2.20:4000")));
        assert!(leg.admit_rtp(addr("192.0.2.20:4000"), now));
    }

    #[test]
    fn latching_to_any_source_takes_the_first() {
        let now = Instant::now();
        let mut leg = Leg::new(LatchPolicy::Any);
        leg.set_peer(peer("192.0.2.10:4000"));
        assert!(leg.admit_rtp(addr("198.51.100.1:9"), now));
        assert!(!leg.admit_rtp(addr("192.0.2.10:4000"), now));
        // Nothing signalled and the policy is strict: nothing admitted.
        let mut strict = Leg::new(LatchPolicy::SignalledIp);
        assert!(!strict.admit_rtp(addr("192.0.2.10:4000"), now));
        assert_eq!(strict.rtp_target(), None);
    }

    #[test]
    fn learning_takes_a_natted_party_that_never_sends_from_its_sdp_address() {
        // Linphone behind a NAT: SDP says its LAN address, packets come
        // from the router's public one. Both ways work.
        let now = Instant::now();
        let mut leg = Leg::new(LatchPolicy::Learn);
        leg.set_peer(peer("192.168.1.5:7078"));
        assert!(leg.admit_rtp(addr("203.0.113.7:40000"), now));
        assert_eq!(leg.rtp_target(), Some(addr("203.0.113.7:40000")));
        assert!(leg.admit_rtp(addr("203.0.113.7:40000"), at(now, 20_000)));
        assert_eq!(leg.stats().dropped_foreign, 0);
    }

    #[test]
    fn learning_prefers_the_signalled_port_whenever_it_shows_up() {
        let now = Instant::now();
        let mut leg = Leg::new(LatchPolicy::Learn);
        leg.set_peer(peer("192.0.2.10:4000"));
        // Another port on the signalled IP sends first and is taken ...
        assert!(leg.admit_rtp(addr("192.0.2.10:5555"), now));
        // ... until the exact signalled address sends, even after the
        // window: it keeps the leg from then on.
        assert!(leg.admit_rtp(addr("192.0.2.10:4000"), at(now, 10_000)));
        assert_eq!(leg.rtp_target(), Some(addr("192.0.2.10:4000")));
        assert!(!leg.admit_rtp(addr("192.0.2.10:5555"), at(now, 10_020)));
    }

    #[test]
    fn learning_moves_to_a_closer_source_only_within_the_window_then_locks() {
        let now = Instant::now();
        let mut leg = Leg::new(LatchPolicy::Learn);
        leg.set_peer(peer("192.0.2.10:4000"));
        // A stranger first; the signalled IP (another port) wins within
        // the window.
        assert!(leg.admit_rtp(addr("198.51.100.1:9"), now));
        assert!(leg.admit_rtp(addr("192.0.2.10:6000"), at(now, 1_000)));
        assert!(!leg.admit_rtp(addr("198.51.100.1:9"), at(now, 1_020)));
        // Locked once the window is over: a stranger, or another port on
        // the same IP, never takes it.
        let mut locked = Leg::new(LatchPolicy::Learn);
        locked.set_peer(peer("192.0.2.10:4000"));
        assert!(locked.admit_rtp(addr("198.51.100.1:9"), now));
        assert!(!locked.admit_rtp(addr("192.0.2.10:6000"), at(now, 3_001)));
        assert!(!locked.admit_rtp(addr("198.51.100.2:9"), at(now, 3_001)));
        assert_eq!(locked.rtp_target(), Some(addr("198.51.100.1:9")));
    }

    #[test]
    fn an_intruder_never_takes_a_leg_from_its_party() {
        let now = Instant::now();
        let mut leg = Leg::new(LatchPolicy::Learn);
        leg.set_peer(peer("192.0.2.10:4000"));
        for i in 0..500u64 {
            // The party sends every 20 ms from its signalled address; an
            // intruder sprays packets in between, inside and after the
            // learning window.
            assert!(leg.admit_rtp(addr("192.0.2.10:4000"), at(now, i * 20)));
            assert!(!leg.admit_rtp(addr("198.51.100.66:4000"), at(now, i * 20 + 10)));
            assert!(!leg.admit_rtp(addr("192.0.2.10:4002"), at(now, i * 20 + 15)));
        }
        assert_eq!(leg.rtp_target(), Some(addr("192.0.2.10:4000")));
        assert_eq!(leg.stats().dropped_foreign, 1000);
    }

    #[test]
    fn a_trunk_media_range_is_the_only_source_allowed() {
        let now = Instant::now();
        let mut leg = Leg::new(LatchPolicy::Learn);
        leg.restrict_sources(vec!["168.86.128.0/18".parse().unwrap()]);
        leg.set_peer(peer("168.86.140.1:12000"));
        // Outside Twilio's range: refused even as the first source.
        assert!(!leg.admit_rtp(addr("198.51.100.1:12000"), now));
        assert!(leg.admit_rtp(addr("168.86.140.9:13000"), now));
        assert!(leg.admit_rtcp(addr("168.86.140.9:13001"), now));
        assert!(!leg.admit_rtcp(addr("198.51.100.1:12001"), now));
        assert_eq!(leg.stats().dropped_foreign, 2);
    }

    #[test]
    fn packets_the_kernel_forwarded_count_as_received_across_wraps() {
        let now = Instant::now();
        // (first sequence number the thread saw, packets the kernel
        // forwarded, the last one's number, loss, then the next packet the
        // thread sees and loss after it)
        let cases: [(u16, u64, u16, u64, u16, u64); 6] = [
            (100, 50, 150, 0, 151, 0),
            (100, 45, 150, 5, 151, 5),
            (65530, 10, 4, 0, 5, 0),
            // More than a cycle between two folds.
            (
                0,
                200_000,
                (200_000 % 65536) as u16,
                0,
                (200_001 % 65536) as u16,
                0,
            ),
            (
                0,
                200_000 - 7,
                (200_000 % 65536) as u16,
                7,
                (200_001 % 65536) as u16,
                7,
            ),
            // The only packet forwarded was a late one.
            (100, 1, 98, 0, 101, 0),
        ];
        for (first, count, last, lost, next, lost_after) in cases {
            let mut leg = Leg::new(LatchPolicy::Any);
            leg.on_rtp_received(header(first, 0), 172, 0, true, now);
            leg.fold_received(count, count * 172, last, now + Duration::from_secs(1));
            let stats = leg.stats();
            assert_eq!(stats.packets_received, 1 + count, "{first} {count} {last}");
            assert_eq!(stats.kernel_forwarded, count);
            assert_eq!(stats.bytes_received, 172 * (1 + count));
            assert_eq!(stats.lost, lost, "{first} {count} {last}");
            assert_eq!(leg.last_received(), Some(now + Duration::from_secs(1)));
            leg.on_rtp_received(header(next, 0), 172, 0, true, now);
            assert_eq!(
                leg.stats().lost,
                lost_after,
                "{first} {count} {last} then {next}"
            );
        }
        // Nothing forwarded changes nothing.
        let mut leg = Leg::new(LatchPolicy::Any);
        leg.on_rtp_received(header(7, 0), 172, 0, true, now);
        leg.fold_received(0, 0, 9, now + Duration::from_secs(5));
        assert_eq!(leg.stats().packets_received, 1);
        assert_eq!(leg.last_received(), Some(now));
    }

    #[test]
    fn loss_counts_gaps_across_wraparound_and_source_changes() {
        let mut leg = Leg::new(LatchPolicy::Any);
        let now = Instant::now();
        for seq in [65533u16, 65534, 65535, 1, 2, 5] {
            leg.on_rtp_received(header(seq, 0), 172, 0, false, now);
        }
        // Missing: 0, 3, 4.
        assert_eq!(leg.stats().lost, 3);
        assert_eq!(leg.stats().packets_received, 6);
        // A duplicate and a late packet do not make loss negative.
        leg.on_rtp_received(header(5, 0), 172, 0, false, now);
        leg.on_rtp_received(header(3, 0), 172, 0, false, now);
        assert_eq!(leg.stats().lost, 1);
        // A new SSRC keeps the old loss and starts again.
        let mut new_source = header(100, 0);
        new_source.ssrc = 8;
        leg.on_rtp_received(new_source, 172, 0, false, now);
        new_source.sequence = 102;
        leg.on_rtp_received(new_source, 172, 0, false, now);
        assert_eq!(leg.stats().lost, 2);
    }

    #[test]
    fn jitter_follows_rfc3550() {
        let now = Instant::now();
        // Perfect pacing: 160 timestamp units apart, arriving 160 apart.
        let mut steady = Leg::new(LatchPolicy::Any);
        for i in 0..50u32 {
            steady.on_rtp_received(header(i as u16, i * 160), 172, 1000 + i * 160, true, now);
        }
        assert_eq!(steady.stats().jitter_ms, 0.0);
        // Alternating 10 ms early/late (80 units): J converges towards 80
        // units (10 ms); after 200 packets it is within 1 % of it.
        let mut shaky = Leg::new(LatchPolicy::Any);
        for i in 0..200u32 {
            let wobble = if i % 2 == 0 { 0 } else { 80 };
            shaky.on_rtp_received(
                header(i as u16, i * 160),
                172,
                1000 + i * 160 + wobble,
                true,
                now,
            );
        }
        let jitter = shaky.stats().jitter_ms;
        assert!((9.9..=10.0).contains(&jitter), "{jitter}");
    }

    #[test]
    fn rtp_headers_are_read_and_garbage_refused() {
        let mut packet = [0u8; 172];
        packet[0] = 0x80;
        packet[1] = 0x80 | 8; // marker + PCMA
        packet[2..4].copy_from_slice(&513u16.to_be_bytes());
        packet[4..8].copy_from_slice(&160_000u32.to_be_bytes());
        packet[8..12].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        let header = RtpHeader::read(&packet).unwrap();
        assert_eq!(
            (
                header.payload_type,
                header.sequence,
                header.timestamp,
                header.ssrc,
                header.payload_offset
            ),
            (8, 513, 160_000, 0xdead_beef, 12)
        );
        assert_eq!(RtpHeader::read(&packet[..8]), None);
        packet[0] = 0x40; // version 1
        assert_eq!(RtpHeader::read(&packet), None);
    }
}
