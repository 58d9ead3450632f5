#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::sdp::Direction;
use crate::stream::{PROMPT_PACKET, PromptMode};

const CALLER: &str = "192.0.2.10:4000";
const CALLEE: &str = "198.51.100.20:6000";

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn peer(rtp: &str, telephone_event: Option<u8>) -> Peer {
    let rtp = addr(rtp);
    Peer {
        rtp: Some(rtp),
        rtcp: Some(SocketAddr::new(rtp.ip(), rtp.port() + 1)),
        direction: Direction::SendRecv,
        telephone_event,
        codec: Some(crate::sdp::Codec::Pcmu),
    }
}

fn bridge(now: Instant) -> Bridge {
    let mut bridge = Bridge::new(LatchPolicy::SignalledIp, now);
    bridge.set_peer(Side::Caller, peer(CALLER, Some(96)));
    bridge.set_peer(Side::Callee, peer(CALLEE, Some(101)));
    bridge
}

fn rtp(payload_type: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x80, payload_type, 0, 0, 0, 0, 0, 160, 0, 0, 0, 1];
    packet[2..4].copy_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}

#[test]
fn audio_goes_to_the_other_party_unchanged() {
    let now = Instant::now();
    let mut bridge = bridge(now);
    let mut packet = rtp(0, 1, &[0xff; 160]);
    let original = packet.clone();
    let verdict = bridge.on_rtp(Side::Caller, addr(CALLER), &mut packet, now);
    assert_eq!(verdict.send_to, Some(addr(CALLEE)));
    assert_eq!(packet, original);
    let verdict = bridge.on_rtp(Side::Callee, addr(CALLEE), &mut rtp(0, 9, &[1; 160]), now);
    assert_eq!(verdict.send_to, Some(addr(CALLER)));
    let caller = bridge.stats(Side::Caller);
    assert_eq!(
        (
            caller.packets_received,
            caller.bytes_received,
            caller.packets_sent
        ),
        (1, 172, 1)
    );
}

#[test]
fn after_latching_a_foreign_source_is_dropped_and_counted() {
    let now = Instant::now();
    let mut bridge = bridge(now);
    let nat = addr("192.0.2.10:4444");
    assert!(
        bridge
            .on_rtp(Side::Caller, nat, &mut rtp(0, 1, &[0; 160]), now)
            .send_to
            .is_some()
    );
    // Someone else, even on the signalled port, bleeds nothing through.
    let verdict = bridge.on_rtp(Side::Caller, addr(CALLER), &mut rtp(0, 2, &[0; 160]), now);
    assert_eq!(verdict.send_to, None);
    let verdict = bridge.on_rtp(
        Side::Caller,
        addr("203.0.113.66:4000"),
        &mut rtp(0, 3, &[0; 160]),
        now,
    );
    assert_eq!(verdict.send_to, None);
    assert_eq!(bridge.stats(Side::Caller).dropped_foreign, 2);
    // Replies to the caller go to the latched NAT address.
    let verdict = bridge.on_rtp(Side::Callee, addr(CALLEE), &mut rtp(0, 1, &[0; 160]), now);
    assert_eq!(verdict.send_to, Some(nat));
}

#[test]
fn telephone_events_are_renumbered_and_keys_reported_once() {
    let now = Instant::now();
    let mut bridge = bridge(now);
    let end_of_7 = [7, 0x8a, 0x03, 0x20];
    let mut packet = rtp(0x80 | 96, 1, &end_of_7);
    let verdict = bridge.on_rtp(Side::Caller, addr(CALLER), &mut packet, now);
    assert_eq!(verdict.send_to, Some(addr(CALLEE)));
    assert_eq!(verdict.key, Some('7'));
    assert_eq!(
        packet[1],
        0x80 | 101,
        "marker kept, payload type the callee's"
    );
    let verdict = bridge.on_rtp(Side::Caller, addr(CALLER), &mut rtp(96, 2, &end_of_7), now);
    assert_eq!(verdict.key, None, "the retransmitted end is the same press");
    // A callee without telephone-event gets no event packets.
    bridge.set_peer(Side::Callee, peer(CALLEE, None));
    let verdict = bridge.on_rtp(
        Side::Caller,
        addr(CALLER),
        &mut rtp(96, 3, &[8, 0x8a, 0, 0]),
        now,
    );
    assert_eq!(verdict.send_to, None);
}

#[test]
fn hold_directions_are_honoured() {
    let now = Instant::now();
    let mut bridge = bridge(now);
    // The caller holds (sendonly): its music goes on, nothing goes to it.
    bridge.set_peer(
        Side::Caller,
        Peer {
            direction: Direction::SendOnly,
            ..peer(CALLER, Some(96))
        },
    );
    assert!(
        bridge
            .on_rtp(Side::Caller, addr(CALLER), &mut rtp(0, 1, &[0; 160]), now)
            .send_to
            .is_some()
    );
    assert!(
        bridge
            .on_rtp(Side::Callee, addr(CALLEE), &mut rtp(0, 1, &[0; 160]), now)
            .send_to
            .is_none()
    );
    // Inactive: nothing either way.
    bridge.set_peer(
        Side::Caller,
        Peer {
            direction: Direction::Inactive,
            ..peer(CALLER, Some(96))
        },
    );
    assert!(
        bridge
            .on_rtp(Side::Caller, addr(CALLER), &mut rtp(0, 2, &[0; 160]), now)
            .send_to
            .is_none()
    );
    // Unhold.
    bridge.set_peer(Side::Caller, peer(CALLER, Some(96)));
    assert!(
        bridge
            .on_rtp(Side::Callee, addr(CALLEE), &mut rtp(0, 2, &[0; 160]), now)
            .send_to
            .is_some()
    );
}

#[test]
fn nothing_is_forwarded_when_forwarding_stops_or_before_the_other_party_is_known() {
    let now = Instant::now();
    let mut early = Bridge::new(LatchPolicy::SignalledIp, now);
    early.set_peer(Side::Caller, peer(CALLER, None));
    assert_eq!(
        early
            .on_rtp(Side::Caller, addr(CALLER), &mut rtp(0, 1, &[0; 160]), now)
            .send_to,
        None
    );
    let mut bridge = bridge(now);
    bridge.forward_until(Some(now));
    assert_eq!(
        bridge
            .on_rtp(Side::Caller, addr(CALLER), &mut rtp(0, 1, &[0; 160]), now)
            .send_to,
        None
    );
    assert_eq!(
        bridge.on_rtcp(Side::Caller, addr("192.0.2.10:4001"), now),
        None
    );
    assert_eq!(
        bridge.stats(Side::Caller).packets_received,
        1,
        "still counted"
    );
}

#[test]
fn rtcp_is_latched_and_forwarded_like_rtp() {
    let now = Instant::now();
    let mut bridge = bridge(now);
    assert_eq!(
        bridge.on_rtcp(Side::Caller, addr("192.0.2.10:4001"), now),
        Some(addr("198.51.100.20:6001"))
    );
    assert_eq!(
        bridge.on_rtcp(Side::Caller, addr("203.0.113.9:4001"), now),
        None
    );
    assert_eq!(bridge.stats(Side::Caller).dropped_foreign, 1);
}

#[test]
fn garbage_datagrams_are_counted_not_forwarded() {
    let now = Instant::now();
    let mut bridge = bridge(now);
    for garbage in [&[][..], &[0x80, 0][..], &[0x00; 40][..]] {
        let mut packet = garbage.to_vec();
        assert_eq!(
            bridge.on_rtp(Side::Caller, addr(CALLER), &mut packet, now),
            DROP
        );
    }
    assert_eq!(bridge.stats(Side::Caller).dropped_malformed, 3);
}

#[test]
fn a_silent_leg_is_reported_once_and_hold_pauses_the_watch() {
    let start = Instant::now();
    let mut bridge = bridge(start);
    let timeout = Duration::from_secs(30);
    bridge.watch(Some(timeout), start);
    let at = |s: u64| start + Duration::from_secs(s);
    // Both talk until 10 s; then the callee goes quiet.
    bridge.on_rtp(
        Side::Caller,
        addr(CALLER),
        &mut rtp(0, 1, &[0; 160]),
        at(35),
    );
    bridge.on_rtp(
        Side::Callee,
        addr(CALLEE),
        &mut rtp(0, 1, &[0; 160]),
        at(10),
    );
    // A stranger's packets on the callee's leg are dropped and counted.
    bridge.on_rtp(
        Side::Callee,
        addr("203.0.113.9:6000"),
        &mut rtp(0, 2, &[0; 160]),
        at(20),
    );
    assert_eq!(bridge.poll_inactivity(at(39)), None);
    assert_eq!(
        bridge.poll_inactivity(at(40)),
        Some(Inactivity {
            side: Side::Callee,
            last_received: Some(at(10)),
            dropped_foreign: 1,
        })
    );
    assert_eq!(bridge.poll_inactivity(at(41)), None, "reported once");
    // On hold nothing is reported, however long.
    let mut held = self::bridge(start);
    held.set_peer(
        Side::Callee,
        Peer {
            direction: Direction::SendOnly,
            ..peer(CALLEE, Some(101))
        },
    );
    held.watch(Some(timeout), start);
    assert_eq!(held.poll_inactivity(at(3600)), None);
    // Back from hold, the full timeout starts again.
    held.set_peer(Side::Callee, peer(CALLEE, Some(101)));
    assert_eq!(held.poll_inactivity(at(3629)), None);
    assert!(held.poll_inactivity(at(3630)).is_some());
}

#[test]
fn forwarding_stops_at_the_cut_by_the_packets_own_time() {
    let now = Instant::now();
    let mut bridge = bridge(now);
    let cut = now + Duration::from_secs(6);
    bridge.forward_until(Some(cut));
    let just_before = cut - Duration::from_millis(1);
    assert!(
        bridge
            .on_rtp(
                Side::Caller,
                addr(CALLER),
                &mut rtp(0, 1, &[0; 160]),
                just_before
            )
            .send_to
            .is_some()
    );
    assert_eq!(
        bridge
            .on_rtp(Side::Caller, addr(CALLER), &mut rtp(0, 2, &[0; 160]), cut)
            .send_to,
        None
    );
    assert_eq!(
        bridge
            .on_rtp(Side::Callee, addr(CALLEE), &mut rtp(0, 1, &[0; 160]), cut)
            .send_to,
        None
    );
    assert_eq!(
        bridge.on_rtcp(Side::Caller, addr("192.0.2.10:4001"), cut),
        None
    );
}

#[test]
fn a_prompt_goes_to_its_party_from_its_leg_and_replaces_the_other_party() {
    let now = Instant::now();
    let mut bridge = bridge(now);
    let prompt = crate::prompt::Prompts::built_in("en")
        .unwrap()
        .get(crate::prompt::PromptName::TimeUp);
    bridge.play(Side::Callee, prompt.clone(), PromptMode::Replace, now);
    assert_eq!(bridge.next_prompt_at(), Some(now));
    let mut out = [0u8; PROMPT_PACKET];
    let (len, target) = bridge
        .poll_prompt(Side::Callee, now, &mut out, &mut [0; FRAME_SAMPLES])
        .unwrap();
    assert_eq!((len, target), (172, addr(CALLEE)));
    assert_eq!(&out[12..], &prompt.encoded(crate::sdp::Codec::Pcmu)[..160]);
    assert_eq!(
        bridge.poll_prompt(Side::Caller, now, &mut out, &mut [0; FRAME_SAMPLES]),
        None,
        "the caller hears no prompt"
    );
    // The caller's audio is not sent to the callee while it plays...
    assert_eq!(
        bridge
            .on_rtp(Side::Caller, addr(CALLER), &mut rtp(0, 1, &[0; 160]), now)
            .send_to,
        None
    );
    // ...but the callee's still reaches the caller.
    assert!(
        bridge
            .on_rtp(Side::Callee, addr(CALLEE), &mut rtp(0, 1, &[0; 160]), now)
            .send_to
            .is_some()
    );
    assert_eq!(
        bridge.stats(Side::Callee).packets_sent,
        1,
        "the prompt frame counts as sent"
    );
    // A party with no agreed codec cannot be played to.
    let mut early = Bridge::new(LatchPolicy::SignalledIp, now);
    early.set_peer(
        Side::Caller,
        Peer {
            codec: None,
            ..peer(CALLER, None)
        },
    );
    early.play(Side::Caller, prompt, PromptMode::Replace, now);
    assert_eq!(early.next_prompt_at(), None);
}

#[test]
fn a_key_pressed_before_the_other_party_was_there_is_never_forwarded() {
    let now = Instant::now();
    let mut bridge = Bridge::new(LatchPolicy::Learn, now);
    bridge.set_peer(Side::Caller, peer(CALLER, Some(96)));
    // `#` ends a PIN while nobody is on the callee's side.
    let event = |seq: u16, timestamp: u32, end: bool| {
        let mut packet = rtp(96, seq, &[11, if end { 0x8a } else { 0x0a }, 0x03, 0x20]);
        packet[4..8].copy_from_slice(&timestamp.to_be_bytes());
        packet
    };
    let start = bridge.on_rtp(Side::Caller, addr(CALLER), &mut event(1, 8000, false), now);
    let end = bridge.on_rtp(Side::Caller, addr(CALLER), &mut event(2, 8000, true), now);
    assert_eq!(
        (start.send_to, end.send_to, end.key),
        (None, None, Some('#'))
    );
    // The expert answers; the retransmitted end packets of that `#` are
    // still ours: not forwarded, not reported again.
    bridge.set_peer(Side::Callee, peer(CALLEE, Some(101)));
    for seq in 3..5 {
        let verdict = bridge.on_rtp(Side::Caller, addr(CALLER), &mut event(seq, 8000, true), now);
        assert_eq!((verdict.send_to, verdict.key), (None, None));
    }
    // A key pressed now is the expert's to hear.
    let verdict = bridge.on_rtp(Side::Caller, addr(CALLER), &mut event(5, 9600, true), now);
    assert_eq!(
        (verdict.send_to, verdict.key),
        (Some(addr(CALLEE)), Some('#'))
    );
    // Audio was never held back.
    let audio = bridge.on_rtp(Side::Caller, addr(CALLER), &mut rtp(0, 6, &[0; 160]), now);
    assert_eq!(audio.send_to, Some(addr(CALLEE)));
}

fn one_frame_prompt() -> Arc<crate::prompt::Prompt> {
    Arc::new(crate::prompt::Prompt::from_samples(
        crate::prompt::PromptName::TimeUp,
        vec![500; FRAME_SAMPLES],
    ))
}

#[test]
fn the_kernel_may_forward_a_direction_only_while_it_needs_nothing_else() {
    let now = Instant::now();
    let mut bridge = bridge(now);
    assert_eq!(
        bridge.offload(Side::Caller, now),
        None,
        "nothing latched yet"
    );
    bridge.on_rtp(Side::Caller, addr(CALLER), &mut rtp(0, 1, &[0; 160]), now);
    let plain = Offload {
        source: addr(CALLER),
        target: addr(CALLEE),
        ssrc: 1,
        rewrite: None,
        event_type: Some(96),
        cut: None,
    };
    assert_eq!(bridge.offload(Side::Caller, now), Some(plain));
    assert_eq!(
        bridge.offload(Side::Callee, now),
        None,
        "the callee sent nothing"
    );

    // On hold: the callee takes nothing.
    let held = Peer {
        direction: Direction::SendOnly,
        ..peer(CALLEE, Some(101))
    };
    bridge.set_peer(Side::Callee, held);
    assert_eq!(bridge.offload(Side::Caller, now), None, "hold");
    bridge.set_peer(Side::Callee, peer(CALLEE, Some(101)));

    // The cut travels with the route, and once past nothing is offloaded.
    let cut = now + Duration::from_secs(10);
    bridge.forward_until(Some(cut));
    assert_eq!(
        bridge.offload(Side::Caller, now),
        Some(Offload {
            cut: Some(cut),
            ..plain
        })
    );
    assert_eq!(bridge.offload(Side::Caller, cut), None, "past the cut");
    bridge.forward_until(None);

    // A prompt to the callee takes the direction back while it plays, and
    // until the thread has mapped the caller's stream onto it.
    bridge.play(Side::Callee, one_frame_prompt(), PromptMode::Replace, now);
    assert_eq!(bridge.offload(Side::Caller, now), None, "a prompt plays");
    let mut out = [0u8; PROMPT_PACKET];
    bridge
        .poll_prompt(Side::Callee, now, &mut out, &mut [0; FRAME_SAMPLES])
        .unwrap();
    assert_eq!(
        bridge.offload(Side::Caller, now),
        None,
        "the talkspurt to mark"
    );
    let mut mapped = rtp(0, 2, &[0; 160]);
    bridge.on_rtp(Side::Caller, addr(CALLER), &mut mapped, now);
    let rewrite = bridge.offload(Side::Caller, now).unwrap().rewrite.unwrap();
    // What the kernel will write for the next packet is what the thread
    // writes.
    let mut next = rtp(0, 3, &[0; 160]);
    bridge.on_rtp(Side::Caller, addr(CALLER), &mut next, now);
    assert_eq!(
        u16::from_be_bytes([next[2], next[3]]),
        3u16.wrapping_add(rewrite.seq_delta)
    );
    assert_eq!(
        u32::from_be_bytes([next[4], next[5], next[6], next[7]]),
        160u32.wrapping_add(rewrite.timestamp_delta)
    );
    assert_eq!(
        u32::from_be_bytes([next[8], next[9], next[10], next[11]]),
        rewrite.ssrc
    );
    // A new SSRC from the caller has no mapping yet: the thread's.
    let mut other_source = rtp(0, 4, &[0; 160]);
    other_source[11] = 2;
    bridge.on_rtp(Side::Caller, addr(CALLER), &mut other_source, now);
    assert_eq!(
        bridge
            .offload(Side::Caller, now)
            .map(|o| (o.ssrc, o.rewrite.is_some())),
        Some((2, true)),
        "mapped once the thread has seen it"
    );
}

#[test]
fn what_the_kernel_forwarded_is_counted_and_a_prompt_continues_it() {
    let now = Instant::now();
    let mut bridge = bridge(now);
    let mut first = rtp(0, 1, &[0; 160]);
    first[4..8].copy_from_slice(&3000u32.to_be_bytes());
    bridge.on_rtp(Side::Caller, addr(CALLER), &mut first, now);
    let offload = bridge.offload(Side::Caller, now).unwrap();
    let last_at = now + Duration::from_millis(200);
    bridge.fold(
        Side::Caller,
        &offload,
        Forwarded {
            packets: 10,
            bytes: 1720,
            last_seq: 11,
            last_timestamp: 3000 + 10 * 160,
            last_at,
        },
    );
    let caller = bridge.stats(Side::Caller);
    let callee = bridge.stats(Side::Callee);
    assert_eq!(
        (
            caller.packets_received,
            caller.kernel_forwarded,
            caller.lost
        ),
        (11, 10, 0)
    );
    assert_eq!((callee.packets_sent, callee.bytes_sent), (11, 11 * 172));
    assert_eq!(bridge.leg(Side::Caller).last_received(), Some(last_at));
    // The prompt's first frame follows the kernel's last packet: next
    // number, the time since it in samples, the same SSRC.
    let at = last_at + Duration::from_millis(20);
    bridge.play(Side::Callee, one_frame_prompt(), PromptMode::Replace, at);
    let mut out = [0u8; PROMPT_PACKET];
    bridge
        .poll_prompt(Side::Callee, at, &mut out, &mut [0; FRAME_SAMPLES])
        .unwrap();
    assert_eq!(u16::from_be_bytes([out[2], out[3]]), 12);
    assert_eq!(
        u32::from_be_bytes([out[4], out[5], out[6], out[7]]),
        3000 + 11 * 160
    );
    assert_eq!(u32::from_be_bytes([out[8], out[9], out[10], out[11]]), 1);
}

#[test]
fn inactivity_is_due_when_the_watch_could_fire_on_what_the_bridge_knows() {
    let now = Instant::now();
    let mut bridge = bridge(now);
    assert!(
        !bridge.inactivity_due(now + Duration::from_secs(60)),
        "not armed"
    );
    bridge.watch(Some(Duration::from_secs(1)), now);
    bridge.on_rtp(Side::Caller, addr(CALLER), &mut rtp(0, 1, &[0; 160]), now);
    assert!(!bridge.inactivity_due(now + Duration::from_millis(900)));
    // The callee never sent: due once the timeout passes since arming.
    assert!(bridge.inactivity_due(now + Duration::from_secs(1)));
    // Due is only a question: the watch still reports what it finds.
    assert!(
        bridge
            .poll_inactivity(now + Duration::from_secs(1))
            .is_some()
    );
}
