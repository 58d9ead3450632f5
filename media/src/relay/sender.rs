//! A leg's connected sender: a second socket on the leg's own RTP address,
//! connected to the party, that the party's RTP goes out of.
//!
//! `sendto` on an unconnected socket looks the route up for every
//! datagram (route output and FIB lookup: about 4 % of a relay thread's
//! time in a 500-call profile); a connected socket keeps its route. The
//! leg's own socket cannot be the connected one: a connected UDP socket
//! takes datagrams only from its peer, and the latch must still see every
//! source (the signalled address takes a leg over from a stranger, foreign
//! packets are counted). So a sibling shares the port: Linux hands a
//! datagram from the party to the connected socket (an exact match scores
//! above the unconnected one) and everything else to the leg's socket,
//! and the relay thread reads both.
//!
//! Two sockets on one port need `SO_REUSEPORT` on both when the second
//! binds, and left set it would let any process of the same user bind the
//! port too and take a share of a live stream. It is set for that bind
//! only and cleared on both right after, so a later bind of the port fails
//! as it would without the sibling.
//!
//! The socket calls come through `nix` (the workspace forbids `unsafe`;
//! std cannot set `SO_REUSEPORT` before a bind).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrStorage, bind, connect, setsockopt, socket,
    sockopt::ReusePort,
};

/// The connected sibling of one leg's RTP socket, once the party's
/// address is known.
#[derive(Debug, Default)]
pub(super) struct ConnectedSender {
    socket: Option<UdpSocket>,
    /// The address it was last asked to reach.
    peer: Option<SocketAddr>,
    /// Whether `socket` is connected to `peer` (false when connecting
    /// failed: that address is then reached by `sendto`, and not tried
    /// again per packet).
    connected: bool,
}

impl ConnectedSender {
    /// Makes the sender reach `peer` from `own`'s address: the first time
    /// a socket is made (returned, for the caller to watch for the
    /// party's datagrams, which now arrive on it), later the same socket
    /// is connected anew (datagrams already queued on it stay readable).
    pub fn aim(&mut self, own: &UdpSocket, peer: SocketAddr) -> Option<&UdpSocket> {
        if self.peer == Some(peer) {
            return None;
        }
        self.peer = Some(peer);
        let made = match &self.socket {
            Some(socket) => {
                self.connected = connect(socket.as_raw_fd(), &SockaddrStorage::from(peer)).is_ok();
                false
            }
            None => match sibling(own, peer) {
                Ok(socket) => {
                    self.socket = Some(socket);
                    self.connected = true;
                    true
                }
                Err(e) => {
                    tracing::debug!(error = %e, %peer, "no connected sender; sending unconnected");
                    self.connected = false;
                    false
                }
            },
        };
        if made { self.socket.as_ref() } else { None }
    }

    /// The connected socket when it reaches `target`.
    pub fn towards(&self, target: SocketAddr) -> Option<&UdpSocket> {
        self.socket
            .as_ref()
            .filter(|_| self.connected && self.peer == Some(target))
    }

    /// Drops the socket (the party's datagrams go back to the leg's own
    /// socket) and sends unconnected from now on.
    pub fn give_up(&mut self) {
        self.socket = None;
        self.connected = false;
    }

    /// The socket, if one was made (to read from and to unwatch).
    pub fn socket(&self) -> Option<&UdpSocket> {
        self.socket.as_ref()
    }
}

/// Sends `packet` out of a connected sender. A connected UDP socket holds
/// the ICMP error an earlier datagram drew (a party whose port was not
/// open yet), and the next send returns that error instead of sending;
/// it is consumed by then, so the packet is sent once more. An unconnected
/// socket never sees such errors, so without this a party that opens its
/// port late would lose a packet the unconnected path delivers.
pub(super) fn send_connected(socket: &UdpSocket, packet: &[u8]) -> io::Result<usize> {
    match socket.send(packet) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => socket.send(packet),
        sent => sent,
    }
}

/// A non-blocking socket bound to `own`'s address and connected to `peer`.
fn sibling(own: &UdpSocket, peer: SocketAddr) -> io::Result<UdpSocket> {
    let local = own.local_addr()?;
    let family = if local.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    setsockopt(own, ReusePort, &true)?;
    let made = (|| -> nix::Result<UdpSocket> {
        let socket = socket(
            family,
            SockType::Datagram,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        setsockopt(&socket, ReusePort, &true)?;
        bind(socket.as_raw_fd(), &SockaddrStorage::from(local))?;
        setsockopt(&socket, ReusePort, &false)?;
        connect(socket.as_raw_fd(), &SockaddrStorage::from(peer))?;
        Ok(UdpSocket::from(socket))
    })();
    // Cleared even when the sibling could not be made.
    setsockopt(own, ReusePort, &false)?;
    Ok(made?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::tests::party as loopback;
    use std::time::Duration;

    #[test]
    fn the_party_reaches_the_sibling_and_strangers_the_leg_socket() {
        // On a leg bound to one address, and on one bound to every
        // address (`media.address = "0.0.0.0"`), where connecting moves
        // the sibling to the address its route leaves from.
        for bound in ["127.0.0.1:0", "0.0.0.0:0"] {
            let own = UdpSocket::bind(bound).unwrap();
            let port = SocketAddr::from(([127, 0, 0, 1], own.local_addr().unwrap().port()));
            own.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let party = loopback();
            let stranger = loopback();
            let mut sender = ConnectedSender::default();
            let sibling = sender.aim(&own, party.local_addr().unwrap()).unwrap();
            sibling
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            assert_eq!(sibling.local_addr().unwrap(), port, "{bound}");

            party.send_to(b"party", port).unwrap();
            stranger.send_to(b"stranger", port).unwrap();
            let mut buffer = [0; 16];
            let (len, from) = sibling.recv_from(&mut buffer).unwrap();
            assert_eq!(
                (&buffer[..len], from),
                (&b"party"[..], party.local_addr().unwrap()),
                "{bound}"
            );
            let (len, from) = own.recv_from(&mut buffer).unwrap();
            assert_eq!(
                (&buffer[..len], from),
                (&b"stranger"[..], stranger.local_addr().unwrap()),
                "{bound}"
            );

            // What goes out of the sibling comes from the leg's own port.
            let towards = sender.towards(party.local_addr().unwrap()).unwrap();
            towards.send(b"back").unwrap();
            let (len, from) = party.recv_from(&mut buffer).unwrap();
            assert_eq!((&buffer[..len], from), (&b"back"[..], port), "{bound}");
            assert!(sender.towards(stranger.local_addr().unwrap()).is_none());
        }
    }

    #[test]
    fn aimed_elsewhere_the_same_socket_follows_and_keeps_what_it_queued() {
        let own = loopback();
        let first = loopback();
        let second = loopback();
        let port = own.local_addr().unwrap();
        let mut sender = ConnectedSender::default();
        assert!(sender.aim(&own, first.local_addr().unwrap()).is_some());
        first.send_to(b"queued", port).unwrap();
        std::thread::sleep(Duration::from_millis(50));

        assert!(sender.aim(&own, second.local_addr().unwrap()).is_none());
        assert!(sender.aim(&own, second.local_addr().unwrap()).is_none());
        let sibling = sender.socket().unwrap();
        sibling
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buffer = [0; 16];
        let (len, from) = sibling.recv_from(&mut buffer).unwrap();
        assert_eq!(
            (&buffer[..len], from),
            (&b"queued"[..], first.local_addr().unwrap())
        );
        second.send_to(b"now", port).unwrap();
        let (len, from) = sibling.recv_from(&mut buffer).unwrap();
        assert_eq!(
            (&buffer[..len], from),
            (&b"now"[..], second.local_addr().unwrap())
        );
        assert!(sender.towards(first.local_addr().unwrap()).is_none());
        assert!(sender.towards(second.local_addr().unwrap()).is_some());
    }

    #[test]
    fn nobody_else_can_bind_the_port_once_the_sibling_is_there() {
        let own = loopback();
        let party = loopback();
        let mut sender = ConnectedSender::default();
        assert!(sender.aim(&own, party.local_addr().unwrap()).is_some());

        let intruder = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        setsockopt(&intruder, ReusePort, &true).unwrap();
        let taken = bind(
            intruder.as_raw_fd(),
            &SockaddrStorage::from(own.local_addr().unwrap()),
        );
        assert_eq!(taken, Err(nix::errno::Errno::EADDRINUSE));
    }

    #[test]
    fn a_party_that_opens_its_port_late_gets_the_next_packet() {
        let own = loopback();
        let closed = loopback();
        let party_addr = closed.local_addr().unwrap();
        drop(closed);
        let mut sender = ConnectedSender::default();
        sender.aim(&own, party_addr).unwrap();
        let sibling = sender.towards(party_addr).unwrap();
        // Nobody listens: the kernel answers with port unreachable, which
        // the connected socket keeps as its pending error.
        sibling.send(b"lost").unwrap();
        std::thread::sleep(Duration::from_millis(50));

        let party = UdpSocket::bind(party_addr).unwrap();
        party
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        send_connected(sibling, b"heard").unwrap();
        let mut buffer = [0; 16];
        let (len, _) = party.recv_from(&mut buffer).unwrap();
        assert_eq!(&buffer[..len], b"heard");
    }

    #[test]
    fn an_unreachable_party_is_sent_to_unconnected() {
        let own = loopback();
        let mut sender = ConnectedSender::default();
        // An IPv6 party cannot be reached from an IPv4 port: no sibling.
        let party: SocketAddr = "[::1]:9".parse().unwrap();
        assert!(sender.aim(&own, party).is_none());
        assert!(sender.towards(party).is_none());
        assert!(sender.socket().is_none());
        // The leg's own socket keeps working, and the option is cleared.
        let stranger = loopback();
        stranger.send_to(b"x", own.local_addr().unwrap()).unwrap();
        let mut buffer = [0; 4];
        assert_eq!(own.recv_from(&mut buffer).unwrap().0, 1);
        assert!(!nix::sys::socket::getsockopt(&own, ReusePort).unwrap());
    }
}
