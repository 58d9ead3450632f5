//! Receiving every datagram waiting on a relay socket in one system call.
//!
//! A relay thread learns from epoll (edge-triggered, through mio) that a
//! socket turned readable and must then read it until it is empty. One
//! `recv_from` at a time, that costs a last call that only learns the
//! queue is empty. `recvmmsg` takes up to [`BATCH`] datagrams at once, and
//! when it returns fewer the queue was empty: no extra call. A datagram
//! that arrives after that makes a new edge and wakes the thread again.
//!
//! The batch's buffers belong to the relay thread, not to a call: the
//! thread relays one socket's batch at a time, so its calls share 16 KiB
//! instead of each holding four receive buffers.
//!
//! `recvmmsg` comes through `nix`, the maintained safe binding of the
//! system calls (the workspace forbids `unsafe`); quinn-udp wraps it too,
//! with control-message parsing (ECN, GRO) a relay of RTP does not need.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};

use super::DATAGRAM;

/// The most datagrams taken from one socket in one call.
pub const BATCH: usize = 8;

/// Receive buffers and the kernel's message headers for one batch.
pub struct Batch {
    buffers: Box<[[u8; DATAGRAM]; BATCH]>,
    headers: MultiHeaders<SockaddrStorage>,
    received: [(usize, Option<SocketAddr>); BATCH],
}

impl Default for Batch {
    fn default() -> Batch {
        Batch {
            buffers: Box::new([[0; DATAGRAM]; BATCH]),
            headers: MultiHeaders::preallocate(BATCH, None),
            received: [(0, None); BATCH],
        }
    }
}

impl Batch {
    /// Takes what waits on `socket`, up to [`BATCH`] datagrams, and
    /// returns how many; fewer than [`BATCH`] means the queue is now
    /// empty. `WouldBlock` when nothing waited.
    pub fn receive(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        let mut slices = self
            .buffers
            .each_mut()
            .map(|buffer| [IoSliceMut::new(buffer)]);
        let messages = recvmmsg(
            socket.as_raw_fd(),
            &mut self.headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        let mut count = 0;
        for (slot, message) in self.received.iter_mut().zip(messages) {
            *slot = (message.bytes, message.address.and_then(socket_addr));
            count += 1;
        }
        Ok(count)
    }

    /// The `index`th datagram of the last [`Batch::receive`]: its buffer
    /// (the whole buffer, so SRTP can grow the packet in place), its
    /// length and its source. `None` past the batch or for a datagram
    /// with no IP source.
    pub fn datagram(&mut self, index: usize) -> Option<(&mut [u8; DATAGRAM], usize, SocketAddr)> {
        let (len, source) = *self.received.get(index)?;
        let buffer = self.buffers.get_mut(index)?;
        Some((buffer, len.min(DATAGRAM), source?))
    }
}

fn socket_addr(address: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    address
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;

    use super::*;

    fn pair() -> (UdpSocket, UdpSocket, SocketAddr) {
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        relay.set_nonblocking(true).unwrap();
        let party = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = relay.local_addr().unwrap();
        (relay, party, to)
    }

    #[test]
    fn takes_every_waiting_datagram_with_its_source_in_order() {
        let (relay, party, to) = pair();
        for n in 0..3u8 {
            party.send_to(&[n; 172], to).unwrap();
        }
        // Loopback delivers within the send: all three wait now.
        let mut batch = Batch::default();
        assert_eq!(batch.receive(&relay).unwrap(), 3);
        for index in 0..3 {
            let (buffer, len, source) = batch.datagram(index).unwrap();
            assert_eq!((len, buffer[0]), (172, index as u8));
            assert_eq!(source, party.local_addr().unwrap());
        }
    }

    #[test]
    fn a_full_batch_says_more_may_wait_and_the_next_takes_the_rest() {
        let (relay, party, to) = pair();
        for n in 0..(BATCH as u8 + 2) {
            party.send_to(&[n; 20], to).unwrap();
        }
        let mut batch = Batch::default();
        assert_eq!(batch.receive(&relay).unwrap(), BATCH);
        assert_eq!(batch.receive(&relay).unwrap(), 2);
        let (buffer, len, _) = batch.datagram(1).unwrap();
        assert_eq!((buffer[0], len), (BATCH as u8 + 1, 20));
    }

    #[test]
    fn an_empty_socket_would_block() {
        let (relay, _party, _) = pair();
        let error = Batch::default().receive(&relay).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_datagram_longer_than_the_buffer_is_cut_to_it() {
        let (relay, party, to) = pair();
        party.send_to(&[7; DATAGRAM + 100], to).unwrap();
        let mut batch = Batch::default();
        assert_eq!(batch.receive(&relay).unwrap(), 1);
        assert_eq!(batch.datagram(0).unwrap().1, DATAGRAM);
    }
}
