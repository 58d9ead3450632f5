//! The relay's port range: an even RTP port and the RTCP port above it per
//! leg (RFC 3550 §11), counted so a leak shows.
//!
//! A port is not handed out again until a while after it was released
//! (`media.port_quarantine`): the parties of the call that had it may go
//! on sending for seconds (a lost BYE, a phone slow to stop), and those
//! packets must not reach the next call's parties. Ports of calls a crash
//! left open are held back the same way ([`PortPool::hold_back`]) until
//! those calls' parties have been hung up, so a restart cannot hand a live
//! stream's port to a new call.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why no pair could be allocated.
#[derive(Debug, thiserror::Error)]
#[error(
    "no free RTP/RTCP port pair in {first}-{last} on {ip} ({in_use} in use, {held_back} held back after recent calls)"
)]
pub struct Exhausted {
    /// The address the relay binds to.
    pub ip: IpAddr,
    /// First port of the range.
    pub first: u16,
    /// Last port of the range.
    pub last: u16,
    /// Pairs handed out.
    pub in_use: usize,
    /// Pairs free but not yet old enough to hand out again.
    pub held_back: usize,
}

/// The configured range on one local address.
#[derive(Debug)]
pub struct PortPool {
    ip: IpAddr,
    first: u16,
    last: u16,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    pairs: u32,
    quarantine: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Where the next search starts (round-robin).
    cursor: u32,
    /// Per pair: handed out now.
    in_use: Vec<bool>,
    /// Per pair: not to be handed out before this instant.
    not_before: Vec<Option<Instant>>,
}

/// One leg's sockets; the pair returns to the pool when this is dropped.
#[derive(Debug)]
pub struct PortPair {
    /// The RTP socket (even port), non-blocking.
    pub rtp: UdpSocket,
    /// The RTCP socket (RTP port + 1), non-blocking.
    pub rtcp: UdpSocket,
    /// Counts the pair as in use until dropped.
    pub guard: PairGuard,
}

impl PortPair {
    /// The local RTP address.
    pub fn rtp_addr(&self) -> std::io::Result<SocketAddr> {
        self.rtp.local_addr()
    }
}

/// Held while a pair is in use; dropping it releases the pair, which then
/// waits out the quarantine before it is handed out again.
#[derive(Debug)]
pub struct PairGuard {
    shared: Arc<Shared>,
    index: usize,
    quarantine: bool,
}

impl PairGuard {
    /// The pair goes back to the pool without the quarantine: for a pair
    /// whose address no party was ever given (a call refused before any
    /// SDP went out), so nobody can be sending to it. Without this a flood
    /// of refused INVITEs would hold the whole range.
    pub fn release_at_once(&mut self) {
        self.quarantine = false;
    }
}

impl Drop for PairGuard {
    fn drop(&mut self) {
        let quarantine = self.shared.quarantine;
        if let Ok(mut state) = self.shared.state.lock() {
            state.in_use[self.index] = false;
            state.not_before[self.index] = if quarantine.is_zero() || !self.quarantine {
                None
            } else {
                Instant::now().checked_add(quarantine)
            };
        }
    }
}

impl PortPool {
    /// A pool over `first..=last` (first even) on `ip`; a released pair is
    /// not handed out again for `quarantine`.
    pub fn new(ip: IpAddr, first: u16, last: u16, quarantine: Duration) -> Self {
        let first = first + first % 2;
        let pairs = u32::from(last).saturating_sub(u32::from(first)).div_ceil(2);
        let slots = usize::try_from(pairs).unwrap_or(0);
        PortPool {
            ip,
            first,
            last,
            shared: Arc::new(Shared {
                pairs,
                quarantine,
                state: Mutex::new(State {
                    cursor: 0,
                    in_use: vec![false; slots],
                    not_before: vec![None; slots],
                }),
            }),
        }
    }

    /// Pairs currently handed out.
    pub fn in_use(&self) -> usize {
        self.shared
            .state
            .lock()
            .map(|state| state.in_use.iter().filter(|used| **used).count())
            .unwrap_or(0)
    }

    /// Pairs the range holds.
    pub fn capacity(&self) -> u32 {
        self.shared.pairs
    }

    /// The pair index of an RTP port of this range.
    fn index_of(&self, rtp_port: u16) -> Option<usize> {
        let offset = rtp_port.checked_sub(self.first)?;
        let index = u32::from(offset / 2);
        (offset % 2 == 0 && index < self.shared.pairs)
            .then(|| usize::try_from(index).ok())
            .flatten()
    }

    /// Keeps the pairs of these RTP ports from being handed out before
    /// `until` (whatever held them before); ports outside the range are
    /// ignored. Used for the ports of calls a crash left open.
    pub fn hold_back(&self, rtp_ports: &[u16], until: Instant) {
        let Ok(mut state) = self.shared.state.lock() else {
            return;
        };
        for index in rtp_ports.iter().filter_map(|port| self.index_of(*port)) {
            state.not_before[index] = Some(until);
        }
    }

    /// Binds the next pair after the last one handed out that is neither
    /// in use, nor held back at `now`, nor held by another process.
    pub fn allocate(&self, now: Instant) -> Result<PortPair, Exhausted> {
        let Ok(mut state) = self.shared.state.lock() else {
            return Err(self.exhausted(0, 0));
        };
        let pairs = self.shared.pairs.max(1);
        for _ in 0..self.shared.pairs {
            let index = state.cursor % pairs;
            state.cursor = state.cursor.wrapping_add(1);
            let Ok(slot) = usize::try_from(index) else {
                continue;
            };
            if state.in_use[slot] || state.not_before[slot].is_some_and(|t| now < t) {
                continue;
            }
            let Ok(offset) = u16::try_from(index * 2) else {
                continue;
            };
            let port = self.first + offset;
            let Ok(rtp) = UdpSocket::bind(SocketAddr::new(self.ip, port)) else {
                continue;
            };
            let Ok(rtcp) = UdpSocket::bind(SocketAddr::new(self.ip, port + 1)) else {
                continue;
            };
            if rtp.set_nonblocking(true).is_err() || rtcp.set_nonblocking(true).is_err() {
                continue;
            }
            state.in_use[slot] = true;
            state.not_before[slot] = None;
            return Ok(PortPair {
                rtp,
                rtcp,
                guard: PairGuard {
                    shared: self.shared.clone(),
                    index: slot,
                    quarantine: true,
                },
            });
        }
        let in_use = state.in_use.iter().filter(|used| **used).count();
        let held_back = state
            .in_use
            .iter()
            .zip(&state.not_before)
            .filter(|(used, until)| !**used && until.is_some_and(|t| now < t))
            .count();
        Err(self.exhausted(in_use, held_back))
    }

    fn exhausted(&self, in_use: usize, held_back: usize) -> Exhausted {
        Exhausted {
            ip: self.ip,
            first: self.first,
            last: self.last,
            in_use,
            held_back,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn free_range(pairs: u16) -> (u16, u16) {
        // Find an even base with `pairs` free pairs above it.
        loop {
            let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
            let base = probe.local_addr().unwrap().port() & !1;
            drop(probe);
            if base > 1024 && base < 60000 {
                return (base, base + pairs * 2 - 1);
            }
        }
    }

    fn pool(pairs: u16, quarantine: Duration) -> (PortPool, u16) {
        let (first, last) = free_range(pairs);
        (
            PortPool::new("127.0.0.1".parse().unwrap(), first, last, quarantine),
            first,
        )
    }

    #[test]
    fn pairs_are_even_and_odd_round_robin_and_counted() {
        let (pool, _) = pool(3, Duration::ZERO);
        let now = Instant::now();
        assert_eq!(pool.capacity(), 3);
        let a = pool.allocate(now).unwrap();
        let a_port = a.rtp_addr().unwrap().port();
        assert_eq!(a_port % 2, 0);
        assert_eq!(a.rtcp.local_addr().unwrap().port(), a_port + 1);
        assert_eq!(pool.in_use(), 1);
        drop(a);
        assert_eq!(pool.in_use(), 0);
        // The freed pair is not the next one handed out.
        let b = pool.allocate(now).unwrap();
        assert_ne!(b.rtp_addr().unwrap().port(), a_port);
        let c = pool.allocate(now).unwrap();
        let d = pool.allocate(now).unwrap();
        assert_eq!(pool.in_use(), 3);
        assert!(pool.allocate(now).is_err(), "three pairs, all taken");
        drop((b, c, d));
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn a_port_held_elsewhere_is_skipped() {
        let (first, last) = free_range(2);
        let squatter = UdpSocket::bind(("127.0.0.1", first)).unwrap();
        let pool = PortPool::new("127.0.0.1".parse().unwrap(), first, last, Duration::ZERO);
        let pair = pool.allocate(Instant::now()).unwrap();
        assert_eq!(pair.rtp_addr().unwrap().port(), first + 2);
        assert!(pool.allocate(Instant::now()).is_err());
        drop(squatter);
    }

    #[test]
    fn a_released_pair_waits_out_the_quarantine() {
        let (pool, _) = pool(2, Duration::from_secs(60));
        let start = Instant::now();
        let a = pool.allocate(start).unwrap();
        let a_port = a.rtp_addr().unwrap().port();
        drop(a);
        // The other pair is free: it is handed out, then nothing is.
        let b = pool.allocate(start).unwrap();
        assert_ne!(b.rtp_addr().unwrap().port(), a_port);
        let refused = pool.allocate(start + Duration::from_secs(59)).unwrap_err();
        assert_eq!((refused.in_use, refused.held_back), (1, 1));
        assert!(refused.to_string().contains("1 held back"), "{refused}");
        // Sixty seconds after its release the first pair is back.
        let again = pool.allocate(start + Duration::from_secs(61)).unwrap();
        assert_eq!(again.rtp_addr().unwrap().port(), a_port);
        // A pair nobody was told of comes back at once.
        let mut b = b;
        let b_port = b.rtp_addr().unwrap().port();
        b.guard.release_at_once();
        drop(b);
        let next = pool.allocate(start + Duration::from_secs(61)).unwrap();
        assert_eq!(next.rtp_addr().unwrap().port(), b_port);
    }

    #[test]
    fn held_back_ports_are_skipped_until_their_time() {
        let (pool, first) = pool(3, Duration::ZERO);
        let now = Instant::now();
        // The first two pairs belonged to a call a crash left open; a port
        // outside the range and an odd one are ignored.
        pool.hold_back(
            &[first, first + 2, first + 3, 9],
            now + Duration::from_secs(10),
        );
        let only = pool.allocate(now).unwrap();
        assert_eq!(only.rtp_addr().unwrap().port(), first + 4);
        assert!(pool.allocate(now + Duration::from_secs(9)).is_err());
        let later = pool.allocate(now + Duration::from_secs(10)).unwrap();
        assert_eq!(later.rtp_addr().unwrap().port(), first);
    }
}
