//! The relay's port range: an even RTP port and the RTCP port above it per
//! leg (RFC 3550 §11), handed out round-robin so a port just released is
//! not reused at once (late packets of the last call would bleed into the
//! next one), and counted so a leak shows.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Why no pair could be allocated.
#[derive(Debug, thiserror::Error)]
#[error("no free RTP/RTCP port pair in {first}-{last} on {ip}")]
pub struct Exhausted {
    /// The address the relay binds to.
    pub ip: IpAddr,
    /// First port of the range.
    pub first: u16,
    /// Last port of the range.
    pub last: u16,
}

/// The configured range on one local address.
#[derive(Debug)]
pub struct PortPool {
    ip: IpAddr,
    first: u16,
    pairs: u32,
    last: u16,
    cursor: AtomicU32,
    in_use: Arc<AtomicUsize>,
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

/// Held while a pair is in use; dropping it releases the pair's count.
#[derive(Debug)]
pub struct PairGuard(Arc<AtomicUsize>);

impl Drop for PairGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PortPool {
    /// A pool over `first..=last` (first even) on `ip`.
    pub fn new(ip: IpAddr, first: u16, last: u16) -> Self {
        let first = first + first % 2;
        let pairs = u32::from(last).saturating_sub(u32::from(first)).div_ceil(2);
        PortPool {
            ip,
            first,
            pairs,
            last,
            cursor: AtomicU32::new(0),
            in_use: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Pairs currently handed out.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Pairs the range holds.
    pub fn capacity(&self) -> u32 {
        self.pairs
    }

    /// Binds the next free pair after the last one handed out; a pair whose
    /// port another process holds is skipped.
    pub fn allocate(&self) -> Result<PortPair, Exhausted> {
        for _ in 0..self.pairs {
            let index = self.cursor.fetch_add(1, Ordering::Relaxed) % self.pairs.max(1);
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
            self.in_use.fetch_add(1, Ordering::Relaxed);
            return Ok(PortPair {
                rtp,
                rtcp,
                guard: PairGuard(self.in_use.clone()),
            });
        }
        Err(Exhausted {
            ip: self.ip,
            first: self.first,
            last: self.last,
        })
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

    #[test]
    fn pairs_are_even_and_odd_round_robin_and_counted() {
        let (first, last) = free_range(3);
        let pool = PortPool::new("127.0.0.1".parse().unwrap(), first, last);
        assert_eq!(pool.capacity(), 3);
        let a = pool.allocate().unwrap();
        let a_port = a.rtp_addr().unwrap().port();
        assert_eq!(a_port % 2, 0);
        assert_eq!(a.rtcp.local_addr().unwrap().port(), a_port + 1);
        assert_eq!(pool.in_use(), 1);
        drop(a);
        assert_eq!(pool.in_use(), 0);
        // The freed pair is not the next one handed out.
        let b = pool.allocate().unwrap();
        assert_ne!(b.rtp_addr().unwrap().port(), a_port);
        let c = pool.allocate().unwrap();
        let d = pool.allocate().unwrap();
        assert_eq!(pool.in_use(), 3);
        assert!(pool.allocate().is_err(), "three pairs, all taken");
        drop((b, c, d));
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn a_port_held_elsewhere_is_skipped() {
        let (first, last) = free_range(2);
        let squatter = UdpSocket::bind(("127.0.0.1", first)).unwrap();
        let pool = PortPool::new("127.0.0.1".parse().unwrap(), first, last);
        let pair = pool.allocate().unwrap();
        assert_eq!(pair.rtp_addr().unwrap().port(), first + 2);
        assert!(pool.allocate().is_err());
        drop(squatter);
    }
}
