//! `relay-bench memory [CALLS...]`: the resident memory the relay keeps
//! per live call. Opens the calls (both parties signalled, as after the
//! answer), waits until each call's thread has taken it, and reads VmRSS
//! before, with the calls open and after they close. The sockets' kernel
//! buffers are not resident memory of the process and are not counted.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tollbridge_media::bridge::Side;
use tollbridge_media::leg::Peer;
use tollbridge_media::relay::{CallMedia, Relay};
use tollbridge_media::sdp::{Codec, Direction};

/// This process's resident memory in KiB.
fn rss_kib() -> u64 {
    super::procfs::rss_kib(std::process::id()).expect("/proc/self/status")
}

/// Where the `index`th idle call's party on `host` is said to be: nobody
/// listens there, the calls are open, not talking.
pub fn idle_party(index: usize, host: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, host], 20_000 + (index % 10_000) as u16))
}

fn peer(rtp: SocketAddr) -> Peer {
    Peer {
        rtp: Some(rtp),
        rtcp: None,
        direction: Direction::SendRecv,
        telephone_event: Some(101),
        codec: Some(Codec::Pcmu),
    }
}

/// Prints the table for each number of calls.
pub fn per_call(runtime: &tokio::runtime::Runtime, relay: &Relay, sizes: &[usize]) {
    println!(
        "| calls | RSS before KiB | with the calls open KiB | per live call KiB | after closing KiB |"
    );
    println!("|---|---|---|---|---|");
    for &calls in sizes {
        let before = rss_kib();
        let media: Vec<CallMedia> = (0..calls)
            .map(|index| {
                let call = relay.open_call().expect("relay ports for the bench");
                call.set_peer(Side::Caller, peer(idle_party(index, 1)));
                call.set_peer(Side::Callee, peer(idle_party(index, 2)));
                call
            })
            .collect();
        for call in &media {
            runtime
                .block_on(call.stats())
                .expect("the call is on its thread");
        }
        let open = rss_kib();
        for call in media {
            runtime.block_on(call.close());
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while relay.pairs_in_use() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let after = rss_kib();
        println!(
            "| {calls} | {before} | {open} | {:.1} | {after} |",
            open.saturating_sub(before) as f64 / calls as f64
        );
    }
}
