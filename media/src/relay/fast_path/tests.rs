//! The fast path in the kernel this runs on: needs CAP_BPF and
//! CAP_NET_ADMIN (the suite runs as root), and attaches to `lo`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use super::super::tests::{party, peer, relay_latching, rtp};
use super::*;
use crate::bridge::Side;
use crate::leg::{LatchPolicy, RtpHeader};
use crate::relay::{MediaEvent, Relay};
use crate::stream::PromptMode;

fn fast_relay(policy: LatchPolicy) -> Relay {
    let mut relay = relay_latching(policy);
    let fast_path = FastPath::attach(&["lo".to_owned()]).expect("the fast path loads (as root)");
    relay.use_fast_path(fast_path).unwrap();
    relay
}

/// Waits (two seconds at most: the threads sweep every half second)
/// until the kernel forwards `routes` directions.
async fn kernel_routes(relay: &Relay, routes: usize) {
    for _ in 0..200 {
        if relay.kernel_routes() == routes {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(relay.kernel_routes(), routes, "directions in the kernel");
}

fn receive(socket: &UdpSocket) -> (Vec<u8>, std::net::SocketAddr) {
    let mut buf = [0u8; 2048];
    let (len, source) = socket.recv_from(&mut buf).unwrap();
    (buf[..len].to_vec(), source)
}

fn nothing_arrives(socket: &UdpSocket) -> bool {
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let quiet = socket.recv_from(&mut buf).is_err();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    quiet
}

fn header(packet: &[u8]) -> RtpHeader {
    RtpHeader::read(packet).expect("an RTP packet")
}

/// A call on `relay` whose first packet each way has latched both legs,
/// and the kernel carries both directions; with its two parties.
async fn latched_call(relay: &Relay) -> (crate::relay::CallMedia, UdpSocket, UdpSocket) {
    let call = relay.open_call().unwrap();
    let (caller, callee) = (party(), party());
    call.set_peer(Side::Caller, peer(&caller));
    call.set_peer(Side::Callee, peer(&callee));
    call.stats().await.unwrap();
    caller
        .send_to(&rtp(0, 0, 0), call.address(Side::Caller))
        .unwrap();
    receive(&callee);
    callee
        .send_to(&rtp(0, 0, 0), call.address(Side::Callee))
        .unwrap();
    receive(&caller);
    kernel_routes(relay, 2).await;
    (call, caller, callee)
}

#[tokio::test]
async fn a_settled_call_is_forwarded_by_the_kernel_and_counted_by_its_thread() {
    let relay = fast_relay(LatchPolicy::SignalledIp);
    // The first packets latch both legs on the thread.
    let (mut call, caller, callee) = latched_call(&relay).await;

    for seq in 1..=50u16 {
        let packet = rtp(0, seq, seq as u8);
        caller.send_to(&packet, call.address(Side::Caller)).unwrap();
        let (got, from) = receive(&callee);
        assert_eq!(got, packet, "untouched");
        assert_eq!(from, call.address(Side::Callee), "from the callee's leg");
        callee.send_to(&packet, call.address(Side::Callee)).unwrap();
        let (got, from) = receive(&caller);
        assert_eq!(got, packet);
        assert_eq!(from, call.address(Side::Caller));
    }
    let stats = call.stats().await.unwrap();
    for leg in [stats.caller, stats.callee] {
        assert_eq!(leg.packets_received, 51);
        assert_eq!(leg.kernel_forwarded, 50, "{leg:?}");
        assert_eq!(leg.bytes_received, 51 * 172);
        assert_eq!(leg.packets_sent, 51);
        assert_eq!(leg.bytes_sent, 51 * 172);
        assert_eq!(
            leg.lost, 0,
            "the thread knows the kernel's sequence numbers"
        );
    }

    // A key press is the thread's: heard, and forwarded by it.
    let mut event = rtp(101, 51, 0);
    event.truncate(12);
    event.extend_from_slice(&[5, 0x80, 0, 160]);
    caller.send_to(&event, call.address(Side::Caller)).unwrap();
    assert_eq!(receive(&callee).0, event);
    let key = tokio::time::timeout(Duration::from_secs(2), call.next_event()).await;
    assert_eq!(key.unwrap(), Some(MediaEvent::Key(Side::Caller, '5')));
    assert_eq!(call.stats().await.unwrap().caller.kernel_forwarded, 50);

    // A prompt to the callee continues the stream the kernel sent it.
    let prompt = std::sync::Arc::new(crate::prompt::Prompt::from_samples(
        crate::prompt::PromptName::TimeUp,
        vec![1000; 5 * 160],
    ));
    call.play(Side::Callee, prompt, PromptMode::Replace);
    for frame in 0..5u16 {
        let (got, _) = receive(&callee);
        assert_eq!(header(&got).sequence, 52 + frame, "after the event's 51");
        assert_eq!(header(&got).ssrc, 1);
    }
    // After it the caller's packets are mapped onto that stream, first by
    // the thread, then by the kernel once the thread installs the mapping.
    caller
        .send_to(&rtp(0, 52, 0), call.address(Side::Caller))
        .unwrap();
    let (first, _) = receive(&callee);
    assert_eq!(header(&first).sequence, 57);
    let timestamp_delta = header(&first).timestamp.wrapping_sub(160);
    kernel_routes(&relay, 2).await;
    let before = call.stats().await.unwrap().caller.kernel_forwarded;
    for seq in 53..63u16 {
        caller
            .send_to(&rtp(0, seq, 7), call.address(Side::Caller))
            .unwrap();
        let (got, _) = receive(&callee);
        assert_eq!(header(&got).sequence, seq + 5);
        assert_eq!(header(&got).timestamp, 160u32.wrapping_add(timestamp_delta));
        assert_eq!(header(&got).ssrc, 1);
        assert_eq!(got[12..], rtp(0, seq, 7)[12..]);
    }
    let stats = call.stats().await.unwrap();
    assert_eq!(
        stats.caller.kernel_forwarded,
        before + 10,
        "mapped in the kernel"
    );
    assert_eq!(stats.caller.lost, 0);

    // The cut holds in the kernel too.
    call.forward_until(Some(Instant::now() + Duration::from_millis(300)));
    call.stats().await.unwrap();
    kernel_routes(&relay, 2).await;
    caller
        .send_to(&rtp(0, 63, 0), call.address(Side::Caller))
        .unwrap();
    assert_eq!(header(&receive(&callee).0).sequence, 68, "before the cut");
    tokio::time::sleep(Duration::from_millis(350)).await;
    caller
        .send_to(&rtp(0, 64, 0), call.address(Side::Caller))
        .unwrap();
    assert!(nothing_arrives(&callee), "nothing after the cut");

    let caller_port = call.address(Side::Caller);
    let stats = call.close().await.unwrap();
    assert_eq!(stats.caller.packets_received, 65);
    kernel_routes(&relay, 0).await;
    caller.send_to(&rtp(0, 65, 0), caller_port).unwrap();
    assert!(nothing_arrives(&callee), "no route outlives its call");
}

#[tokio::test]
async fn a_stranger_is_left_to_the_thread_which_drops_it() {
    let relay = fast_relay(LatchPolicy::SignalledIp);
    let (call, _caller, callee) = latched_call(&relay).await;
    let stranger = party();
    // Same IP (127.0.0.1), another port: SignalledIp keeps the first.
    stranger
        .send_to(&rtp(0, 1, 0x66), call.address(Side::Caller))
        .unwrap();
    assert!(nothing_arrives(&callee));
    let stats = call.stats().await.unwrap();
    assert_eq!(stats.caller.dropped_foreign, 1);
    assert_eq!(relay.kernel_routes(), 2, "the party's routes stay");
    call.close().await.unwrap();
}

#[tokio::test]
async fn an_srtp_or_recorded_call_stays_with_its_thread() {
    let relay = fast_relay(LatchPolicy::SignalledIp);
    let (call, _caller, _callee) = latched_call(&relay).await;
    let dir = tempfile::tempdir().unwrap();
    let recorder = crate::recording::Recorder::start().unwrap();
    let (tap, _outcome) = recorder
        .begin(dir.path().join("call.wav"), Instant::now())
        .unwrap();
    call.record(tap);
    kernel_routes(&relay, 0).await;
    call.stop_recording(Instant::now());
    kernel_routes(&relay, 2).await;
    call.close().await.unwrap();
    kernel_routes(&relay, 0).await;
}

#[test]
fn a_route_is_written_as_the_kernel_program_reads_it() {
    let route = Route {
        from: "10.0.0.1:20000".parse().unwrap(),
        to: "192.0.2.7:4000".parse().unwrap(),
        interface: Some(3),
        deadline_ns: Some(0x0102_0304_0506_0708),
        ssrc: 0xaabb_ccdd,
        rewrite: Some(crate::stream::Rewrite {
            seq_delta: 0x1234,
            timestamp_delta: 0x5566_7788,
            ssrc: 0x0bad_cafe,
        }),
        event_type: Some(101),
    };
    let bytes = route.bytes();
    assert_eq!(&bytes[0..4], &[10, 0, 0, 1]);
    assert_eq!(&bytes[4..8], &[192, 0, 2, 7]);
    assert_eq!(&bytes[8..10], &20000u16.to_be_bytes());
    assert_eq!(&bytes[10..12], &4000u16.to_be_bytes());
    assert_eq!(&bytes[12..16], &3u32.to_ne_bytes());
    assert_eq!(&bytes[16..24], &0x0102_0304_0506_0708u64.to_ne_bytes());
    assert_eq!(&bytes[24..28], &[0xaa, 0xbb, 0xcc, 0xdd]);
    assert_eq!(&bytes[28..32], &[0x0b, 0xad, 0xca, 0xfe]);
    assert_eq!(&bytes[32..36], &0x5566_7788u32.to_ne_bytes());
    assert_eq!(&bytes[36..38], &0x1234u16.to_ne_bytes());
    assert_eq!((bytes[38], bytes[39]), (101, 1));
    assert!(
        bytes[40..].iter().all(|b| *b == 0),
        "counters start at zero"
    );
    let plain = Route {
        rewrite: None,
        event_type: None,
        interface: None,
        deadline_ns: None,
        ..route
    };
    let bytes = plain.bytes();
    assert_eq!(&bytes[28..32], &[0xaa, 0xbb, 0xcc, 0xdd], "the SSRC kept");
    assert_eq!((bytes[38], bytes[39]), (0xff, 0));
    assert_eq!(&bytes[12..24], &[0; 12]);
    let key = Key {
        party: "192.0.2.7:4000".parse().unwrap(),
        leg_port: 20000,
    };
    assert_eq!(key.bytes(), [192, 0, 2, 7, 0x4e, 0x20, 0x0f, 0xa0]);
}

#[test]
fn the_kernel_clock_and_instants_convert_both_ways() {
    let clock = KernelClock::now().unwrap();
    let later = clock.at + Duration::from_millis(1500);
    assert_eq!(clock.ns_of(later), clock.ns + 1_500_000_000);
    assert_eq!(clock.instant_of(clock.ns + 1_500_000_000), later);
    let earlier = clock.at - Duration::from_millis(20);
    assert_eq!(clock.ns_of(earlier), clock.ns - 20_000_000);
    assert_eq!(clock.instant_of(clock.ns - 20_000_000), earlier);
}

#[test]
fn only_a_party_on_this_host_is_delivered_up_the_stack() {
    let lo = std::net::Ipv4Addr::LOCALHOST;
    assert_eq!(egress(lo, lo), Some(None));
    // Loopback cannot reach a party elsewhere, nor the other way round.
    assert_eq!(egress(lo, "192.0.2.7".parse().unwrap()), None);
    assert_eq!(egress("192.0.2.1".parse().unwrap(), lo), None);
    // An address no interface holds gives no interface.
    assert_eq!(
        egress("192.0.2.1".parse().unwrap(), "192.0.2.7".parse().unwrap()),
        None
    );
}

#[tokio::test]
async fn a_party_the_kernel_carries_is_not_silent_and_one_that_stops_is() {
    let relay = fast_relay(LatchPolicy::SignalledIp);
    let (mut call, caller, callee) = latched_call(&relay).await;
    call.watch(Some(Duration::from_millis(1000)));
    // Two seconds of both parties talking through the kernel only: the
    // watch (one second) must hear them.
    for seq in 1..=100u16 {
        caller
            .send_to(&rtp(0, seq, 0), call.address(Side::Caller))
            .unwrap();
        callee
            .send_to(&rtp(0, seq, 0), call.address(Side::Callee))
            .unwrap();
        receive(&callee);
        receive(&caller);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let quiet = tokio::time::timeout(Duration::from_millis(10), call.next_event()).await;
    assert!(quiet.is_err(), "no silence reported: {quiet:?}");
    assert!(call.stats().await.unwrap().caller.kernel_forwarded >= 99);
    // Now the caller stops; the callee goes on.
    let stopped = Instant::now();
    let reported = loop {
        callee
            .send_to(&rtp(0, 0, 0), call.address(Side::Callee))
            .unwrap();
        receive(&caller);
        if let Ok(event) = tokio::time::timeout(Duration::from_millis(20), call.next_event()).await
        {
            break event;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(3),
            "silence never reported"
        );
    };
    let Some(MediaEvent::Inactive(inactivity)) = reported else {
        panic!("{reported:?}");
    };
    assert_eq!(inactivity.side, Side::Caller);
    assert!(
        stopped.elapsed() >= Duration::from_millis(900),
        "{:?}",
        stopped.elapsed()
    );
    call.close().await.unwrap();
}
