//! The kernel fast path (`media.fast_path`): a tc ingress program
//! (`media/bpf/relay.bpf.c`, built by `build.rs`) forwards a call's plain
//! RTP between the parties without waking the relay thread, while the
//! call needs nothing but forwarding; the thread keeps every decision.
//!
//! Per direction of a call the thread installs a route keyed by the
//! party's latched address and the leg's port: where the packet goes, from
//! which address and port, the stream mapping a prompt left (sequence,
//! timestamp and SSRC deltas), the call's cut as a kernel deadline, and
//! the telephone-event payload type to leave to the thread (keys are
//! heard there). The kernel counts what it forwards and keeps the last
//! packet's numbers; the thread folds them into the call's counters and
//! stream ([`crate::bridge::Bridge::fold`]) before it looks at them. A
//! packet the route does not take (another source, another SSRC, an
//! event, RTCP, after the cut) reaches the leg's socket as before.
//!
//! The program is attached with tcx links, which the kernel detaches when
//! the daemon's process ends however it ends: a crashed daemon leaves no
//! kernel forwarding behind. The loading, the map and the links come
//! through `aya` (userspace only; the kernel side is C, see `build.rs`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aya::maps::{HashMap, MapData};
use aya::programs::{SchedClassifier, TcAttachType};

/// The program as `build.rs` built it (empty when clang was missing).
static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/relay.bpf.o"));

/// The route map's name in the object.
const ROUTES: &str = "ROUTES";

/// `sizeof(struct key)` and `sizeof(struct route)` in the C program.
const KEY: usize = 8;
const ROUTE: usize = 72;

/// Why the fast path could not start.
#[derive(Debug, thiserror::Error)]
pub enum FastPathError {
    /// The daemon was built without clang.
    #[error(
        "this build has no kernel fast path (clang and libbpf-dev were not installed when it was built)"
    )]
    NotBuilt,
    /// The kernel refused the program or its map (no CAP_BPF and
    /// CAP_NET_ADMIN, an old kernel).
    #[error("the kernel refused the fast path program: {0}")]
    Load(String),
    /// The program could not be attached to an interface.
    #[error("cannot attach the fast path to interface {interface:?}: {reason}")]
    Attach {
        /// The interface named in `media.fast_path`.
        interface: String,
        /// What the kernel said.
        reason: String,
    },
}

/// The loaded program, attached to the interfaces where RTP arrives; it
/// detaches when dropped (or when the process ends).
pub struct FastPath {
    /// Holds the program and its links.
    _ebpf: aya::Ebpf,
    routes: MapData,
    interfaces: Vec<String>,
    /// Routes installed by every thread.
    installed: Arc<AtomicUsize>,
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath")
            .field("interfaces", &self.interfaces)
            .finish()
    }
}

impl FastPath {
    /// Loads the program and attaches it at the ingress of every interface
    /// named (those the parties' RTP arrives on; `lo` for parties on this
    /// host).
    pub fn attach(interfaces: &[String]) -> Result<FastPath, FastPathError> {
        if OBJECT.is_empty() {
            return Err(FastPathError::NotBuilt);
        }
        let load = |e: &dyn std::fmt::Display| FastPathError::Load(e.to_string());
        let refused = |e: &dyn std::error::Error| FastPathError::Load(error_chain(e));
        let mut ebpf = aya::Ebpf::load(OBJECT).map_err(|e| refused(&e))?;
        let program: &mut SchedClassifier = ebpf
            .program_mut("relay")
            .ok_or_else(|| load(&"the object has no program `relay`"))?
            .try_into()
            .map_err(|e| refused(&e))?;
        program.load().map_err(|e| refused(&e))?;
        for interface in interfaces {
            program
                .attach(interface, TcAttachType::Ingress)
                .map_err(|e| FastPathError::Attach {
                    interface: interface.clone(),
                    reason: error_chain(&e),
                })?;
        }
        let routes = ebpf
            .take_map(ROUTES)
            .ok_or_else(|| load(&"the object has no route map"))?;
        let aya::maps::Map::HashMap(routes) = routes else {
            return Err(load(&"the route map is not a hash map"));
        };
        Ok(FastPath {
            _ebpf: ebpf,
            routes,
            interfaces: interfaces.to_vec(),
            installed: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// How many directions of calls the kernel forwards now.
    pub fn routes_installed(&self) -> usize {
        self.installed.load(Ordering::Relaxed)
    }

    /// A handle on the route map for one relay thread.
    pub(super) fn routes(&self) -> Result<Routes, FastPathError> {
        let load = |e: &dyn std::fmt::Display| FastPathError::Load(e.to_string());
        let fd = self
            .routes
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| load(&e))?;
        let data = MapData::from_fd(fd).map_err(|e| load(&e))?;
        let map = HashMap::try_from(aya::maps::Map::HashMap(data)).map_err(|e| load(&e))?;
        Ok(Routes {
            map,
            installed: self.installed.clone(),
        })
    }
}

/// An error with its causes, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Where a route applies: datagrams from the party's address to the leg's
/// port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Key {
    /// The party's latched address.
    pub party: SocketAddrV4,
    /// The leg's RTP port.
    pub leg_port: u16,
}

impl Key {
    fn bytes(self) -> [u8; KEY] {
        let mut key = [0; KEY];
        key[0..4].copy_from_slice(&self.party.ip().octets());
        key[4..6].copy_from_slice(&self.leg_port.to_be_bytes());
        key[6..8].copy_from_slice(&self.party.port().to_be_bytes());
        key
    }
}

/// What the kernel does with a datagram a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Route {
    /// The address it leaves from: the other leg's address and port.
    pub from: SocketAddrV4,
    /// The other party.
    pub to: SocketAddrV4,
    /// The interface it leaves by; `None` when the other party is on this
    /// host (the packet goes up the stack).
    pub interface: Option<u32>,
    /// The call's cut, on `CLOCK_MONOTONIC` (the clock `Instant` reads).
    pub deadline_ns: Option<u64>,
    /// The only SSRC taken (the one the thread last saw from the party).
    pub ssrc: u32,
    /// The stream mapping a prompt left on the other leg.
    pub rewrite: Option<crate::stream::Rewrite>,
    /// The party's telephone-event payload type, left to the thread.
    pub event_type: Option<u8>,
}

impl Route {
    fn bytes(&self) -> [u8; ROUTE] {
        let mut route = [0; ROUTE];
        route[0..4].copy_from_slice(&self.from.ip().octets());
        route[4..8].copy_from_slice(&self.to.ip().octets());
        route[8..10].copy_from_slice(&self.from.port().to_be_bytes());
        route[10..12].copy_from_slice(&self.to.port().to_be_bytes());
        route[12..16].copy_from_slice(&self.interface.unwrap_or(0).to_ne_bytes());
        route[16..24].copy_from_slice(&self.deadline_ns.unwrap_or(0).to_ne_bytes());
        route[24..28].copy_from_slice(&self.ssrc.to_be_bytes());
        let rewrite = self.rewrite.unwrap_or(crate::stream::Rewrite {
            seq_delta: 0,
            timestamp_delta: 0,
            ssrc: self.ssrc,
        });
        route[28..32].copy_from_slice(&rewrite.ssrc.to_be_bytes());
        route[32..36].copy_from_slice(&rewrite.timestamp_delta.to_ne_bytes());
        route[36..38].copy_from_slice(&rewrite.seq_delta.to_ne_bytes());
        route[38] = self.event_type.unwrap_or(0xff);
        route[39] = u8::from(self.rewrite.is_some());
        route
    }
}

/// What the kernel forwarded on a route since it was installed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct RouteCounters {
    pub packets: u64,
    /// UDP payload bytes.
    pub bytes: u64,
    /// When the last one went, on `CLOCK_MONOTONIC`.
    pub last_ns: u64,
    /// The last one's sequence number and timestamp as sent.
    pub last_seq: u16,
    pub last_timestamp: u32,
}

impl RouteCounters {
    fn read(route: &[u8; ROUTE]) -> RouteCounters {
        let u64_at = |at: usize| {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(&route[at..at + 8]);
            u64::from_ne_bytes(bytes)
        };
        RouteCounters {
            packets: u64_at(40),
            bytes: u64_at(48),
            last_ns: u64_at(56),
            last_timestamp: u32::from_ne_bytes([route[64], route[65], route[66], route[67]]),
            last_seq: u16::from_ne_bytes([route[68], route[69]]),
        }
    }
}

/// A relay thread's handle on the route map. Used on state changes and
/// the thread's sweep, never per packet.
pub(super) struct Routes {
    map: HashMap<MapData, [u8; KEY], [u8; ROUTE]>,
    installed: Arc<AtomicUsize>,
}

impl Routes {
    /// Installs the route at `key` (none is there: the call removes its
    /// old one first), its counters at zero.
    pub fn install(&mut self, key: Key, route: &Route) -> Result<(), aya::maps::MapError> {
        self.map.insert(key.bytes(), route.bytes(), 0)?;
        self.installed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// What the route at `key` forwarded so far; `None` when it is gone.
    pub fn counters(&self, key: Key) -> Option<RouteCounters> {
        self.map
            .get(&key.bytes(), 0)
            .ok()
            .map(|route| RouteCounters::read(&route))
    }

    /// Removes the route at `key`.
    pub fn remove(&mut self, key: Key) {
        if self.map.remove(&key.bytes()).is_ok() {
            self.installed.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// `CLOCK_MONOTONIC` and `Instant` read together, to turn one into the
/// other (both are the same clock on Linux; `Instant` hides its value).
#[derive(Debug, Clone, Copy)]
pub(super) struct KernelClock {
    ns: u64,
    at: Instant,
}

impl KernelClock {
    /// Reads both clocks now.
    pub fn now() -> Option<KernelClock> {
        let time = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?;
        let at = Instant::now();
        let secs = u64::try_from(time.tv_sec()).ok()?;
        let nanos = u64::try_from(time.tv_nsec()).ok()?;
        Some(KernelClock {
            ns: secs.checked_mul(1_000_000_000)?.checked_add(nanos)?,
            at,
        })
    }

    /// `instant` in kernel nanoseconds.
    pub fn ns_of(self, instant: Instant) -> u64 {
        match instant.checked_duration_since(self.at) {
            Some(later) => self.ns.saturating_add(duration_ns(later)),
            None => self
                .ns
                .saturating_sub(duration_ns(self.at.duration_since(instant))),
        }
    }

    /// Kernel nanoseconds `ns` as an `Instant`.
    pub fn instant_of(self, ns: u64) -> Instant {
        if ns >= self.ns {
            self.at + Duration::from_nanos(ns - self.ns)
        } else {
            self.at
                .checked_sub(Duration::from_nanos(self.ns - ns))
                .unwrap_or(self.at)
        }
    }
}

fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Which interface a route to `to`, leaving from `from`, goes out of:
/// `Some(None)` when `to` is on this host (the packet goes up the stack),
/// `Some(Some(index))` for the interface that holds `from` (where the
/// kernel's own route for the connected sender put it), `None` when
/// neither is known (the direction stays with the thread).
pub(super) fn egress(from: Ipv4Addr, to: Ipv4Addr) -> Option<Option<u32>> {
    if to.is_loopback() {
        // A party on a loopback address is reached only from loopback.
        return from.is_loopback().then_some(None);
    }
    let addresses = nix::ifaddrs::getifaddrs().ok()?;
    let mut holder = None;
    for address in addresses {
        let Some(ip) = address
            .address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|a| a.ip())
        else {
            continue;
        };
        if ip == to {
            return Some(None);
        }
        if ip == from && !from.is_loopback() {
            holder = Some(address.interface_name);
        }
    }
    let index = nix::net::if_::if_nametoindex(holder?.as_str()).ok()?;
    Some(Some(index))
}

/// The IPv4 form of an address the fast path can route (IPv6 parties stay
/// with the thread).
pub(super) fn v4(address: SocketAddr) -> Option<SocketAddrV4> {
    match address {
        SocketAddr::V4(v4) => Some(v4),
        SocketAddr::V6(v6) => v6
            .ip()
            .to_ipv4_mapped()
            .map(|ip| SocketAddrV4::new(ip, v6.port())),
    }
}

/// The address a leg's datagrams leave from when it was bound to a
/// specific one.
pub(super) fn bound_ip(address: SocketAddr) -> Option<Ipv4Addr> {
    match address.ip() {
        IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
