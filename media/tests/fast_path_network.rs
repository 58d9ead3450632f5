//! The kernel fast path between two hosts that are not this one: each
//! party in a network namespace of its own behind a veth pair, the relay
//! in this one, so the kernel forwards out of an interface (through the
//! neighbour table) rather than up the stack. Checksum offload is off on
//! every veth end, so each party's kernel verifies the UDP checksum the
//! program mended and drops the datagram if it is wrong. Needs root (the
//! suite runs as root) and iproute2 and ethtool.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::process::Command;
use std::time::Duration;

use tollbridge_media::bridge::Side;
use tollbridge_media::leg::{LatchPolicy, Peer};
use tollbridge_media::ports::PortPool;
use tollbridge_media::relay::{FastPath, Relay};
use tollbridge_media::sdp::{Codec, Direction};

fn run(args: &[&str]) {
    let status = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(status.success(), "{args:?}: {status}");
}

/// One party's host: a namespace joined to this one by a veth pair, this
/// end `10.<net>.<subnet>.1`, the party's `.2`. Deleted when dropped.
struct Host {
    namespace: String,
    interface: String,
    party_ip: String,
}

impl Host {
    fn new(name: &str, net: u8, subnet: u8) -> Host {
        let pid = std::process::id();
        let namespace = format!("tbfp-{name}-{pid}");
        let interface = format!("tb{name}{}", pid % 100_000);
        let inside = format!("{interface}p");
        let ours = format!("10.{net}.{subnet}.1/24");
        let party_ip = format!("10.{net}.{subnet}.2");
        run(&["ip", "netns", "add", &namespace]);
        let host = Host {
            namespace: namespace.clone(),
            interface: interface.clone(),
            party_ip: party_ip.clone(),
        };
        run(&[
            "ip", "link", "add", &interface, "type", "veth", "peer", "name", &inside, "netns",
            &namespace,
        ]);
        run(&["ip", "addr", "add", &ours, "dev", &interface]);
        run(&["ip", "link", "set", &interface, "up"]);
        let theirs = format!("{party_ip}/24");
        run(&[
            "ip", "-n", &namespace, "addr", "add", &theirs, "dev", &inside,
        ]);
        run(&["ip", "-n", &namespace, "link", "set", &inside, "up"]);
        run(&["ip", "-n", &namespace, "link", "set", "lo", "up"]);
        // Checksums computed and verified in software at both ends.
        run(&["ethtool", "-K", &interface, "rx", "off", "tx", "off"]);
        run(&[
            "ip", "netns", "exec", &namespace, "ethtool", "-K", &inside, "rx", "off", "tx", "off",
        ]);
        host
    }

    /// A UDP socket of the party's, in its namespace.
    fn party(&self) -> UdpSocket {
        let path = format!("/run/netns/{}", self.namespace);
        let address = format!("{}:0", self.party_ip);
        // A thread joins the namespace; the socket stays in it after.
        std::thread::spawn(move || {
            let namespace = std::fs::File::open(path).unwrap();
            nix::sched::setns(namespace.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let socket = UdpSocket::bind(address).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            socket
        })
        .join()
        .unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.namespace])
            .status();
    }
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

fn rtp(seq: u16) -> Vec<u8> {
    let mut packet = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0, 0, 0, 9];
    packet[2..4].copy_from_slice(&seq.to_be_bytes());
    packet.extend((0..160).map(|i| (i as u8) ^ (seq as u8)));
    packet
}

/// Sends `packet` to `to` and returns what `at` receives, and from where.
fn through(
    from: &UdpSocket,
    to: SocketAddr,
    packet: &[u8],
    at: &UdpSocket,
) -> (Vec<u8>, SocketAddr) {
    from.send_to(packet, to).unwrap();
    let mut buf = [0u8; 2048];
    let (len, source) = at
        .recv_from(&mut buf)
        .expect("relayed, with a valid checksum");
    (buf[..len].to_vec(), source)
}

#[tokio::test]
async fn the_kernel_forwards_between_two_hosts_with_checksums_they_accept() {
    let subnet = (std::process::id() % 250) as u8;
    let a = Host::new("a", 201, subnet);
    let b = Host::new("b", 202, subnet);
    let pool = PortPool::new("0.0.0.0".parse().unwrap(), 30000, 30039, Duration::ZERO);
    let mut relay = Relay::start(
        pool,
        LatchPolicy::SignalledIp,
        "10.201.0.1".parse().unwrap(),
        1,
    )
    .unwrap();
    let fast_path = FastPath::attach(&[a.interface.clone(), b.interface.clone()]).unwrap();
    relay.use_fast_path(fast_path).unwrap();

    let (caller, callee) = (a.party(), b.party());
    let call = relay.open_call().unwrap();
    call.set_peer(Side::Caller, peer(&caller));
    call.set_peer(Side::Callee, peer(&callee));
    call.stats().await.unwrap();
    // Each party sends to the relay's address on its own network.
    let caller_leg = SocketAddr::new(
        format!("10.201.{subnet}.1").parse().unwrap(),
        call.rtp_ports()[0],
    );
    let callee_leg = SocketAddr::new(
        format!("10.202.{subnet}.1").parse().unwrap(),
        call.rtp_ports()[1],
    );
    // The first packets (and ARP) go through the thread.
    through(&caller, caller_leg, &rtp(0), &callee);
    through(&callee, callee_leg, &rtp(0), &caller);
    for _ in 0..200 {
        if relay.kernel_routes() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(relay.kernel_routes(), 2);
    for seq in 1..=20 {
        let (got, from) = through(&caller, caller_leg, &rtp(seq), &callee);
        assert_eq!(got, rtp(seq));
        assert_eq!(
            from, callee_leg,
            "from the relay's address on the callee's network"
        );
        let (got, from) = through(&callee, callee_leg, &rtp(seq), &caller);
        assert_eq!(got, rtp(seq));
        assert_eq!(from, caller_leg);
    }
    let stats = call.close().await.unwrap();
    assert_eq!(stats.caller.packets_received, 21);
    assert_eq!(stats.caller.kernel_forwarded, 20, "{stats:?}");
    assert_eq!(stats.callee.kernel_forwarded, 20, "{stats:?}");
    assert_eq!(stats.callee.packets_sent, 21);
}
