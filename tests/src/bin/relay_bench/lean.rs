//! A lean RTP generator for `relay-bench kernel`: plain threads (one per
//! core by default, `GENERATOR_THREADS`), each owning some of the
//! parties' sockets, one epoll instance, `send_to` when a party's frame is
//! due and one `recv_from` per readable socket. The tokio generator of the
//! other modes spends about 10 µs of the machine per packet on its own;
//! at 2,000 calls (200,000 packets a second each way) that alone fills
//! both cores, and the relay's cost could not be told from the
//! generator's queueing.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::{FRAME, PACKET};

/// One party: its socket and where it sends.
pub struct Party {
    pub socket: UdpSocket,
    pub target: SocketAddr,
}

/// What the parties sent and received, and the one-way latencies.
pub struct Traffic {
    /// Packets due, each sent or refused by the generator's own socket.
    pub sent: u64,
    pub received: u64,
    /// Sorted, in ns.
    pub latencies_ns: Vec<u64>,
    /// Those of packets sent after the first [`SETTLING`], sorted.
    pub settled_ns: Vec<u64>,
}

/// Every call starts in the same 20 ms frame, which a real relay never
/// sees; the latencies after this are the steady state.
pub const SETTLING: Duration = Duration::from_secs(1);

/// How many generator threads: `GENERATOR_THREADS`, else one per core.
pub fn threads() -> usize {
    std::env::var("GENERATOR_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

/// Every party sends a 172-byte packet every 20 ms for `duration` (the
/// parties spread evenly over the frame), and reads what reaches it until
/// half a second after.
pub fn run(parties: Vec<Party>, duration: Duration, threads: usize) -> Traffic {
    let total = parties.len();
    let origin = Instant::now();
    let mut shares: Vec<Vec<(usize, Party)>> = (0..threads).map(|_| Vec::new()).collect();
    for (index, party) in parties.into_iter().enumerate() {
        shares[index % threads].push((index, party));
    }
    let handles: Vec<_> = shares
        .into_iter()
        .enumerate()
        .map(|(n, share)| {
            std::thread::Builder::new()
                .name(format!("bench-gen-{n}"))
                .spawn(move || generate(share, total, origin, duration))
                .unwrap()
        })
        .collect();
    let mut traffic = Traffic {
        sent: 0,
        received: 0,
        latencies_ns: Vec::new(),
        settled_ns: Vec::new(),
    };
    for handle in handles {
        let part = handle.join().unwrap();
        traffic.sent += part.sent;
        traffic.received += part.received;
        traffic.latencies_ns.extend(part.latencies_ns);
        traffic.settled_ns.extend(part.settled_ns);
    }
    traffic.latencies_ns.sort_unstable();
    traffic.settled_ns.sort_unstable();
    traffic
}

fn generate(
    share: Vec<(usize, Party)>,
    total: usize,
    origin: Instant,
    duration: Duration,
) -> Traffic {
    let poll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
    for (slot, (_, party)) in share.iter().enumerate() {
        party.socket.set_nonblocking(true).unwrap();
        poll.add(
            party.socket.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, slot as u64),
        )
        .unwrap();
    }
    // Each party's offset in the frame, in the order they come due.
    let offsets: Vec<Duration> = share
        .iter()
        .map(|(index, _)| FRAME * *index as u32 / total as u32)
        .collect();
    let mut seq = vec![0u16; share.len()];
    let (mut cursor, mut round) = (0usize, 0u32);
    let capacity = share.len() * 50 * (duration.as_secs() as usize + 1);
    let mut traffic = Traffic {
        sent: 0,
        received: 0,
        latencies_ns: Vec::with_capacity(capacity),
        settled_ns: Vec::with_capacity(capacity),
    };
    let settled_from = SETTLING.as_nanos() as u64;
    let mut events = vec![EpollEvent::empty(); 1024];
    let mut packet = [0u8; PACKET];
    let mut buffer = [0u8; 2048];
    let stop_reading = duration + Duration::from_millis(500);
    loop {
        let now = origin.elapsed();
        if now >= stop_reading {
            break;
        }
        // Send whatever is due.
        while now < duration && !share.is_empty() {
            let due = FRAME * round + offsets[cursor];
            if due > now {
                break;
            }
            let party = &share[cursor].1;
            seq[cursor] = seq[cursor].wrapping_add(1);
            packet[0] = 0x80;
            packet[1] = 0;
            packet[2..4].copy_from_slice(&seq[cursor].to_be_bytes());
            packet[4..8].copy_from_slice(&(u32::from(seq[cursor]) * 160).to_be_bytes());
            packet[8..12].copy_from_slice(&(share[cursor].0 as u32).to_be_bytes());
            // The send time rides in the payload, where no relay looks.
            packet[12..20].copy_from_slice(&(origin.elapsed().as_nanos() as u64).to_be_bytes());
            // A send the generator's own socket refuses counts as sent and
            // lost: loss is over every packet the calls should have
            // carried.
            let _ = party.socket.send_to(&packet, party.target);
            traffic.sent += 1;
            cursor += 1;
            if cursor == share.len() {
                cursor = 0;
                round += 1;
            }
        }
        // Wait until the next is due (a millisecond at most), reading.
        let ready = poll
            .wait(&mut events, EpollTimeout::from(1u16))
            .unwrap_or(0);
        for event in events.iter().take(ready) {
            let Some((_, party)) = share.get(event.data() as usize) else {
                continue;
            };
            if let Ok((len, _)) = party.socket.recv_from(&mut buffer)
                && len >= 20
            {
                let mut sent_ns = [0u8; 8];
                sent_ns.copy_from_slice(&buffer[12..20]);
                let sent_ns = u64::from_be_bytes(sent_ns);
                let now_ns = origin.elapsed().as_nanos() as u64;
                traffic.received += 1;
                let latency = now_ns.saturating_sub(sent_ns);
                traffic.latencies_ns.push(latency);
                if sent_ns >= settled_from {
                    traffic.settled_ns.push(latency);
                }
            }
        }
    }
    traffic
}
