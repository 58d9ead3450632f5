//! The relay's per-packet path allocates nothing, with SRTP on both legs:
//! a counting allocator sees no allocation while a warmed-up call relays
//! packets both ways (decrypting, forwarding, re-encrypting each one).

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::net::UdpSocket;
use std::time::Duration;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tollbridge_media::bridge::Side;
use tollbridge_media::leg::{LatchPolicy, Peer};
use tollbridge_media::ports::PortPool;
use tollbridge_media::relay::{LegSrtp, Relay};
use tollbridge_media::sdp::{Codec, Direction};
use tollbridge_media::srtp::{MasterKey, Protector, Suite, Unprotector};

/// Counts every allocation of the process (`stats_alloc`: the counting is
/// its, so no unsafe code here).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn party() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    socket
}

fn peer(socket: &UdpSocket) -> Peer {
    Peer {
        rtp: Some(socket.local_addr().unwrap()),
        rtcp: None,
        direction: Direction::SendRecv,
        telephone_event: Some(101),
        codec: Some(Codec::Pcmu),
    }
}

/// One SRTP leg's keys: the party's contexts and the relay's.
fn leg() -> ((Protector, Unprotector), LegSrtp) {
    let suite = Suite::AesCm128HmacSha1_80;
    let (theirs, ours) = (
        MasterKey::generate().unwrap(),
        MasterKey::generate().unwrap(),
    );
    (
        (
            Protector::new(suite, &theirs),
            Unprotector::new(suite, &ours),
        ),
        LegSrtp {
            receive: Some(Unprotector::new(suite, &theirs)),
            send: Some(Protector::new(suite, &ours)),
        },
    )
}

#[test]
fn relaying_srtp_both_ways_allocates_nothing() {
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    let base = (probe.local_addr().unwrap().port() & !1).clamp(20000, 60000);
    drop(probe);
    let pool = PortPool::new(
        "127.0.0.1".parse().unwrap(),
        base,
        base + 19,
        Duration::ZERO,
    );
    let relay = Relay::start(
        pool,
        LatchPolicy::SignalledIp,
        "127.0.0.1".parse().unwrap(),
        1,
    )
    .unwrap();
    let call = relay.open_call().unwrap();
    let (caller, callee) = (party(), party());
    call.set_peer(Side::Caller, peer(&caller));
    call.set_peer(Side::Callee, peer(&callee));
    let ((mut caller_seal, mut caller_open), caller_leg) = leg();
    let ((mut callee_seal, mut callee_open), callee_leg) = leg();
    call.secure(Side::Caller, caller_leg);
    call.secure(Side::Callee, callee_leg);
    let to_caller_leg = call.address(Side::Caller);
    let to_callee_leg = call.address(Side::Callee);
    let mut packet = [0u8; 256];
    let mut received = [0u8; 2048];
    let mut exchange = |seq: u16| {
        for (from, seal, to, target, open) in [
            (
                &caller,
                &mut caller_seal,
                &callee,
                to_caller_leg,
                &mut callee_open,
            ),
            (
                &callee,
                &mut callee_seal,
                &caller,
                to_callee_leg,
                &mut caller_open,
            ),
        ] {
            packet[..12].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
            packet[2..4].copy_from_slice(&seq.to_be_bytes());
            packet[12..172].fill(seq as u8);
            let len = seal.protect_rtp(&mut packet, 172).unwrap();
            from.send_to(&packet[..len], target).unwrap();
            let (got, _) = to.recv_from(&mut received).unwrap();
            let plain = open.unprotect_rtp(&mut received[..got]).unwrap();
            assert_eq!(plain, 172);
            assert!(received[12..172].iter().all(|b| *b == seq as u8));
        }
    };
    // Warm up: the latch, the tasks' buffers, the stream tables.
    for seq in 0..50 {
        exchange(seq);
    }
    let region = Region::new(GLOBAL);
    for seq in 50..550 {
        exchange(seq);
    }
    let change = region.change();
    let allocations = change.allocations + change.reallocations;
    assert_eq!(
        allocations, 0,
        "1,000 SRTP packets relayed (decrypted, forwarded, re-encrypted) with {allocations} allocations"
    );
}
