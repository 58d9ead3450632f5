//! One call on its relay thread: its four sockets and its legs' connected
//! senders, its [`Bridge`], its SRTP contexts and recording, and the
//! packet path between them. The thread's loop ([`super::shard`]) hands
//! it readable sockets, due prompt frames and its owner's commands;
//! nothing here blocks or allocates per packet.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use tokio::sync::oneshot;

use super::fast_path::{self, KernelClock, Key, Route, Routes};
use super::offload::{CallRoutes, Wanted};
use super::sender::{ConnectedSender, send_connected};
use super::{CallStats, Control, DATAGRAM, LegSrtp, MediaEvent};
use crate::bridge::{Bridge, Offload, Side};
use crate::leg::LatchPolicy;
use crate::ports::{PairGuard, PortPair};
use crate::prompt::FRAME_SAMPLES;
use crate::recording::{RecordingTap, Source};
use crate::stream::PROMPT_PACKET;

/// Tokens per call: each leg's RTP and RTCP socket, and each leg's
/// connected sender.
pub(super) const SOCKETS: usize = 6;

/// The token index of the caller's connected sender (the callee's is next).
const SENDERS: usize = 4;

/// What the thread needs to open a call; sent from [`super::Relay::open_call`].
pub(super) struct Opening {
    pub id: u64,
    pub caller: PortPair,
    pub callee: PortPair,
    pub announced: Arc<AtomicBool>,
    pub policy: LatchPolicy,
    pub events: futures_channel::mpsc::UnboundedSender<MediaEvent>,
    pub on_shard: OnShard,
}

/// Counts a call on its thread while it lives.
pub(super) struct OnShard(Arc<AtomicUsize>);

impl OnShard {
    pub fn new(calls: &Arc<AtomicUsize>) -> OnShard {
        calls.fetch_add(1, Ordering::Relaxed);
        OnShard(calls.clone())
    }
}

impl Drop for OnShard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A call's sockets, in token order: caller RTP, callee RTP, caller RTCP,
/// callee RTCP, then each leg's connected sender (see [`ConnectedSender`])
/// once made. A socket's peer on the other leg is at `index ^ 1`.
struct CallSockets {
    all: [UdpSocket; 4],
    senders: [ConnectedSender; 2],
    /// After the sockets: a pair goes back to the pool once closed.
    guards: [PairGuard; 2],
    announced: Arc<AtomicBool>,
}

impl Drop for CallSockets {
    /// Ports no party was told of need no quarantine.
    fn drop(&mut self) {
        if !self.announced.load(Ordering::Relaxed) {
            for guard in &mut self.guards {
                guard.release_at_once();
            }
        }
    }
}

/// The SRTP contexts of a call's two legs.
#[derive(Default)]
struct CallSrtp {
    receive: [Option<Box<crate::srtp::Unprotector>>; 2],
    send: [Option<Box<crate::srtp::Protector>>; 2],
}

impl CallSrtp {
    /// Whether either leg is SRTP.
    fn any(&self) -> bool {
        self.receive.iter().any(Option::is_some) || self.send.iter().any(Option::is_some)
    }

    fn set(&mut self, side: Side, leg: LegSrtp) {
        if let Some(receive) = leg.receive {
            self.receive[side.index()] = Some(Box::new(receive));
        }
        if let Some(send) = leg.send {
            self.send[side.index()] = Some(Box::new(send));
        }
    }

    /// The plain length of the packet from `side` in `buffer[..len]`
    /// (decrypted in place), or `None` when it is refused.
    fn open(&mut self, side: Side, buffer: &mut [u8], len: usize, rtcp: bool) -> Option<usize> {
        let Some(receive) = &mut self.receive[side.index()] else {
            return Some(len);
        };
        let packet = buffer.get_mut(..len)?;
        let opened = if rtcp {
            receive.unprotect_rtcp(packet)
        } else {
            receive.unprotect_rtp(packet)
        };
        opened.ok()
    }

    /// The length of the packet for `side` in `buffer[..len]`, encrypted
    /// in place when the leg is SRTP; `None` when it cannot be.
    fn seal(&mut self, side: Side, buffer: &mut [u8], len: usize, rtcp: bool) -> Option<usize> {
        let Some(send) = &mut self.send[side.index()] else {
            return Some(len);
        };
        let sealed = if rtcp {
            send.protect_rtcp(buffer, len)
        } else {
            send.protect_rtp(buffer, len)
        };
        sealed.ok()
    }
}

/// Buffers a relay thread lends its calls to build prompt frames.
pub(super) struct PromptScratch {
    frame: [u8; PROMPT_PACKET],
    sealed: [u8; PROMPT_PACKET + crate::srtp::MAX_OVERHEAD],
    prompt_only: [u8; FRAME_SAMPLES],
}

impl Default for PromptScratch {
    fn default() -> Self {
        PromptScratch {
            frame: [0; PROMPT_PACKET],
            sealed: [0; PROMPT_PACKET + crate::srtp::MAX_OVERHEAD],
            prompt_only: [0; FRAME_SAMPLES],
        }
    }
}

/// One live call.
pub(super) struct Call {
    /// The id its owner knows it by.
    pub id: u64,
    sockets: CallSockets,
    bridge: Bridge,
    srtp: CallSrtp,
    recording: Option<RecordingTap>,
    events: futures_channel::mpsc::UnboundedSender<MediaEvent>,
    /// The prompt frame time the thread's timer holds for this call.
    pub prompt_armed: Option<Instant>,
    /// Its first token: `slot * SOCKETS`.
    first_token: u64,
    /// Each leg's RTP port.
    ports: [u16; 2],
    /// Its kernel routes, from when the fast path first looks at it.
    kernel: Option<Box<CallRoutes>>,
    _on_shard: OnShard,
}

impl Call {
    /// Takes the call's ports and registers its sockets for reading
    /// (level-triggered) under tokens from `slot * SOCKETS` on.
    pub fn open(opening: Opening, poll: &Epoll, slot: usize) -> io::Result<Call> {
        let Opening {
            id,
            caller,
            callee,
            announced,
            policy,
            events,
            on_shard,
        } = opening;
        let ports = [caller.rtp_addr()?.port(), callee.rtp_addr()?.port()];
        let sockets = CallSockets {
            all: [caller.rtp, callee.rtp, caller.rtcp, callee.rtcp],
            senders: Default::default(),
            guards: [caller.guard, callee.guard],
            announced,
        };
        let first_token = u64::try_from(slot * SOCKETS).map_err(io::Error::other)?;
        for (index, socket) in (0..).zip(&sockets.all) {
            poll.add(
                socket,
                EpollEvent::new(EpollFlags::EPOLLIN, first_token + index),
            )?;
        }
        Ok(Call {
            id,
            sockets,
            bridge: Bridge::new(policy, Instant::now()),
            srtp: CallSrtp::default(),
            recording: None,
            events,
            prompt_armed: None,
            first_token,
            ports,
            kernel: None,
            _on_shard: on_shard,
        })
    }

    /// Whether the kernel forwards either direction now.
    pub fn is_offloaded(&self) -> bool {
        self.kernel.as_ref().is_some_and(|kernel| kernel.any())
    }

    /// Brings the kernel's routes for this call in line with what it needs
    /// now: counts what each forwarded, then installs, replaces or removes
    /// them as the bridge, SRTP and recording allow.
    pub fn sync_fast_path(&mut self, routes: &mut Routes, now: Instant) {
        let Some(clock) = KernelClock::now() else {
            self.withdraw(routes);
            return;
        };
        let wanted = [
            self.wanted(Side::Caller, now),
            self.wanted(Side::Callee, now),
        ];
        let (sockets, ports) = (&self.sockets, &self.ports);
        let kernel = self.kernel.get_or_insert_with(Default::default);
        kernel.sync(
            wanted,
            &mut self.bridge,
            routes,
            clock,
            |side, _, offload| route(sockets, ports, side, offload, clock),
        );
    }

    /// After an RTP packet the thread relayed: a call the kernel forwards
    /// sent one its routes left, so they are brought in line; any other
    /// call is handed to the kernel as soon as a direction allows it (its
    /// first packets latch the legs), not at the next sweep.
    fn after_packet(&mut self, routes: &mut Routes, now: Instant) {
        let untried = |call: &Call, side: Side| {
            let wanted = call.wanted(side, now);
            match &call.kernel {
                Some(kernel) => kernel.untried(side, &wanted),
                None => wanted.is_some(),
            }
        };
        if self.is_offloaded() || untried(self, Side::Caller) || untried(self, Side::Callee) {
            self.sync_fast_path(routes, now);
        }
    }

    /// On the thread's sweep: the routes are brought in line when one is
    /// not what the call wants (a route the kernel refused is tried
    /// again), and what the kernel forwarded is counted only when the
    /// inactivity watch could fire on what the call knows: a fold costs a
    /// system call per direction, and the sweep comes every half second
    /// for every call.
    pub fn sweep_fast_path(&mut self, routes: &mut Routes, now: Instant) {
        let differs = |call: &Call, side: Side| {
            let wanted = call.wanted(side, now);
            match &call.kernel {
                Some(kernel) => kernel.differs(side, &wanted),
                None => wanted.is_some(),
            }
        };
        if differs(self, Side::Caller)
            || differs(self, Side::Callee)
            || (self.is_offloaded() && self.bridge.inactivity_due(now))
        {
            self.sync_fast_path(routes, now);
        }
    }

    /// Counts what the kernel forwarded and removes the call's routes:
    /// before it ends, or when the clock cannot be read.
    pub fn withdraw(&mut self, routes: &mut Routes) {
        if let Some(kernel) = &mut self.kernel {
            kernel.withdraw(&mut self.bridge, routes);
        }
    }

    /// The route `side`'s party's RTP may take now, if any: plain RTP
    /// (no SRTP, no recording), IPv4, and what the bridge allows.
    fn wanted(&self, side: Side, now: Instant) -> Wanted {
        if self.srtp.any() || self.recording.is_some() {
            return None;
        }
        let offload = self.bridge.offload(side, now)?;
        let key = Key {
            party: fast_path::v4(offload.source)?,
            leg_port: self.ports[side.index()],
        };
        Some((key, offload))
    }

    /// Takes the sockets out of the thread's poll before they close.
    pub fn deregister(&self, poll: &Epoll) {
        let senders = self
            .sockets
            .senders
            .iter()
            .filter_map(ConnectedSender::socket);
        for socket in self.sockets.all.iter().chain(senders) {
            let _ = poll.delete(socket);
        }
    }

    /// Both legs' counters so far.
    pub fn stats(&self) -> CallStats {
        CallStats {
            caller: self.bridge.stats(Side::Caller),
            callee: self.bridge.stats(Side::Callee),
        }
    }

    /// When the next prompt frame is due, if one plays.
    pub fn next_prompt_at(&self) -> Option<Instant> {
        self.bridge.next_prompt_at()
    }

    /// Applies an owner's command; a `Close` is handed back for the
    /// thread to end the call and answer.
    pub fn control(&mut self, control: Control) -> Option<oneshot::Sender<CallStats>> {
        match control {
            Control::SetPeer(side, peer) => self.bridge.set_peer(side, peer),
            Control::RestrictSources(side, allowed) => self.bridge.restrict_sources(side, allowed),
            Control::ForwardUntil(at) => self.bridge.forward_until(at),
            Control::Play(side, prompt, mode) => {
                self.bridge.play(side, prompt, mode, Instant::now());
            }
            Control::Watch(timeout) => self.bridge.watch(timeout, Instant::now()),
            Control::Record(tap) => self.recording = Some(tap),
            Control::StopRecording(at) => {
                if let Some(tap) = self.recording.take() {
                    tap.stop(at);
                }
            }
            Control::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Control::Srtp(side, leg) => self.srtp.set(side, *leg),
            Control::Close(reply) => return Some(reply),
        }
        None
    }

    /// Relays one datagram waiting on socket `index` (see [`CallSockets`])
    /// to the other leg, as arrived at `now`; epoll reports the socket
    /// again while more wait. `poll` watches a connected sender made for
    /// the other leg. With the kernel fast path, the call's routes follow
    /// each RTP packet the thread relays ([`Call::after_packet`]).
    pub fn on_readable(
        &mut self,
        index: usize,
        buffer: &mut [u8; DATAGRAM],
        now: Instant,
        poll: &Epoll,
        routes: Option<&mut Routes>,
    ) {
        let socket = match index.checked_sub(SENDERS) {
            None => self.sockets.all.get(index),
            Some(leg) => self
                .sockets
                .senders
                .get(leg)
                .and_then(ConnectedSender::socket),
        };
        let Some(socket) = socket else {
            return;
        };
        // Nothing waiting after all, or an error the socket reports about
        // something it sent (an ICMP unreachable), which reading clears:
        // nothing to relay this turn.
        let Ok((len, source)) = socket.recv_from(buffer) else {
            return;
        };
        let side = if index.is_multiple_of(2) {
            Side::Caller
        } else {
            Side::Callee
        };
        let rtcp = matches!(index, 2 | 3);
        let Some(len) = self.srtp.open(side, buffer, len, rtcp) else {
            self.bridge.on_srtp_refused(side);
            return;
        };
        let arrived = Arrived {
            side,
            source,
            len,
            now,
        };
        if rtcp {
            self.relay_rtcp(arrived, buffer);
        } else {
            self.relay_rtp(arrived, buffer, poll);
            if let Some(routes) = routes {
                self.after_packet(routes, now);
            }
        }
    }

    /// Sends an RTP packet to `side`'s party at `target`: out of the leg's
    /// connected sender when it reaches `target`, else out of its socket.
    fn send_rtp(&self, side: Side, packet: &[u8], target: SocketAddr) {
        // A full socket buffer drops the packet, as the network would.
        let _ = match self.sockets.senders[side.index()].towards(target) {
            Some(connected) => send_connected(connected, packet),
            None => self.sockets.all[side.index()].send_to(packet, target),
        };
    }

    /// Points `side`'s connected sender at `target`, watching the socket
    /// when it is new (the party's datagrams now arrive on it); one that
    /// cannot be watched is given up, so they arrive on the leg's socket.
    fn aim(&mut self, side: Side, target: SocketAddr, poll: &Epoll) {
        let index = side.index();
        let sender = &mut self.sockets.senders[index];
        let Some(made) = sender.aim(&self.sockets.all[index], target) else {
            return;
        };
        let token = self.first_token + (SENDERS + index) as u64;
        if let Err(e) = poll.add(made, EpollEvent::new(EpollFlags::EPOLLIN, token)) {
            tracing::warn!(error = %e, "cannot watch a connected sender; sending unconnected");
            sender.give_up();
        }
    }

    /// An RTP datagram in `buffer[..arrived.len]` (opened already when its
    /// leg is SRTP): judged by the bridge, recorded, and sealed for the
    /// other leg when that one is SRTP.
    fn relay_rtp(&mut self, arrived: Arrived, buffer: &mut [u8], poll: &Epoll) {
        let Arrived {
            side,
            source,
            len,
            now,
        } = arrived;
        let verdict = self.bridge.on_rtp(side, source, &mut buffer[..len], now);
        if let (Some(tap), Some(audio)) = (&self.recording, verdict.audio)
            && let Some(payload) = buffer.get(audio.payload_offset..audio.payload_end)
        {
            let whose = match side {
                Side::Caller => Source::CallerVoice,
                Side::Callee => Source::CalleeVoice,
            };
            tap.frame(whose, now, audio.timestamp, audio.codec, payload);
        }
        if let Some(key) = verdict.key {
            let _ = self.events.unbounded_send(MediaEvent::Key(side, key));
        }
        if let Some(target) = verdict.send_to
            && let Some(len) = self.srtp.seal(side.other(), buffer, len, false)
        {
            self.aim(side.other(), target, poll);
            self.send_rtp(side.other(), &buffer[..len], target);
        }
    }

    /// An RTCP datagram, sealed as [`Call::relay_rtp`] does.
    fn relay_rtcp(&mut self, arrived: Arrived, buffer: &mut [u8]) {
        let side = arrived.side;
        let Some(target) = self.bridge.on_rtcp(side, arrived.source, arrived.now) else {
            return;
        };
        if let Some(len) = self.srtp.seal(side.other(), buffer, arrived.len, true) {
            let rtcp = &self.sockets.all[2 + side.other().index()];
            let _ = rtcp.send_to(&buffer[..len], target);
        }
    }

    /// Sends every prompt frame due by `now` to each party (and to the
    /// recording).
    pub fn play_prompts(&mut self, now: Instant, scratch: &mut PromptScratch) {
        let PromptScratch {
            frame,
            sealed,
            prompt_only,
        } = scratch;
        for side in [Side::Caller, Side::Callee] {
            while let Some((len, target)) = self.bridge.poll_prompt(side, now, frame, prompt_only) {
                sealed[..len].copy_from_slice(&frame[..len]);
                if let Some(len) = self.srtp.seal(side, sealed, len, false) {
                    self.send_rtp(side, &sealed[..len], target);
                }
                if let Some(tap) = &self.recording {
                    record_prompt(tap, side, now, frame, prompt_only);
                }
            }
        }
    }

    /// Tells the owner when a party has been silent for the armed time.
    pub fn check_inactivity(&mut self, now: Instant) {
        if let Some(inactivity) = self.bridge.poll_inactivity(now) {
            let _ = self.events.unbounded_send(MediaEvent::Inactive(inactivity));
        }
    }
}

/// The kernel's route for `side`'s party under `offload`, from the call's
/// sockets; `None` when the other leg's address or interface is not known.
fn route(
    sockets: &CallSockets,
    ports: &[u16; 2],
    side: Side,
    offload: &Offload,
    clock: KernelClock,
) -> Option<Route> {
    let other = side.other().index();
    let to = fast_path::v4(offload.target)?;
    // The address the other leg's packets leave from: where its
    // connected sender's route put it, else the address it is bound to.
    let from_ip = match sockets.senders[other].socket() {
        Some(sender) => *fast_path::v4(sender.local_addr().ok()?)?.ip(),
        None => fast_path::bound_ip(sockets.all[other].local_addr().ok()?)?,
    };
    Some(Route {
        from: std::net::SocketAddrV4::new(from_ip, ports[other]),
        to,
        interface: fast_path::egress(from_ip, *to.ip())?,
        deadline_ns: offload.cut.map(|cut| clock.ns_of(cut)),
        ssrc: offload.ssrc,
        rewrite: offload.rewrite,
        event_type: offload.event_type,
    })
}

/// A datagram that arrived on one of a call's sockets.
#[derive(Debug, Clone, Copy)]
struct Arrived {
    /// The leg whose socket it reached.
    side: Side,
    source: SocketAddr,
    /// Its plain length (SRTP already opened on an SRTP leg).
    len: usize,
    /// When the thread learnt it was waiting.
    now: Instant,
}

/// Hands the recording the prompt frame just sent to `side`: the prompt
/// alone, timed by the frame's RTP timestamp.
fn record_prompt(
    tap: &RecordingTap,
    side: Side,
    now: Instant,
    frame: &[u8; PROMPT_PACKET],
    prompt_only: &[u8; FRAME_SAMPLES],
) {
    let Some(codec) = crate::g711::codec_of(frame[1] & 0x7f) else {
        return;
    };
    let timestamp = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let source = match side {
        Side::Caller => Source::PromptToCaller,
        Side::Callee => Source::PromptToCallee,
    };
    tap.frame(source, now, timestamp, codec, prompt_only);
}
