//! The relay's IO shell: `media.threads` dedicated threads, each running
//! its own single-threaded tokio runtime, one task per call owning that
//! call's four sockets and its [`Bridge`]. A call is placed on the thread
//! with the fewest calls when it opens and stays there: its packets, its
//! prompts and its cap never cross threads, and no lock is shared on the
//! packet path (the per-thread call count is touched at open and close
//! only). The per-packet path is a `recv_from` into a
//! buffer the task owns, the bridge's decision, and a non-blocking
//! `send_to`: no allocation, no lock, no log line. Prompt frames go out on
//! a 20 ms timer that runs only while a prompt plays. The call's owner
//! steers it with messages and hears back DTMF keys and inactivity.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::bridge::{Bridge, Inactivity, Side};
use crate::leg::{LatchPolicy, LegStats, Peer};
use crate::ports::{PairGuard, PortPair, PortPool};
use crate::prompt::{FRAME_SAMPLES, Prompt};
use crate::recording::{RecordingTap, Source};
use crate::stream::{PROMPT_PACKET, PromptMode};

/// The largest datagram relayed; anything longer is truncated by the
/// kernel and then fails the RTP length checks. G.711 at 20 ms is 172.
const DATAGRAM: usize = 2048;

/// How often each call checks for inactivity.
const INACTIVITY_TICK: Duration = Duration::from_millis(500);

/// Why a relay call could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The port range is full.
    #[error(transparent)]
    Exhausted(#[from] crate::ports::Exhausted),
    /// The relay thread is gone.
    #[error("the media relay has stopped")]
    Stopped,
    /// A socket could not be set up.
    #[error("media socket: {0}")]
    Io(#[from] std::io::Error),
}

/// Something the relay noticed on a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEvent {
    /// A party pressed a DTMF key (RFC 4733).
    Key(Side, char),
    /// A party sent no RTP for the armed timeout.
    Inactive(Inactivity),
}

/// Final or running counters of both legs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallStats {
    /// The caller's leg.
    pub caller: LegStats,
    /// The callee's leg.
    pub callee: LegStats,
}

enum Control {
    SetPeer(Side, Peer),
    RestrictSources(Side, Vec<ipnet::IpNet>),
    ForwardUntil(Option<Instant>),
    Play(Side, Arc<Prompt>, PromptMode),
    Watch(Option<Duration>),
    Record(RecordingTap),
    StopRecording(Instant),
    Stats(oneshot::Sender<CallStats>),
    Close(oneshot::Sender<CallStats>),
    Srtp(Side, Box<LegSrtp>),
}

/// SRTP on one leg: what checks and decrypts the party's packets, what
/// encrypts ours to it. A part left `None` stays as it was (a re-INVITE
/// with a new key of the party's replaces only `receive`: our own
/// context must go on, or its keystream would repeat).
pub struct LegSrtp {
    /// The party's key.
    pub receive: Option<crate::srtp::Unprotector>,
    /// Our key.
    pub send: Option<crate::srtp::Protector>,
}

/// The SRTP contexts of a call's two legs, on its relay task.
#[derive(Default)]
struct CallSrtp {
    receive: [Option<Box<crate::srtp::Unprotector>>; 2],
    send: [Option<Box<crate::srtp::Protector>>; 2],
}

impl CallSrtp {
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

/// The media relay: a port pool and the threads that move the packets.
pub struct Relay {
    pool: Arc<PortPool>,
    shards: Vec<Shard>,
    policy: LatchPolicy,
    public_ip: IpAddr,
}

/// One relay thread: its runtime, how many calls it carries, and how to
/// stop it.
struct Shard {
    runtime: tokio::runtime::Handle,
    calls: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Shard {
    fn start(index: usize) -> Result<Shard, RelayError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("tb-media-{index}"))
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Shard {
            runtime: handle,
            calls: Arc::new(AtomicUsize::new(0)),
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// Counts a call on its thread while its task lives.
struct OnShard(Arc<AtomicUsize>);

impl OnShard {
    fn new(calls: &Arc<AtomicUsize>) -> OnShard {
        calls.fetch_add(1, Ordering::Relaxed);
        OnShard(calls.clone())
    }
}

impl Drop for OnShard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("pool", &self.pool)
            .field("public_ip", &self.public_ip)
            .finish()
    }
}

impl Relay {
    /// Starts `threads` relay threads (at least one). `public_ip` is what
    /// our SDP says.
    pub fn start(
        pool: PortPool,
        policy: LatchPolicy,
        public_ip: IpAddr,
        threads: usize,
    ) -> Result<Relay, RelayError> {
        let shards = (0..threads.max(1))
            .map(Shard::start)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Relay {
            pool: Arc::new(pool),
            shards,
            policy,
            public_ip,
        })
    }

    /// How many calls each relay thread carries now.
    pub fn calls_per_thread(&self) -> Vec<usize> {
        self.shards
            .iter()
            .map(|shard| shard.calls.load(Ordering::Relaxed))
            .collect()
    }

    /// RTP/RTCP pairs in use (two per open call).
    pub fn pairs_in_use(&self) -> usize {
        self.pool.in_use()
    }

    /// Pairs the port range holds.
    pub fn capacity(&self) -> u32 {
        self.pool.capacity()
    }

    /// Keeps these RTP ports (and their RTCP ports) from new calls until
    /// `until`: ports of calls a crash left open, whose parties may still
    /// be sending.
    pub fn hold_back(&self, rtp_ports: &[u16], until: Instant) {
        self.pool.hold_back(rtp_ports, until);
    }

    /// Opens a call: two port pairs and the task that relays between them.
    /// The ports return to the pool when the [`CallMedia`] is closed or
    /// dropped.
    pub fn open_call(&self) -> Result<CallMedia, RelayError> {
        let now = Instant::now();
        let caller = self.pool.allocate(now)?;
        let callee = self.pool.allocate(now)?;
        let addresses = [
            SocketAddr::new(self.public_ip, caller.rtp_addr()?.port()),
            SocketAddr::new(self.public_ip, callee.rtp_addr()?.port()),
        ];
        let (control, commands) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let policy = self.policy;
        let announced = Arc::new(AtomicBool::new(false));
        let sockets_announced = announced.clone();
        let (thread, shard) = self
            .shards
            .iter()
            .enumerate()
            .min_by_key(|(_, shard)| shard.calls.load(Ordering::Relaxed))
            .ok_or(RelayError::Stopped)?;
        let on_shard = OnShard::new(&shard.calls);
        let task = shard.runtime.spawn(async move {
            let _on_shard = on_shard;
            match CallSockets::new(caller, callee, sockets_announced) {
                Ok(sockets) => relay_call(sockets, policy, commands, events_tx).await,
                Err(e) => tracing::error!(error = %e, "cannot register media sockets"),
            }
        });
        drop(task);
        Ok(CallMedia {
            control,
            events,
            addresses,
            announced,
            thread,
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for shard in &mut self.shards {
            if let Some(stop) = shard.stop.take() {
                let _ = stop.send(());
            }
        }
        for shard in &mut self.shards {
            if let Some(thread) = shard.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// One call's media, as its owner sees it.
#[derive(Debug)]
pub struct CallMedia {
    control: mpsc::UnboundedSender<Control>,
    events: mpsc::UnboundedReceiver<MediaEvent>,
    addresses: [SocketAddr; 2],
    announced: Arc<AtomicBool>,
    thread: usize,
}

impl CallMedia {
    /// The relay thread (`tb-media-N`) that carries this call, all its
    /// life.
    pub fn thread(&self) -> usize {
        self.thread
    }

    /// Records that our SDP with these ports is going out to a party: from
    /// now on they wait out the quarantine when the call ends. Ports never
    /// announced return to the pool at once.
    pub fn announce(&self) {
        self.announced.store(true, Ordering::Relaxed);
    }

    /// Both legs' RTP ports (caller, callee), stored with the call so a
    /// restart after a crash can keep them from new calls.
    pub fn rtp_ports(&self) -> [u16; 2] {
        [self.addresses[0].port(), self.addresses[1].port()]
    }

    /// The address our SDP gives a party: its leg's RTP port.
    pub fn address(&self, side: Side) -> SocketAddr {
        match side {
            Side::Caller => self.addresses[0],
            Side::Callee => self.addresses[1],
        }
    }

    /// Sets what a party's SDP said (again after a re-INVITE).
    pub fn set_peer(&self, side: Side, peer: Peer) {
        let _ = self.control.send(Control::SetPeer(side, peer));
    }

    /// Admits a party's media only from these networks (a trunk's media
    /// range); none admits any source.
    pub fn restrict_sources(&self, side: Side, allowed: Vec<ipnet::IpNet>) {
        let _ = self.control.send(Control::RestrictSources(side, allowed));
    }

    /// Stops forwarding between the parties at `at` (by the relay's clock,
    /// packet by packet), however late anything else is.
    pub fn forward_until(&self, at: Option<Instant>) {
        let _ = self.control.send(Control::ForwardUntil(at));
    }

    /// Plays a prompt to one party, replacing any prompt playing to it.
    pub fn play(&self, side: Side, prompt: Arc<Prompt>, mode: PromptMode) {
        let _ = self.control.send(Control::Play(side, prompt, mode));
    }

    /// Records both parties (and the prompts each hears) through `tap`
    /// from now on, replacing any recording running.
    pub fn record(&self, tap: RecordingTap) {
        let _ = self.control.send(Control::Record(tap));
    }

    /// Ends the recording at `at` (its file is as long as the talk); the
    /// recording also ends when the call's media closes.
    pub fn stop_recording(&self, at: Instant) {
        let _ = self.control.send(Control::StopRecording(at));
    }

    /// Makes `side` an SRTP leg, or changes its keys (see [`LegSrtp`]).
    pub fn secure(&self, side: Side, leg: LegSrtp) {
        let _ = self.control.send(Control::Srtp(side, Box::new(leg)));
    }

    /// Arms (or with `None` disarms) the inactivity watch.
    pub fn watch(&self, timeout: Option<Duration>) {
        let _ = self.control.send(Control::Watch(timeout));
    }

    /// The counters so far.
    pub async fn stats(&self) -> Option<CallStats> {
        let (reply, answer) = oneshot::channel();
        self.control.send(Control::Stats(reply)).ok()?;
        answer.await.ok()
    }

    /// The next event; `None` once the call's relay task has ended.
    pub async fn next_event(&mut self) -> Option<MediaEvent> {
        self.events.recv().await
    }

    /// Ends the relay task, releases its ports, and returns the final
    /// counters.
    pub async fn close(self) -> Option<CallStats> {
        let (reply, answer) = oneshot::channel();
        self.control.send(Control::Close(reply)).ok()?;
        answer.await.ok()
    }
}

struct CallSockets {
    rtp: [UdpSocket; 2],
    rtcp: [UdpSocket; 2],
    guards: [PairGuard; 2],
    announced: Arc<AtomicBool>,
}

impl CallSockets {
    fn new(
        caller: PortPair,
        callee: PortPair,
        announced: Arc<AtomicBool>,
    ) -> std::io::Result<Self> {
        Ok(CallSockets {
            rtp: [
                UdpSocket::from_std(caller.rtp)?,
                UdpSocket::from_std(callee.rtp)?,
            ],
            rtcp: [
                UdpSocket::from_std(caller.rtcp)?,
                UdpSocket::from_std(callee.rtcp)?,
            ],
            guards: [caller.guard, callee.guard],
            announced,
        })
    }
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

fn stats_of(bridge: &Bridge) -> CallStats {
    CallStats {
        caller: bridge.stats(Side::Caller),
        callee: bridge.stats(Side::Callee),
    }
}

/// Relays one call until its owner closes it or goes away.
async fn relay_call(
    sockets: CallSockets,
    policy: LatchPolicy,
    commands: mpsc::UnboundedReceiver<Control>,
    events: mpsc::UnboundedSender<MediaEvent>,
) {
    let closed = relay_loop(&sockets, policy, commands, events).await;
    // The ports are back in the pool before the owner hears it is closed.
    drop(sockets);
    if let Some((reply, stats)) = closed {
        let _ = reply.send(stats);
    }
}

/// The call's packet loop; returns who asked to close it and the final
/// counters, or `None` when its owner went away.
async fn relay_loop(
    sockets: &CallSockets,
    policy: LatchPolicy,
    mut commands: mpsc::UnboundedReceiver<Control>,
    events: mpsc::UnboundedSender<MediaEvent>,
) -> Option<(oneshot::Sender<CallStats>, CallStats)> {
    let mut bridge = Bridge::new(policy, Instant::now());
    let mut buffers = Box::new([[0u8; DATAGRAM]; 4]);
    let [
        caller_rtp_buf,
        callee_rtp_buf,
        caller_rtcp_buf,
        callee_rtcp_buf,
    ] = &mut *buffers;
    let [caller_rtp, callee_rtp] = &sockets.rtp;
    let [caller_rtcp, callee_rtcp] = &sockets.rtcp;
    let mut frame = [0u8; PROMPT_PACKET];
    let mut sealed_frame = [0u8; PROMPT_PACKET + crate::srtp::MAX_OVERHEAD];
    let mut srtp = CallSrtp::default();
    let mut prompt_only = [0u8; FRAME_SAMPLES];
    let mut recording: Option<RecordingTap> = None;
    let mut tick = tokio::time::interval(INACTIVITY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One timer for prompt frames, moved only when the next frame's time
    // changes: a packet arriving while a prompt plays costs no timer work.
    let prompt_timer = tokio::time::sleep(INACTIVITY_TICK);
    tokio::pin!(prompt_timer);
    let mut prompt_armed: Option<Instant> = None;
    loop {
        let next_prompt = bridge.next_prompt_at();
        if next_prompt != prompt_armed {
            if let Some(at) = next_prompt {
                prompt_timer
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(at));
            }
            prompt_armed = next_prompt;
        }
        tokio::select! {
            command = commands.recv() => match command {
                Some(Control::SetPeer(side, peer)) => bridge.set_peer(side, peer),
                Some(Control::RestrictSources(side, allowed)) => bridge.restrict_sources(side, allowed),
                Some(Control::ForwardUntil(at)) => bridge.forward_until(at),
                Some(Control::Play(side, prompt, mode)) => bridge.play(side, prompt, mode, Instant::now()),
                Some(Control::Watch(timeout)) => bridge.watch(timeout, Instant::now()),
                Some(Control::Record(tap)) => recording = Some(tap),
                Some(Control::StopRecording(at)) => {
                    if let Some(tap) = recording.take() {
                        tap.stop(at);
                    }
                }
                Some(Control::Stats(reply)) => {
                    let _ = reply.send(stats_of(&bridge));
                }
                Some(Control::Close(reply)) => return Some((reply, stats_of(&bridge))),
                Some(Control::Srtp(side, leg)) => srtp.set(side, *leg),
                None => return None,
            },
            received = caller_rtp.recv_from(caller_rtp_buf) => {
                if let Ok((len, source)) = received {
                    let arrived = Arrived { side: Side::Caller, source, len };
                    relay_rtp(&mut bridge, &mut srtp, arrived, caller_rtp_buf, callee_rtp, &events, recording.as_ref());
                }
            }
            received = callee_rtp.recv_from(callee_rtp_buf) => {
                if let Ok((len, source)) = received {
                    let arrived = Arrived { side: Side::Callee, source, len };
                    relay_rtp(&mut bridge, &mut srtp, arrived, callee_rtp_buf, caller_rtp, &events, recording.as_ref());
                }
            }
            received = caller_rtcp.recv_from(caller_rtcp_buf) => {
                if let Ok((len, source)) = received {
                    let arrived = Arrived { side: Side::Caller, source, len };
                    relay_rtcp(&mut bridge, &mut srtp, arrived, caller_rtcp_buf, callee_rtcp);
                }
            }
            received = callee_rtcp.recv_from(callee_rtcp_buf) => {
                if let Ok((len, source)) = received {
                    let arrived = Arrived { side: Side::Callee, source, len };
                    relay_rtcp(&mut bridge, &mut srtp, arrived, callee_rtcp_buf, caller_rtcp);
                }
            }
            () = &mut prompt_timer, if prompt_armed.is_some() => {
                prompt_armed = None;
                let now = Instant::now();
                for (side, socket) in [(Side::Caller, caller_rtp), (Side::Callee, callee_rtp)] {
                    while let Some((len, target)) = bridge.poll_prompt(side, now, &mut frame, &mut prompt_only) {
                        sealed_frame[..len].copy_from_slice(&frame[..len]);
                        if let Some(len) = srtp.seal(side, &mut sealed_frame, len, false) {
                            let _ = socket.try_send_to(&sealed_frame[..len], target);
                        }
                        if let Some(tap) = &recording {
                            record_prompt(tap, side, now, &frame, &prompt_only);
                        }
                    }
                }
            }
            _ = tick.tick() => {
                if let Some(inactivity) = bridge.poll_inactivity(Instant::now()) {
                    let _ = events.send(MediaEvent::Inactive(inactivity));
                }
            }
        }
    }
}

/// A datagram that arrived on one of a call's sockets.
#[derive(Debug, Clone, Copy)]
struct Arrived {
    /// The leg whose socket it reached.
    side: Side,
    source: SocketAddr,
    len: usize,
}

/// An RTP datagram in `buffer[..arrived.len]`: opened when its leg is
/// SRTP (refused ones are counted and go no further), judged by the
/// bridge, recorded, and sealed for the other leg when that one is SRTP.
fn relay_rtp(
    bridge: &mut Bridge,
    srtp: &mut CallSrtp,
    arrived: Arrived,
    buffer: &mut [u8],
    out: &UdpSocket,
    events: &mpsc::UnboundedSender<MediaEvent>,
    recording: Option<&RecordingTap>,
) {
    let Arrived { side, source, len } = arrived;
    let Some(len) = srtp.open(side, buffer, len, false) else {
        bridge.on_srtp_refused(side);
        return;
    };
    let now = Instant::now();
    let verdict = bridge.on_rtp(side, source, &mut buffer[..len], now);
    if let (Some(tap), Some(audio)) = (recording, verdict.audio)
        && let Some(payload) = buffer.get(audio.payload_offset..audio.payload_end)
    {
        let whose = match side {
            Side::Caller => Source::CallerVoice,
            Side::Callee => Source::CalleeVoice,
        };
        tap.frame(whose, now, audio.timestamp, audio.codec, payload);
    }
    if let Some(key) = verdict.key {
        let _ = events.send(MediaEvent::Key(side, key));
    }
    if let Some(target) = verdict.send_to
        && let Some(len) = srtp.seal(side.other(), buffer, len, false)
    {
        // A full socket buffer drops the packet, as the network would.
        let _ = out.try_send_to(&buffer[..len], target);
    }
}

/// An RTCP datagram, opened and sealed as [`relay_rtp`] does.
fn relay_rtcp(
    bridge: &mut Bridge,
    srtp: &mut CallSrtp,
    arrived: Arrived,
    buffer: &mut [u8],
    out: &UdpSocket,
) {
    let Arrived { side, source, len } = arrived;
    let Some(len) = srtp.open(side, buffer, len, true) else {
        bridge.on_srtp_refused(side);
        return;
    };
    let Some(target) = bridge.on_rtcp(side, source, Instant::now()) else {
        return;
    };
    if let Some(len) = srtp.seal(side.other(), buffer, len, true) {
        let _ = out.try_send_to(&buffer[..len], target);
    }
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

#[cfg(test)]
mod tests;
