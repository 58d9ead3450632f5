#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::sdp::Direction;
use crate::stream::PromptMode;

fn relay() -> Relay {
    relay_latching(LatchPolicy::SignalledIp)
}

pub(super) fn relay_latching(policy: LatchPolicy) -> Relay {
    // An ephemeral-looking range unlikely to collide; busy ports are skipped.
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let base = (probe.local_addr().unwrap().port() & !1).clamp(20000, 60000);
    drop(probe);
    let pool = PortPool::new(
        "127.0.0.1".parse().unwrap(),
        base,
        base + 39,
        std::time::Duration::ZERO,
    );
    // Two threads: every test here runs on a sharded relay.
    Relay::start(pool, policy, "127.0.0.1".parse().unwrap(), 2).unwrap()
}

pub(super) fn peer(socket: &std::net::UdpSocket) -> Peer {
    Peer {
        rtp: Some(socket.local_addr().unwrap()),
        rtcp: None,
        direction: Direction::SendRecv,
        telephone_event: Some(101),
        codec: Some(crate::sdp::Codec::Pcmu),
    }
}

/// A socket on 127.0.0.1 that waits two seconds at most for a datagram.
pub(super) fn party() -> std::net::UdpSocket {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    socket
}

pub(super) fn rtp(payload_type: u8, seq: u16, fill: u8) -> Vec<u8> {
    let mut packet = vec![0x80, payload_type, 0, 0, 0, 0, 0, 160, 0, 0, 0, 1];
    packet[2..4].copy_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&[fill; 160]);
    packet
}

/// Waits (a second at most) until the threads carry `calls`: a closed
/// call's task ends just after it answers the close.
async fn counted(relay: &Relay, calls: [usize; 2]) {
    for _ in 0..100 {
        if relay.calls_per_thread() == calls {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(relay.calls_per_thread(), calls);
}

#[tokio::test]
async fn calls_are_spread_over_the_threads_and_each_relays_on_its_own() {
    let relay = relay();
    let mut calls = Vec::new();
    for _ in 0..6 {
        let call = relay.open_call().unwrap();
        let (caller, callee) = (party(), party());
        call.set_peer(Side::Caller, peer(&caller));
        call.set_peer(Side::Callee, peer(&callee));
        call.stats().await.unwrap();
        calls.push((call, caller, callee));
    }
    assert_eq!(
        relay.calls_per_thread(),
        [3, 3],
        "the least loaded thread each time"
    );
    let threads: Vec<usize> = calls.iter().map(|(call, _, _)| call.thread()).collect();
    assert_eq!(threads, [0, 1, 0, 1, 0, 1]);
    let mut buf = [0u8; 2048];
    for (n, (call, caller, callee)) in calls.iter().enumerate() {
        for seq in 0..3u16 {
            let packet = rtp(0, seq, n as u8);
            caller.send_to(&packet, call.address(Side::Caller)).unwrap();
            let (len, _) = callee.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..len], &packet[..], "call {n}");
            callee.send_to(&packet, call.address(Side::Callee)).unwrap();
            let (len, _) = caller.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..len], &packet[..], "call {n}");
        }
    }
    // Closing one on thread 0 makes thread 0 the next call's.
    let (first, _, _) = calls.remove(0);
    first.close().await.unwrap();
    counted(&relay, [2, 3]).await;
    let next = relay.open_call().unwrap();
    assert_eq!(next.thread(), 0);
    next.close().await.unwrap();
    for (call, _, _) in calls {
        let stats = call.close().await.unwrap();
        assert_eq!(stats.caller.packets_received, 3);
        assert_eq!(stats.callee.packets_received, 3);
    }
    counted(&relay, [0, 0]).await;
    assert_eq!(relay.pairs_in_use(), 0, "every port back");
}

#[tokio::test]
async fn packets_cross_the_relay_both_ways_and_ports_come_back() {
    let relay = relay();
    let mut call = relay.open_call().unwrap();
    assert_eq!(relay.pairs_in_use(), 2);
    let (caller, callee) = (party(), party());
    call.set_peer(Side::Caller, peer(&caller));
    call.set_peer(Side::Callee, peer(&callee));
    // Let the task take the settings before the first packet.
    call.stats().await.unwrap();
    let mut buf = [0u8; 2048];
    for seq in 0..5u16 {
        caller
            .send_to(&rtp(0, seq, 0xaa), call.address(Side::Caller))
            .unwrap();
        let (len, from) = callee.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..len], &rtp(0, seq, 0xaa)[..]);
        assert_eq!(
            from,
            call.address(Side::Callee),
            "sent from the callee's leg port"
        );
        callee
            .send_to(&rtp(0, seq, 0x55), call.address(Side::Callee))
            .unwrap();
        let (len, from) = caller.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..len], &rtp(0, seq, 0x55)[..]);
        assert_eq!(from, call.address(Side::Caller));
    }
    // A key press is reported.
    caller
        .send_to(&rtp(101, 9, 0), call.address(Side::Caller))
        .unwrap();
    let mut end_of_key = rtp(101, 10, 0);
    end_of_key.truncate(12);
    end_of_key.extend_from_slice(&[11, 0x8a, 3, 32]);
    caller
        .send_to(&end_of_key, call.address(Side::Caller))
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(2), call.next_event())
        .await
        .unwrap();
    assert_eq!(event, Some(MediaEvent::Key(Side::Caller, '#')));
    let stats = call.close().await.unwrap();
    assert_eq!(stats.caller.packets_received, 7);
    assert_eq!(stats.callee.packets_received, 5);
    assert_eq!(stats.callee.packets_sent, 7);
    // The task has ended and released both pairs.
    for _ in 0..100 {
        if relay.pairs_in_use() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(relay.pairs_in_use(), 0);
}

/// The remote ports of the UDP sockets bound to local `port` (0 for an
/// unconnected one), from /proc/net/udp.
fn sockets_on(port: u16) -> Vec<u16> {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    let mut remotes: Vec<u16> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace().skip(1);
            let local = fields.next()?;
            let remote = fields.next()?;
            let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            let remote_port = u16::from_str_radix(remote.rsplit(':').next()?, 16).ok()?;
            (local_port == port).then_some(remote_port)
        })
        .collect();
    remotes.sort_unstable();
    remotes
}

/// Sends `packet` from `from` to the relay at `to`, and returns the next
/// datagram `at` receives and where it came from.
fn relayed(
    from: &std::net::UdpSocket,
    to: std::net::SocketAddr,
    packet: &[u8],
    at: &std::net::UdpSocket,
) -> (Vec<u8>, std::net::SocketAddr) {
    from.send_to(packet, to).unwrap();
    let mut buf = [0u8; 2048];
    let (len, source) = at.recv_from(&mut buf).unwrap();
    (buf[..len].to_vec(), source)
}

#[tokio::test]
async fn a_leg_sends_connected_yet_still_hears_every_source() {
    let relay = relay_latching(LatchPolicy::Learn);
    let call = relay.open_call().unwrap();
    let (caller, signalled, nat) = (party(), party(), party());
    call.set_peer(Side::Caller, peer(&caller));
    call.set_peer(Side::Callee, peer(&signalled));
    call.stats().await.unwrap();
    let (to_caller_leg, to_callee_leg) = (call.address(Side::Caller), call.address(Side::Callee));
    let port_of = |socket: &std::net::UdpSocket| socket.local_addr().unwrap().port();

    // The callee's first packets come from an address its SDP did not
    // name (a NAT): the leg latches to it and sends there, connected.
    relayed(&nat, to_callee_leg, &rtp(0, 1, 0x11), &caller);
    assert_eq!(
        relayed(&caller, to_caller_leg, &rtp(0, 1, 0x22), &nat),
        (rtp(0, 1, 0x22), to_callee_leg)
    );
    assert_eq!(sockets_on(to_callee_leg.port()), [0, port_of(&nat)]);
    // Its next packet reaches the connected socket and is relayed.
    let (packet, _) = relayed(&nat, to_callee_leg, &rtp(0, 2, 0x11), &caller);
    assert_eq!(packet, rtp(0, 2, 0x11));

    // The signalled address still reaches the leg and takes it over; the
    // connected socket follows it.
    let (packet, _) = relayed(&signalled, to_callee_leg, &rtp(0, 3, 0x33), &caller);
    assert_eq!(packet, rtp(0, 3, 0x33));
    assert_eq!(
        relayed(&caller, to_caller_leg, &rtp(0, 2, 0x22), &signalled),
        (rtp(0, 2, 0x22), to_callee_leg)
    );
    assert_eq!(sockets_on(to_callee_leg.port()), [0, port_of(&signalled)]);

    // The NAT address is a stranger now: heard, counted, not relayed.
    nat.send_to(&rtp(0, 4, 0x11), to_callee_leg).unwrap();
    let (packet, _) = relayed(&signalled, to_callee_leg, &rtp(0, 4, 0x33), &caller);
    assert_eq!(packet, rtp(0, 4, 0x33), "the stranger's packet is dropped");
    let stats = call.close().await.unwrap();
    assert_eq!(stats.callee.dropped_foreign, 1);
    assert_eq!(stats.callee.packets_received, 4);
    assert_eq!(stats.callee.packets_sent, 2);
    counted(&relay, [0, 0]).await;
    assert_eq!(
        sockets_on(to_callee_leg.port()),
        Vec::<u16>::new(),
        "both sockets closed"
    );
}

#[tokio::test]
async fn a_dropped_call_releases_its_ports_and_silence_is_reported() {
    let relay = relay();
    let mut call = relay.open_call().unwrap();
    call.watch(Some(Duration::from_millis(300)));
    let event = tokio::time::timeout(Duration::from_secs(3), call.next_event())
        .await
        .unwrap();
    assert!(
        matches!(
            event,
            Some(MediaEvent::Inactive(Inactivity {
                last_received: None,
                ..
            }))
        ),
        "{event:?}"
    );
    drop(call);
    for _ in 0..100 {
        if relay.pairs_in_use() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(relay.pairs_in_use(), 0);
}

#[tokio::test]
async fn a_prompt_reaches_its_party_frame_by_frame_and_the_cut_holds() {
    let relay = relay();
    let call = relay.open_call().unwrap();
    let (caller, callee) = (party(), party());
    call.set_peer(Side::Caller, peer(&caller));
    call.set_peer(Side::Callee, peer(&callee));
    let prompt = crate::prompt::Prompts::built_in("en")
        .unwrap()
        .get(crate::prompt::PromptName::TimeUp);
    call.play(Side::Caller, prompt.clone(), PromptMode::Replace);
    let mut buf = [0u8; 2048];
    let started = Instant::now();
    for i in 0..prompt.frames() {
        let (len, from) = caller.recv_from(&mut buf).unwrap();
        assert_eq!(from, call.address(Side::Caller));
        assert_eq!(len, 172);
        assert_eq!(
            &buf[12..len],
            &prompt.encoded(crate::sdp::Codec::Pcmu)[i * 160..(i + 1) * 160],
            "frame {i}"
        );
    }
    // Paced in real time: the frames took about the prompt's length.
    let took = started.elapsed();
    assert!(
        took + Duration::from_millis(100) >= prompt.duration(),
        "{took:?}"
    );
    // Cut forwarding now: the callee's audio no longer reaches the caller.
    call.forward_until(Some(Instant::now()));
    call.stats().await.unwrap();
    callee
        .send_to(&rtp(0, 1, 0x55), call.address(Side::Callee))
        .unwrap();
    caller
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(caller.recv_from(&mut buf).is_err(), "nothing after the cut");
    call.close().await.unwrap();
}

#[tokio::test]
async fn only_ports_given_to_a_party_wait_out_the_quarantine() {
    // Two pairs: one call's worth.
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let base = (probe.local_addr().unwrap().port() & !1).clamp(20000, 60000);
    drop(probe);
    let pool = PortPool::new(
        "127.0.0.1".parse().unwrap(),
        base,
        base + 3,
        Duration::from_secs(60),
    );
    let relay = Relay::start(pool, LatchPolicy::Learn, "127.0.0.1".parse().unwrap(), 2).unwrap();
    // Refused before any SDP went out: the ports come back at once.
    let refused = relay.open_call().unwrap();
    refused.close().await;
    let answered = relay.open_call().expect("unannounced ports are reused");
    // Announced in SDP: held back after the call.
    answered.announce();
    answered.close().await;
    assert_eq!(relay.pairs_in_use(), 0, "closed means released");
    assert!(
        matches!(relay.open_call(), Err(RelayError::Exhausted(_))),
        "announced ports are quarantined"
    );
}

/// Where `needle` starts in `haystack`, if anywhere.
fn find(haystack: &[i16], needle: &[i16]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn a_recorded_call_keeps_each_party_and_the_prompts_it_heard_in_its_channel() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = crate::recording::Recorder::start().unwrap();
    let relay = relay();
    let call = relay.open_call().unwrap();
    let (caller, callee) = (party(), party());
    call.set_peer(Side::Caller, peer(&caller));
    call.set_peer(Side::Callee, peer(&callee));
    let origin = Instant::now();
    let path = dir.path().join("call.wav");
    let (tap, outcome) = recorder.begin(path.clone(), origin).unwrap();
    call.record(tap);
    let prompt = crate::prompt::Prompts::built_in("en")
        .unwrap()
        .get(crate::prompt::PromptName::TimeUp);
    call.play(Side::Caller, prompt.clone(), PromptMode::Replace);
    call.play(Side::Callee, prompt.clone(), PromptMode::Replace);
    let mut buf = [0u8; 2048];
    for _ in 0..prompt.frames() {
        caller.recv_from(&mut buf).unwrap();
        callee.recv_from(&mut buf).unwrap();
    }
    // Then each party says something of its own: ten frames each.
    for seq in 0..10u16 {
        let mut from_caller = rtp(0, seq, 0xaa);
        from_caller[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        caller
            .send_to(&from_caller, call.address(Side::Caller))
            .unwrap();
        let mut from_callee = rtp(0, seq, 0x55);
        from_callee[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        callee
            .send_to(&from_callee, call.address(Side::Callee))
            .unwrap();
        callee.recv_from(&mut buf).unwrap();
        caller.recv_from(&mut buf).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let end = Instant::now();
    call.stop_recording(end);
    let outcome = tokio::time::timeout(Duration::from_secs(5), outcome)
        .await
        .unwrap()
        .unwrap();
    call.close().await.unwrap();
    assert_eq!(outcome.error, None);
    let expected = end.duration_since(origin);
    let diff = outcome.duration.abs_diff(expected);
    assert!(
        diff <= Duration::from_millis(1),
        "{:?} vs {expected:?}",
        outcome.duration
    );
    let samples = crate::recording::tests::channels(&path);
    let left: Vec<i16> = samples.iter().map(|s| s.0).collect();
    let right: Vec<i16> = samples.iter().map(|s| s.1).collect();
    let caller_voice = [crate::g711::ulaw_decode(0xaa); 160];
    let callee_voice = [crate::g711::ulaw_decode(0x55); 160];
    assert!(find(&left, &caller_voice).is_some(), "the caller, left");
    assert!(find(&right, &callee_voice).is_some(), "the expert, right");
    assert!(find(&left, &callee_voice).is_none() && find(&right, &caller_voice).is_none());
    // A loud frame of the prompt, in both channels, before the voices.
    let loud = (0..prompt.frames())
        .max_by_key(|i| {
            prompt.samples()[i * 160..(i + 1) * 160]
                .iter()
                .map(|s| i64::from(*s).abs())
                .sum::<i64>()
        })
        .unwrap();
    let heard: Vec<i16> = prompt.encoded(crate::sdp::Codec::Pcmu)[loud * 160..(loud + 1) * 160]
        .iter()
        .map(|b| crate::g711::ulaw_decode(*b))
        .collect();
    let in_left = find(&left, &heard).expect("the prompt, left");
    let in_right = find(&right, &heard).expect("the prompt, right");
    assert!(in_left < find(&left, &caller_voice).unwrap());
    assert!(in_right < find(&right, &callee_voice).unwrap());
}

#[tokio::test]
async fn an_srtp_leg_is_opened_and_sealed_and_tampered_packets_are_counted() {
    use crate::srtp::{MasterKey, Protector, Suite, Unprotector};
    let relay = relay();
    let call = relay.open_call().unwrap();
    let (caller, callee) = (party(), party());
    call.set_peer(Side::Caller, peer(&caller));
    call.set_peer(Side::Callee, peer(&callee));
    // The caller's key (it encrypts with it) and ours for it.
    let (theirs, ours) = (
        MasterKey::generate().unwrap(),
        MasterKey::generate().unwrap(),
    );
    let suite = Suite::AesCm128HmacSha1_80;
    call.secure(
        Side::Caller,
        LegSrtp {
            receive: Some(Unprotector::new(suite, &theirs)),
            send: Some(Protector::new(suite, &ours)),
        },
    );
    call.stats().await.unwrap();
    let mut caller_sends = Protector::new(suite, &theirs);
    let mut caller_hears = Unprotector::new(suite, &ours);
    let mut buf = [0u8; 2048];
    for seq in 0..5u16 {
        // SRTP from the caller reaches the plain callee decrypted.
        let plain = rtp(0, seq, 0x21);
        let mut sealed = [0u8; 256];
        sealed[..plain.len()].copy_from_slice(&plain);
        let len = caller_sends.protect_rtp(&mut sealed, plain.len()).unwrap();
        assert_ne!(&sealed[12..172], &plain[12..172], "encrypted on the wire");
        caller
            .send_to(&sealed[..len], call.address(Side::Caller))
            .unwrap();
        let (got, _) = callee.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..got], &plain[..], "seq {seq}");
        // Plain RTP from the callee reaches the caller encrypted, with our key.
        let reply = rtp(0, 100 + seq, 0x42);
        callee.send_to(&reply, call.address(Side::Callee)).unwrap();
        let (got, _) = caller.recv_from(&mut buf).unwrap();
        assert_eq!(got, reply.len() + 10);
        let opened = caller_hears.unprotect_rtp(&mut buf[..got]).unwrap();
        assert_eq!(&buf[..opened], &reply[..]);
    }
    // A tampered packet, a replayed one and a plain one go no further.
    let plain = rtp(0, 9, 0x21);
    let mut sealed = [0u8; 256];
    sealed[..plain.len()].copy_from_slice(&plain);
    let len = caller_sends.protect_rtp(&mut sealed, plain.len()).unwrap();
    let mut tampered = sealed[..len].to_vec();
    tampered[40] ^= 1;
    caller
        .send_to(&tampered, call.address(Side::Caller))
        .unwrap();
    caller.send_to(&plain, call.address(Side::Caller)).unwrap();
    caller
        .send_to(&sealed[..len], call.address(Side::Caller))
        .unwrap();
    caller
        .send_to(&sealed[..len], call.address(Side::Caller))
        .unwrap();
    let (got, _) = callee.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..got], &plain[..], "only the genuine packet, once");
    callee
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        callee.recv_from(&mut buf).is_err(),
        "nothing else came through"
    );
    // A prompt to the SRTP caller is sealed too.
    let prompt = crate::prompt::Prompts::built_in("en")
        .unwrap()
        .get(crate::prompt::PromptName::Warning);
    call.play(Side::Caller, prompt, PromptMode::Replace);
    let (got, _) = caller.recv_from(&mut buf).unwrap();
    assert!(caller_hears.unprotect_rtp(&mut buf[..got]).is_ok());
    let stats = call.close().await.unwrap();
    assert_eq!(stats.caller.srtp_refused, 3, "tampered, plain, replayed");
    assert_eq!(stats.caller.packets_received, 6);
    assert_eq!(stats.callee.srtp_refused, 0);
}

/// A socket with a backlog (a turn reads one datagram per socket) is read
/// again on every turn until it is empty, with no new packet to wake it:
/// were it registered edge-triggered, what the first turn left would wait
/// for the party's next packet.
#[test]
fn a_backlog_longer_than_a_turn_is_relayed_without_a_new_packet() {
    let relay = relay();
    let (caller_pair, callee_pair) = {
        let now = Instant::now();
        (
            relay.pool.allocate(now).unwrap(),
            relay.pool.allocate(now).unwrap(),
        )
    };
    let caller_address = caller_pair.rtp_addr().unwrap();
    let callee_port = callee_pair.rtp_addr().unwrap();
    let (caller, callee) = (party(), party());
    // Queued before the thread ever sees the socket: its first readiness
    // finds them all waiting.
    const BACKLOG: u16 = 160;
    for seq in 0..BACKLOG {
        caller.send_to(&rtp(0, seq, 0x11), caller_address).unwrap();
    }
    let (shard, inbox) = shard::ShardLoop::new().unwrap();
    let (events, _events) = futures_channel::mpsc::unbounded();
    let opening = call::Opening {
        id: 7,
        caller: caller_pair,
        callee: callee_pair,
        announced: Arc::new(AtomicBool::new(false)),
        policy: LatchPolicy::SignalledIp,
        events,
        on_shard: call::OnShard::new(&Arc::new(AtomicUsize::new(0))),
    };
    assert!(inbox.send(shard::Message::Open(Box::new(opening))));
    assert!(inbox.send(shard::Message::Control(
        7,
        Control::SetPeer(Side::Caller, peer(&caller))
    )));
    assert!(inbox.send(shard::Message::Control(
        7,
        Control::SetPeer(Side::Callee, peer(&callee))
    )));
    let thread = std::thread::spawn(move || shard.run());
    let mut buf = [0u8; 2048];
    let mut relayed = 0;
    while relayed < BACKLOG {
        let Ok((_, from)) = callee.recv_from(&mut buf) else {
            break;
        };
        assert_eq!(from, callee_port);
        relayed += 1;
    }
    assert_eq!(
        relayed, BACKLOG,
        "every waiting packet, none left for a next edge"
    );
    assert!(inbox.send(shard::Message::Stop));
    thread.join().unwrap();
}
